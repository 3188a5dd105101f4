"""The Kafka daemon against the real broker (Tansu), S3 store and REST catalog (SeaweedFS).

Events name parquet files staged in ``s3://warehouse/staging`` and carry no event id, so
replays after a crash are recognised only by the offsets recorded in the snapshot markers.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest

from ingester.commit import CommitResult, LoadedBatch, SnapshotCommitter
from ingester.engine import Engine, EngineStats
from ingester.settings import Settings
from ingester.sources.kafka import KafkaSource
from ingester.window import Batch
from ingester.wiring import build_engine
from tests.integration.kafka_helpers import (
    committed_offsets,
    create_topics,
    daemon_env,
    duplicates_of,
    end_offsets,
    expected_ids,
    last_offsets,
    offset_markers,
    produce_staged,
    stage_files,
    table_ids,
    unique,
)
from tests.support import duckdb_rows, s3_secret, snapshot_count

pytestmark = pytest.mark.integration


class RecordingCommitter:
    """The engine's committer, recording the windows it is handed (and slowing commits)."""

    def __init__(self, inner: SnapshotCommitter, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.windows: dict[str, set[str]] = defaultdict(set)

    def read(self, batch: Batch) -> LoadedBatch:
        return self.inner.read(batch)

    def apply(self, loaded: LoadedBatch) -> CommitResult:
        self.windows[str(loaded.batch.table)].add(loaded.batch.batch_id)
        time.sleep(self.delay_s)
        return self.inner.apply(loaded)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Builds ``Settings()`` from ``INGESTER_*`` variables, as the daemon does."""

    def make(env: dict[str, str]) -> Settings:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return Settings()

    yield make


def run_until_idle(engine: Engine) -> EngineStats:
    async def main() -> EngineStats:
        try:
            with anyio.fail_after(240):
                return await engine.run(exit_when_idle=True)
        finally:
            await engine.source.aclose()

    return anyio.run(main)


def test_three_topics_thousands_of_events_land_exactly_once(seaweed: Any, tansu: Any, tmp_path: Path, settings_env: Any) -> None:
    bootstrap = tansu.bootstrap_servers
    topics, group, ns = [unique("events-") for _ in range(3)], unique("g"), unique("ns")
    create_topics(bootstrap, topics)
    tables = ["orders", "users", "clicks", "carts", "items", "reviews"]
    started = time.monotonic()
    staged = stage_files(seaweed, tables, files_per_table=500)
    by_topic = produce_staged(bootstrap, topics, staged)
    staged_s = time.monotonic() - started
    settings = settings_env(daemon_env(seaweed, tansu, tmp_path / "home", group=group, topics=topics, namespace=ns,
                                       INGESTER_WINDOW__MAX_BATCH_FILES="200", INGESTER_WINDOW__MAX_BATCH_AGE_S="2"))
    engine = build_engine(settings)
    assert isinstance(engine.source, KafkaSource) and engine.source.group == group
    recorder = RecordingCommitter(engine.committer)
    engine.committer = recorder  # type: ignore[assignment]
    started = time.monotonic()
    stats = run_until_idle(engine)
    print(f"staged+produced {len(staged)} events in {staged_s:.1f}s; ingested in {time.monotonic() - started:.1f}s: {stats}")

    assert (stats.events, stats.rows, stats.dead_letters, stats.duplicates) == (3000, 9000, 0, 0)
    expected = expected_ids(staged)
    markers = last_offsets(bootstrap, by_topic)
    catalog = recorder.inner.catalog
    snapshots = engine.metrics.snapshots
    for name in tables:
        table = catalog.load_table((ns, name))
        ids = expected[name]
        assert table_ids(table) == ids
        assert duckdb_rows(table, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM t", s3_secret(seaweed)) == [
            (len(ids), len(ids), ids[0], ids[-1])]
        windows = len(recorder.windows[f"{ns}.{name}"])
        assert snapshot_count(table) == windows == snapshots.labels(f"{ns}.{name}")._value.get()
        assert offset_markers(table, group) == markers[name]
    ends = end_offsets(bootstrap, topics)
    assert sum(ends.values()) == 3000 and len(ends) == 9
    assert committed_offsets(bootstrap, group, topics) == ends
