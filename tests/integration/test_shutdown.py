"""SIGTERM honoured in every state of ``ingester run``: exit 0 within ``shutdown_timeout_s``,
and nothing admitted is lost (its rows are in Iceberg, or its events are still unacked on the
queue and a daemon started afterwards commits them exactly once).

The states: the catalog unreachable at startup, the broker unreachable (retrying), a backoff
sleep, a group join the broker never answers (a proxy holds JoinGroup, forwards the rest), a
rebalance, a catalog outage with a batch in flight.
"""

from __future__ import annotations

import os
import re
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ingester.testing.localstack import TansuBroker, free_port
from tests.integration.faults import FaultPlan, FaultProxy
from tests.integration.kafka_helpers import Daemon, committed_offsets, events_for, stage_files, wait_all_acked, wait_until
from tests.integration.test_kafka_daemon import Stream

BOUND_S = 10.0
TABLES = ["orders", "users", "items"]
JOIN_GROUP = 11


@dataclass
class _Bootstrap:
    bootstrap_servers: str


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[..., Daemon]]:
    """Starts ``ingester run`` with a shutdown bound of ``BOUND_S``; any left alive is killed."""
    started: list[Daemon] = []

    def start(env: dict[str, str], name: str) -> Daemon:
        started.append(Daemon({"INGESTER_SHUTDOWN_TIMEOUT_S": str(BOUND_S), **env}, tmp_path / f"{name}.log"))
        return started[-1]

    yield start
    for daemon in started:
        if daemon.alive():
            daemon.kill9()


def sigterm(daemon: Daemon) -> tuple[int, float]:
    """SIGTERM; the exit code and the seconds until the process was gone."""
    assert daemon.alive(), daemon.log()
    started = time.monotonic()
    os.killpg(daemon.proc.pid, signal.SIGTERM)
    code = daemon.wait(BOUND_S + 30)
    return code, time.monotonic() - started


def assert_stopped_in_bound(daemon: Daemon, *abandoned: str) -> None:
    code, seconds = sigterm(daemon)
    log = daemon.log()
    print(f"{daemon.log_path.name}: exit {code} {seconds:.1f} s after SIGTERM")
    assert code == 0, log
    assert seconds < BOUND_S, f"took {seconds:.1f} s\n{log}"
    for line in abandoned:
        assert line in log, log


def recover(stream: Stream, daemons: Callable[..., Daemon]) -> None:
    """A daemon that reaches everything commits every event once."""
    after = daemons(stream.env, "recovery")
    wait_all_acked(stream.bootstrap, stream.group, stream.topics)
    assert after.terminate() == 0, after.log()
    stream.check_exactly_once(stream.catalog())


def test_sigterm_while_waiting_for_the_catalog_at_startup(tmp_path: Path, daemons: Any) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    daemon = daemons({"INGESTER_HOME": str(tmp_path / "home"), "INGESTER_CATALOG__TYPE": "rest",
                      "INGESTER_CATALOG__URI": down, "INGESTER_CATALOG__TOKEN": "t"}, "catalog-down")
    wait_until("catalog retries", lambda: "connect to the catalog failed" in daemon.log(), 30)
    assert_stopped_in_bound(daemon, "stop: abandoned waiting for the catalog")


@pytest.mark.parametrize("waits", ["retrying", "backoff-sleep"])
def test_sigterm_with_the_broker_unreachable(
    waits: str, seaweed: Any, tansu: Any, tmp_path: Path, daemons: Any
) -> None:
    stream = Stream(seaweed, tansu, tmp_path / "home", INGESTER_WINDOW__MAX_BATCH_AGE_S="0.5")
    stream.send(events_for(stage_files(seaweed, 12), TABLES))
    nowhere = {"INGESTER_SOURCE__BOOTSTRAP_SERVERS": f"127.0.0.1:{free_port()}"}
    if waits == "backoff-sleep":  # the first backoff is 30-60 s
        nowhere |= {"INGESTER_COMMIT__RETRY_MIN_WAIT_S": "60", "INGESTER_COMMIT__RETRY_MAX_WAIT_S": "60"}
    daemon = daemons({**stream.env, **nowhere}, waits)
    wait_until("poll retries", lambda: daemon.log().count("poll the source failed") >= (1 if waits == "backoff-sleep" else 3), 60)
    assert_stopped_in_bound(daemon, "stop: abandoned waiting to poll the source")
    assert set(committed_offsets(stream.bootstrap, stream.group, stream.topics).values()) == {0}  # all still queued


def test_sigterm_while_the_group_join_is_never_answered(seaweed: Any, tmp_path: Path, daemons: Any) -> None:
    broker_port, proxy_port = free_port(), free_port()
    proxy = FaultProxy(broker_port, FaultPlan(hold_api_keys=frozenset({JOIN_GROUP})), http=False, port=proxy_port).start()
    broker = TansuBroker.start(port=broker_port, advertised_port=proxy_port)  # every connection passes the proxy
    try:
        stream = Stream(seaweed, _Bootstrap(f"127.0.0.1:{proxy_port}"), tmp_path / "home",
                        INGESTER_WINDOW__MAX_BATCH_AGE_S="0.5")
        stream.send(events_for(stage_files(seaweed, 12), TABLES))
        daemon = daemons(stream.env, "join-held")
        wait_until("the JoinGroup to be held", lambda: proxy.counts[f"held_api_{JOIN_GROUP}"] >= 1, 60)
        time.sleep(1.0)
        assert daemon.alive() and "partitions assigned" not in daemon.log()
        assert_stopped_in_bound(daemon, "kafka consumer start abandoned", "stop: abandoned waiting to poll the source")
        assert set(committed_offsets(stream.bootstrap, stream.group, stream.topics).values()) == {0}
        proxy.plan.enabled = False
        recover(stream, daemons)
    finally:
        broker.stop()
        proxy.stop()


def test_sigterm_during_a_rebalance(seaweed: Any, tansu: Any, tmp_path: Path, daemons: Any) -> None:
    stream = Stream(seaweed, tansu, tmp_path / "home", topics=2, INGESTER_WINDOW__MAX_BATCH_FILES="10",
                    INGESTER_WINDOW__MAX_BATCH_AGE_S="1", INGESTER_SOURCE__REVOKE_TIMEOUT_S="4")
    events = events_for(stage_files(seaweed, 240), TABLES)
    stream.send(events[:60])
    first = daemons(stream.env, "first")
    wait_until("a first snapshot", lambda: first.metric("ingester_snapshots_total") >= 1, 60)
    stop_feeding = threading.Event()

    def feed() -> None:  # the stream goes on through the rebalance
        for start in range(60, len(events), 20):
            if stop_feeding.is_set():
                return
            stream.send(events[start:start + 20])
            time.sleep(0.3)

    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        second = daemons(stream.env, "second")
        wait_until("the first daemon's rebalance", lambda: "partitions revoked" in first.log(), 60, every_s=0.05)
        assert_stopped_in_bound(first)
    finally:
        stop_feeding.set()
        feeder.join()
    wait_all_acked(stream.bootstrap, stream.group, stream.topics)
    assert second.terminate() == 0, second.log()
    stream.check_exactly_once(stream.catalog())


def test_sigterm_during_a_catalog_outage_with_a_batch_in_flight(
    seaweed: Any, tansu: Any, tmp_path: Path, daemons: Any
) -> None:
    port = int(seaweed.iceberg_uri.rsplit(":", 1)[1])
    proxy = FaultProxy(port, FaultPlan(faults=("http_503", "drop"), rate=1.0, enabled=False)).start()
    try:
        stream = Stream(seaweed, tansu, tmp_path / "home", INGESTER_WINDOW__MAX_BATCH_AGE_S="0.5",
                        INGESTER_CATALOG__URI=proxy.url, INGESTER_COMMIT__RETRY_MAX_WAIT_S="2")
        events = events_for(stage_files(seaweed, 40), TABLES)
        stream.send(events[:20])
        daemon = daemons(stream.env, "outage")
        wait_all_acked(stream.bootstrap, stream.group, stream.topics, timeout_s=60)
        proxy.plan.enabled = True
        stream.send(events[20:])
        table = rf"{re.escape(stream.ns)}\.\w+"  # batches of several tables commit together: "commit ns.a, ns.b failed"
        failing = re.compile(rf"(read {table}|commit {table}(, {table})*) failed")
        wait_until("a batch in flight, its commit retrying",
                   lambda: daemon.metric("ingester_inflight_bytes") > 0 and bool(failing.search(daemon.log())), 60)
        retries = daemon.metric("ingester_retries_total")
        assert_stopped_in_bound(daemon, "stop: abandoned after the shutdown timeout")
        assert retries > 0
        acked = committed_offsets(stream.bootstrap, stream.group, stream.topics)
        assert sum(acked.values()) == 20  # the first 20 only: the batch in flight was not acked
        proxy.plan.enabled = False
        recover(stream, daemons)
    finally:
        proxy.stop()
