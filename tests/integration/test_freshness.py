"""Freshness: every snapshot carries the table's watermark (``ingester.watermark-ms``, the newest
event time its data covers), carried forward and never moved back, and the daemon's metrics say
per table how old the watermark and the last commit are."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pytest
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client import generate_latest

from ingester.events import FileEvent, encode_event
from ingester.iceberg_layer.markers import WATERMARK
from ingester.maintenance.maintainer import TableMaintainer
from ingester.maintenance.planning import MAINTENANCE, MaintenancePolicy
from ingester.metrics import Metrics
from ingester.publish import file_event
from ingester.settings import Settings
from ingester.wiring import build_engine
from tests.integration.kafka_helpers import (
    create_topics,
    daemon_env,
    events_for,
    produce,
    read_topic,
    stage_files,
    unique,
)
from tests.integration.test_engine import Env
from tests.support import CatalogUnderTest


def watermarks(table: Any) -> list[int]:
    """The watermark of each snapshot of ``table``'s main lineage, oldest first."""
    table.refresh()
    chain, snap = [], table.current_snapshot()
    while snap is not None:
        chain.append(int(snap.summary[WATERMARK]))
        snap = table.metadata.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id else None
    return chain[::-1]


def samples(metrics: Metrics, name: str) -> dict[str, float]:
    text = generate_latest(metrics.registry).decode()
    return {s.labels["table"]: s.value for fam in text_string_to_metric_families(text) for s in fam.samples if s.name == name}


def test_published_files_carry_their_mtime_as_the_watermark_through_commits_and_compaction(
    any_catalog: CatalogUnderTest, tmp_path: Path
) -> None:
    env = Env(tmp_path / "home", any_catalog.settings, any_catalog.s3, max_batch_files=2)
    base = 1_760_000_000.0
    times = [base + 10, base + 30, base + 20, base + 5]  # the third and fourth are older than the second
    for i, when in enumerate(times):
        path = env.file({"id": pa.array([i], pa.int64())})
        os.utime(path, (when, when))
        env.queue.put_many([encode_event(file_event(path, "t"))])
    env.run()
    # two windows of two files: the newest mtime of each, never moved back by the older files
    assert watermarks(env.table("t")) == [int((base + 30) * 1000)] * 2

    newer = env.file({"id": pa.array([9], pa.int64())})
    env.publish(newer, "t", event_time=base + 99.5)  # a producer's own event time wins over the mtime
    engine = build_engine(env.settings)
    anyio.run(lambda: engine.run(exit_when_idle=True))
    assert watermarks(env.table("t"))[-1] == int((base + 99.5) * 1000)
    ref = f"{env.ns}.t"
    assert samples(engine.metrics, "ingester_watermark_timestamp_seconds") == {ref: base + 99.5}
    age = samples(engine.metrics, "ingester_watermark_age_seconds")[ref]
    assert time.time() - base - 99.5 - 5 < age <= time.time() - base - 99.5
    assert 0 <= samples(engine.metrics, "ingester_seconds_since_last_commit")[ref] < 60

    policy = MaintenancePolicy(expire_older_than_s=0, retain_last=1, target_file_size_bytes=1 << 20, min_input_files=2)
    TableMaintainer(policy).maintain(env.table("t"))
    table = env.table("t")
    table.refresh()
    assert table.current_snapshot().summary[MAINTENANCE] == "compact"
    assert table.current_snapshot().summary[WATERMARK] == str(int((base + 99.5) * 1000))
    assert sorted(r["id"] for r in env.rows("t")) == [0, 1, 2, 3, 9]


@pytest.mark.timeout(300)
def test_kafka_record_timestamps_are_the_watermark_of_events_without_an_event_time(
    seaweed: Any, tansu: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    topic, ns = unique("fresh-"), unique("ns")
    create_topics(tansu.bootstrap_servers, [topic])
    files = stage_files(seaweed, 12)
    staged = events_for(files, ["a", "b"])
    produce(tansu.bootstrap_servers, topic, [s.payload for s in staged], [s.event.table.encode() for s in staged])
    records = read_topic(tansu.bootstrap_servers, topic, len(staged))
    newest: dict[str, int] = {}
    for r in records:
        table = json.loads(r.value)["table"]
        newest[table] = max(newest.get(table, -1), r.timestamp)
    assert set(newest) == {"a", "b"} and all(ts > 1_700_000_000_000 for ts in newest.values())

    for key, value in daemon_env(seaweed, tansu, tmp_path / "home", group=unique("g"), topics=[topic], namespace=ns).items():
        monkeypatch.setenv(key, value)
    engine = build_engine(Settings())

    async def main() -> None:
        try:
            with anyio.fail_after(240):
                await engine.run(exit_when_idle=True)
        finally:
            await engine.source.aclose()

    anyio.run(main)
    catalog = seaweed.catalog()
    for name, expected in newest.items():
        marks = watermarks(catalog.load_table((ns, name)))
        assert marks[-1] == expected, name
        assert marks == sorted(marks), name
    assert samples(engine.metrics, "ingester_watermark_timestamp_seconds") == {f"{ns}.{n}": ts / 1000 for n, ts in newest.items()}

