"""The stop paths without servers: the engine cancels its waits on the source and bounds its
drain; the daemon's ``Shutdown`` splits the bound and ends the process when even that is over;
``KafkaSource`` gives up a consumer that never finishes starting or stopping.

The real daemon under SIGTERM, in each state, runs in tests/integration/test_shutdown.py.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from ingester.cli.daemon import Shutdown
from ingester.commit import LoadedBatch, SnapshotCommitter
from ingester.deadletter import MemoryDeadLetters
from ingester.engine import Engine
from ingester.retry import RetryPolicy
from ingester.routing import Router
from ingester.settings import RoutingSettings, Settings
from ingester.sources.base import Message
from ingester.sources.memory import MemorySource
from ingester.window import BatchLimits
from ingester.wiring import build_committer
from tests.support import event_for, write_parquet
from tests.unit.test_kafka_source import FakeConsumer, make_source


class UnreachableSource(MemorySource):
    """Every poll fails with a connection error (retried until cancelled), or never returns."""

    def __init__(self, hang: bool = False) -> None:
        super().__init__()
        self.hang = hang
        self.polls = 0

    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        self.polls += 1
        if self.hang:
            await anyio.sleep_forever()
        raise ConnectionError("broker unreachable")


class CatalogDown(SnapshotCommitter):
    def apply(self, loaded: LoadedBatch, extra_delete_keys: Any = None) -> Any:
        raise ConnectionError("catalog unreachable")


def make_engine(tmp_path: Path, source: MemorySource, *, min_wait_s: float = 0.01, catalog_down: bool = False,
                max_age_s: float = 0.05) -> Engine:
    committer = build_committer(Settings(home=tmp_path / "home"), source.group)
    if catalog_down:
        committer.__class__ = CatalogDown
    return Engine(
        source, committer, MemoryDeadLetters(), limits=BatchLimits(1000, 10**9, 10**12, max_age_s),
        max_inflight_bytes=10**9, router=Router(RoutingSettings()), workers=1, poll_timeout_s=0.01,
        retry=RetryPolicy(max_retries=None, min_wait_s=min_wait_s, max_wait_s=min_wait_s),
    )


def run_and_stop(engine: Engine, when: Any, timeout_s: float | None = None) -> tuple[Any, float]:
    """Run the engine, ``stop(timeout_s)`` it once ``when()`` holds; the stats and the seconds the stop took."""
    stopped_at: list[float] = []

    async def scenario() -> Any:
        async with anyio.create_task_group() as tg:
            async def stopper() -> None:
                while not when():
                    await anyio.sleep(0.01)
                stopped_at.append(time.monotonic())
                engine.stop(timeout_s)

            tg.start_soon(stopper)
            with anyio.fail_after(30):
                return await engine.run()

    stats = anyio.run(scenario)
    return stats, time.monotonic() - stopped_at[0]


@pytest.mark.parametrize("hang", [False, True], ids=["retrying", "waiting"])
def test_stop_cancels_a_poll_that_retries_or_waits_for_ever(tmp_path: Path, hang: bool) -> None:
    source = UnreachableSource(hang)
    engine = make_engine(tmp_path, source)
    stats, seconds = run_and_stop(engine, lambda: source.polls >= (1 if hang else 3))
    assert seconds < 1 and stats.events == 0 and (hang or stats.retries >= 2)


def test_stop_cuts_a_long_backoff_sleep(tmp_path: Path) -> None:
    source = UnreachableSource()
    engine = make_engine(tmp_path, source, min_wait_s=600)
    stats, seconds = run_and_stop(engine, lambda: engine.statistics().retries >= 1)
    assert seconds < 1 and stats.retries == 1


def test_a_drain_that_cannot_commit_is_abandoned_at_the_timeout_unacked(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    staging = tmp_path / "home" / "staging"
    source = MemorySource()
    source.add([event_for(write_parquet(staging, {"id": [i]}), "t") for i in range(4)])
    engine = make_engine(tmp_path, source, catalog_down=True)
    with caplog.at_level(logging.WARNING, "ingester.engine"):
        stats, seconds = run_and_stop(engine, lambda: engine.statistics().retries >= 2, timeout_s=0.5)
    assert 0.4 < seconds < 2
    assert stats.events == 4 and stats.rows == 0 and source.committed == {}  # nothing acked: delivered again
    assert "abandoned after the shutdown timeout: 4 admitted events" in caplog.text


def test_a_drain_that_commits_in_time_acks(tmp_path: Path) -> None:
    staging = tmp_path / "home" / "staging"
    source = MemorySource()
    source.add([event_for(write_parquet(staging, {"id": [i]}), "t") for i in range(4)])
    engine = make_engine(tmp_path, source, max_age_s=600)  # the window stays open until the stop
    stats, _ = run_and_stop(engine, lambda: engine.statistics().events == 4, timeout_s=20)
    assert stats.rows == 4 and source.committed == {"p0": 4}


def test_stop_from_another_thread_reaches_the_loop(tmp_path: Path) -> None:
    source = UnreachableSource(hang=True)
    engine = make_engine(tmp_path, source)
    threading.Timer(0.3, engine.stop, args=(5.0,)).start()
    started = time.monotonic()
    anyio.run(engine.run)
    assert time.monotonic() - started < 2


class FakeEngine:
    def __init__(self) -> None:
        self.stops: list[float | None] = []

    def stop(self, timeout_s: float | None = None) -> None:
        self.stops.append(timeout_s)


def test_shutdown_before_and_after_the_engine_exists_keeps_a_close_reserve() -> None:
    async def main() -> None:
        shutdown = Shutdown(30.0, exit_process=lambda code: None)
        with shutdown.startup:
            shutdown.request("signal SIGTERM")
            await anyio.sleep(5)  # the catalog wait: cancelled
            raise AssertionError("not cancelled")
        engine = FakeEngine()
        shutdown.attach(engine)  # type: ignore[arg-type]
        [drain] = engine.stops
        assert 19 < drain <= 20 and shutdown.close_reserve_s == 10  # a third, at most 10 s, for ack + close
        shutdown.request("signal SIGINT")  # only logs
        assert len(engine.stops) == 1
        shutdown.disarm()

    anyio.run(main)


def test_the_watchdog_ends_the_process_when_the_bound_is_over_unless_disarmed() -> None:
    exits: list[int] = []

    async def main(disarm: bool) -> None:
        shutdown = Shutdown(0.2, exit_process=exits.append)
        shutdown.request("signal SIGTERM")
        if disarm:
            shutdown.disarm()
        await anyio.sleep(0.5)

    anyio.run(main, True)
    assert exits == []
    anyio.run(main, False)
    assert exits == [0]


class NeverJoins(FakeConsumer):
    """aiokafka's ``start`` waiting for a first assignment that never comes; ``stop`` like it
    waiting for a join the broker never answers, when ``stop_hangs``."""

    stop_hangs = False

    async def start(self) -> None:
        await anyio.sleep_forever()

    async def stop(self) -> None:
        if self.stop_hangs:
            await anyio.sleep_forever()
        self.stopped = True


@pytest.mark.parametrize("stop_hangs", [False, True])
def test_a_cancelled_join_is_given_a_second_to_stop(stop_hangs: bool) -> None:
    async def main() -> None:
        source, made = make_source(session_timeout_ms=6000)
        source._factory = lambda **options: made.append(NeverJoins(**options)) or made[-1]  # type: ignore[assignment, func-returns-value]
        NeverJoins.stop_hangs = stop_hangs
        with anyio.move_on_after(0.2) as poll:
            await source.poll(10, 0.01)
        assert poll.cancelled_caught and not made[0].stopped
        started = time.monotonic()
        await source.aclose()
        assert made[0].stopped is not stop_hangs and time.monotonic() - started < (1.3 if stop_hangs else 0.2)

    anyio.run(main)


class StopHangs(FakeConsumer):
    async def stop(self) -> None:
        await anyio.sleep_forever()


def test_leaving_the_group_is_waited_for_at_most_the_session_timeout() -> None:
    async def main() -> None:
        source, made = make_source(session_timeout_ms=1000)
        source._factory = lambda **options: made.append(StopHangs(**options)) or made[-1]  # type: ignore[assignment, func-returns-value]
        await source.poll(10, 0.001)
        started = time.monotonic()
        await source.aclose()
        assert made[0].started and 0.9 < time.monotonic() - started < 1.5

    anyio.run(main)
