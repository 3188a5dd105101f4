"""Engine with the memory source and the embedded SQLite catalog (no servers)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import anyio
import pytest

from ingester.commit import SnapshotCommitter
from ingester.deadletter import MemoryDeadLetters
from ingester.engine import Engine
from ingester.retry import RetryPolicy
from ingester.routing import Router
from ingester.settings import RoutingSettings, Settings
from ingester.sources.memory import MemorySource
from ingester.window import BatchLimits
from ingester.wiring import build_committer
from tests.support import event_for, write_parquet


class SlowCommitter(SnapshotCommitter):
    """Commits take ``delay_s``: the engine must pause the source instead of buffering."""

    delay_s = 0.05

    def apply_many(self, items: Any) -> Any:  # ``apply`` too: it is ``apply_many`` of one batch
        time.sleep(self.delay_s)
        return super().apply_many(items)


def make_engine(tmp_path: Path, source: MemorySource, max_inflight: int, slow: bool = False, **limits: Any) -> Engine:
    settings = Settings(home=tmp_path / "home")
    committer = build_committer(settings, source.group)
    if slow:
        committer.__class__ = SlowCommitter
    lim = {"max_files": 1000, "max_rows": 10**9, "max_bytes": 10**12, "max_age_s": 60.0, **limits}
    return Engine(
        source, committer, MemoryDeadLetters(), limits=BatchLimits(**lim), max_inflight_bytes=max_inflight,
        router=Router(RoutingSettings()), workers=2, retry=RetryPolicy(max_retries=2), poll_max_records=7,
        poll_timeout_s=0.01,
    )


def test_slow_commits_pause_the_source_and_bound_inflight_bytes(tmp_path: Path) -> None:
    staging = tmp_path / "home" / "staging"
    payloads = [event_for(write_parquet(staging, {"id": [i], "pad": ["x" * 100]}), f"t{i % 3}") for i in range(60)]
    file_size = max(f.stat().st_size for f in staging.iterdir())
    source = MemorySource()
    source.add(payloads[:30], "p0")
    source.add(payloads[30:], "p1")
    limit = 4 * file_size
    engine = make_engine(tmp_path, source, max_inflight=limit, slow=True)
    stats = anyio.run(lambda: engine.run(exit_when_idle=True))
    assert stats.rows == 60 and stats.events == 60
    assert source.pause_count >= 1 and stats.pauses >= 1
    assert 0 < stats.peak_inflight_bytes <= limit
    assert source.committed == {"p0": 30, "p1": 30}
    catalog = engine.committer.catalog
    assert sum(catalog.load_table(("default", f"t{i}")).scan().to_arrow().num_rows for i in range(3)) == 60


def test_undecodable_events_go_to_dead_letters_and_are_acked(tmp_path: Path) -> None:
    staging = tmp_path / "home" / "staging"
    source = MemorySource()
    good = [event_for(write_parquet(staging, {"id": [i]}), "t") for i in range(9)]
    source.add(good[:4] + [b"garbage"] + good[4:] + [b'{"table": "t"}'])
    engine = make_engine(tmp_path, source, max_inflight=10**9)
    stats = anyio.run(lambda: engine.run(exit_when_idle=True))
    letters = engine.deadletters.letters  # type: ignore[attr-defined]
    assert stats.rows == 9 and len(letters) == 2
    assert letters[0].payload == b"garbage" and letters[0].position.offset == 4 and "not JSON" in letters[0].reason
    assert "exactly one of fields 'location' and 'data'" in letters[1].reason
    assert source.committed == {"p0": 11}


def test_stop_drains_open_windows(tmp_path: Path) -> None:
    staging = tmp_path / "home" / "staging"
    source = MemorySource()
    source.add([event_for(write_parquet(staging, {"id": [i]}), "t") for i in range(5)])
    engine = make_engine(tmp_path, source, max_inflight=10**9)

    async def scenario() -> Any:
        async with anyio.create_task_group() as tg:
            async def stopper() -> None:
                while engine.statistics().events < 5:
                    await anyio.sleep(0.01)
                assert engine.statistics().snapshots == 0  # still in the open window (age 60 s)
                engine.stop()
            tg.start_soon(stopper)
            return await engine.run()

    stats = anyio.run(scenario)
    assert stats.snapshots == 1 and stats.rows == 5 and source.committed == {"p0": 5}


@pytest.mark.parametrize("max_files", [1, 2])
def test_rows_and_acks_are_exact_for_each_window_size(tmp_path: Path, max_files: int) -> None:
    staging = tmp_path / "home" / "staging"
    source = MemorySource()
    source.add([event_for(write_parquet(staging, {"id": [i, i]}), "t") for i in range(6)])
    engine = make_engine(tmp_path, source, max_inflight=10**9, max_files=max_files)
    stats = anyio.run(lambda: engine.run(exit_when_idle=True))
    assert stats.rows == 12 and stats.snapshots == 6 // max_files and source.committed == {"p0": 6}


class CountingSource(MemorySource):
    """Counts polls and acks; an empty poll waits 0.2 s, as a Kafka fetch does."""

    def __init__(self) -> None:
        super().__init__()
        self.polls = self.acks = 0

    async def poll(self, max_records: int, timeout_s: float) -> Any:
        self.polls += 1
        got = await super().poll(max_records, timeout_s)
        if not got:
            await anyio.sleep(0.2)
        return got

    async def commit(self, offsets: Any) -> None:
        self.acks += 1
        await super().commit(offsets)


def test_acks_are_one_per_poll_for_all_the_batches_committed_meanwhile(tmp_path: Path) -> None:
    staging = tmp_path / "home" / "staging"
    source = CountingSource()
    source.add([event_for(write_parquet(staging, {"id": [i]}), f"t{i % 4}") for i in range(40)])
    engine = make_engine(tmp_path, source, max_inflight=10**9, max_files=1)
    engine._workers = 4
    stats = anyio.run(lambda: engine.run(exit_when_idle=True))
    assert stats.snapshots == 40 and source.committed == {"p0": 40}
    # the loop acks after its poll (run() once more at the end): commits finishing during a poll share one ack
    assert source.acks <= source.polls + 1 < 40
    counted = engine.metrics.registry.get_sample_value
    assert sum(counted("ingester_events_total", {"table": f"default.t{i}"}) or 0 for i in range(4)) == 40
