"""Faults between the daemon and every server, and a chaos run of kill -9 cycles.

Proxies (tests/faults.py) sit in front of the REST catalog, the S3 store and the broker (the
broker advertises the proxy's port, so every Kafka connection passes through it). The OAuth2
token endpoint is reached directly.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
import pytest

from ingester.settings import Settings
from ingester.testing.localstack import TansuBroker, free_port
from ingester.wiring import build_engine
from tests.integration.faults import FaultPlan, FaultProxy
from tests.integration.kafka_helpers import (
    STAGING,
    Daemon,
    Staged,
    create_topics,
    daemon_env,
    duplicates_of,
    events_for,
    expected_ids,
    produce_staged,
    stage_files,
    table_ids,
    unique,
    wait_all_acked,
)
from tests.support import rest_catalog_settings


@dataclass
class Faulty:
    catalog: FaultProxy
    s3: FaultProxy
    broker: FaultProxy
    kafka: TansuBroker

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.broker.port}"

    def proxy(self, server: str) -> FaultProxy:
        return {"catalog": self.catalog, "s3": self.s3, "broker": self.broker}[server]

    def calm(self) -> None:
        for p in (self.catalog, self.s3, self.broker):
            p.plan = FaultPlan(enabled=False)


@pytest.fixture(scope="module")
def faulty(seaweed: Any) -> Iterator[Faulty]:
    ice_port = int(seaweed.iceberg_uri.rsplit(":", 1)[1])
    s3_port = int(seaweed.s3_endpoint.rsplit(":", 1)[1])
    broker_port, proxy_port = free_port(), free_port()
    f = Faulty(
        FaultProxy(ice_port, FaultPlan(enabled=False)).start(),
        FaultProxy(s3_port, FaultPlan(enabled=False)).start(),
        FaultProxy(broker_port, FaultPlan(enabled=False), http=False, port=proxy_port).start(),
        TansuBroker.start(port=broker_port, advertised_port=proxy_port),
    )
    try:
        yield f
    finally:
        f.kafka.stop()
        for p in (f.catalog, f.s3, f.broker):
            p.stop()


def catalog_through(f: Faulty, seaweed: Any) -> dict[str, Any]:
    return rest_catalog_settings(seaweed) | {"uri": f.catalog.url, "s3_endpoint": f.s3.url,
                                             "oauth2_server_uri": seaweed.token_endpoint}


def published(f: Faulty, seaweed: Any, topics: list[str], files: int, tables: list[str]) -> list[Staged]:
    f.calm()
    create_topics(f.bootstrap, topics, 3)
    staged = events_for(stage_files(seaweed, files), tables)
    produce_staged(f.bootstrap, topics, staged)
    return staged


CASES = [("catalog", k) for k in ("http_500", "http_503", "http_429", "timeout", "drop", "slow", "conflict")] + [
    ("s3", k) for k in ("http_500", "http_503", "http_429", "timeout", "drop", "slow")] + [
    ("broker", k) for k in ("drop", "slow")]
RESULTS: list[dict[str, Any]] = []


@pytest.mark.parametrize(("server", "fault"), CASES)
def test_fault_matrix(faulty: Faulty, seaweed: Any, tmp_path: Path, server: str, fault: str) -> None:
    ns, topics, tables = unique("fm"), [unique("fm")], ["a", "b"]
    staged = published(faulty, seaweed, topics, 12, tables)
    settings = Settings(
        home=tmp_path / "home", catalog=catalog_through(faulty, seaweed), routing={"namespace": ns},
        source={"kind": "kafka", "bootstrap_servers": faulty.bootstrap, "topics": topics, "group_id": unique("g"),
                "session_timeout_ms": 6000},
        storage={"staging": STAGING, "allowed_prefixes": [STAGING]},
        window={"max_batch_files": 2, "max_batch_age_s": 0.5},
        commit={"retry_min_wait_s": 0.2, "retry_max_wait_s": 2.0},
    )
    plan = (FaultPlan(conflict_rate=0.5, seed=1) if fault == "conflict" else
            FaultPlan(faults=(fault,), rate=0.12, chunk_rate=0.05, slow_s=0.5, timeout_s=3, seed=5))
    proxy = faulty.proxy(server)
    proxy.counts.clear()
    proxy.plan = plan
    engine = build_engine(settings)

    async def run() -> Any:
        try:
            return await engine.run(exit_when_idle=True)
        finally:
            await engine.source.aclose()

    try:
        stats = anyio.run(run)
    finally:
        faulty.calm()
    injected = proxy.counts["http_409" if fault == "conflict" else fault]
    cat = seaweed.catalog()
    want = expected_ids(staged)
    got = {t: table_ids(cat.load_table((ns, t))) for t in tables}
    RESULTS.append({"server": server, "fault": fault, "injected": injected, "retries": stats.retries,
                    "rows": stats.rows, "ok": got == want})
    print(f"fault matrix: {server:8} {fault:9} injected={injected:3} retries={stats.retries:3} rows={stats.rows} "
          f"recovered={'yes' if got == want else 'NO'}")
    assert injected > 0, f"no {fault} was injected on {server}: {dict(proxy.requests)}"
    assert got == want and stats.dead_letters == 0


CHAOS_CYCLES = 22


def test_chaos_kill_9_cycles_with_faults_exact_ids(faulty: Faulty, seaweed: Any, tmp_path: Path) -> None:
    rng = random.Random(20261125)
    ns, group, topics, tables = unique("chaos"), unique("g"), [unique("chaos")], ["t1", "t2", "t3"]
    faulty.calm()
    create_topics(faulty.bootstrap, topics, 3)
    env = daemon_env(seaweed, _Bootstrap(faulty.bootstrap), tmp_path, group=group, topics=topics, namespace=ns)
    env |= {"INGESTER_CATALOG__URI": faulty.catalog.url, "INGESTER_CATALOG__S3_ENDPOINT": faulty.s3.url,
            "INGESTER_WINDOW__MAX_BATCH_FILES": "5", "INGESTER_WINDOW__MAX_BATCH_AGE_S": "0.5",
            "INGESTER_COMMIT__RETRY_MAX_WAIT_S": "2", "INGESTER_SOURCE__SESSION_TIMEOUT_MS": "6000",
            "INGESTER_SOURCE__REVOKE_TIMEOUT_S": "10"}
    all_staged: list[Staged] = []
    publish_failures: list[str] = []
    stop = threading.Event()

    def producer() -> None:
        """Publishes rounds of 6 files through the faulty broker proxy. A round that fails is
        published again with the same event ids (the file locations), so a partly published
        round still commits once; after ``stop`` the last round is finished with faults off."""
        while not stop.is_set():
            batch = [replace(s, event=replace(s.event, event_id=s.event.location))
                     for s in events_for(stage_files(seaweed, 6), tables)]
            while True:
                try:
                    produce_staged(faulty.bootstrap, topics, batch)
                    break
                except Exception as exc:  # noqa: BLE001 - injected drops and timeouts: publish again
                    publish_failures.append(type(exc).__name__)
                    time.sleep(0.2)
            all_staged.extend(batch)
            time.sleep(0.1)

    faulty.catalog.plan = FaultPlan(faults=("http_503", "http_429", "drop", "slow"), rate=0.03, conflict_rate=0.1,
                                    slow_s=0.5, seed=11)
    faulty.s3.plan = FaultPlan(faults=("http_503", "drop"), rate=0.02, seed=12)
    faulty.broker.plan = FaultPlan(faults=("drop",), rate=0.05, chunk_rate=0.002, seed=13)
    daemons = [Daemon(env, tmp_path / f"d{i}.log") for i in range(2)]
    thread = threading.Thread(target=producer)
    thread.start()
    crashes = 0
    try:
        for _cycle in range(CHAOS_CYCLES):
            time.sleep(rng.uniform(1.0, 4.0))
            victim = rng.randrange(2)
            for i, d in enumerate(daemons):
                if i == victim or not d.alive():
                    crashes += 0 if i == victim else 1
                    if d.alive():
                        d.kill9()
                    daemons[i] = Daemon(env, tmp_path / f"d{i}.log")
        stop.set()
        faulty.calm()
        thread.join()
        wait_all_acked(faulty.bootstrap, group, topics, timeout_s=240)
    finally:
        stop.set()
        faulty.calm()
        thread.join()
        codes = [d.terminate(90) for d in daemons]
    cat = seaweed.catalog()
    want = expected_ids(all_staged)
    events = len(all_staged)
    rows = duplicates = missing = 0
    for t in tables:
        got = table_ids(cat.load_table((ns, t)))
        rows += len(got)
        duplicates += sum(n - 1 for n in duplicates_of(got).values())
        missing += len(set(want[t]) - set(got))
    print(f"chaos: cycles={CHAOS_CYCLES} daemons=2 tables=3 events={events} rows={rows} "
          f"duplicates={duplicates} missing={missing} unexpected_exits={crashes} publish_failures={len(publish_failures)}")
    assert codes == [0, 0]
    assert duplicates == 0 and missing == 0
    assert rows == sum(len(v) for v in want.values()) and events >= 150


@dataclass
class _Bootstrap:
    bootstrap_servers: str
