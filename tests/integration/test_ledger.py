"""Dedupe without a horizon, on each catalog: events committed by the daemon, snapshots expired
down to the retention, the same events replayed later by a new daemon: nothing added, every one
counted as a duplicate (from the table's ledger, the snapshots that named them being gone)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from pathlib import Path

import anyio
import pyarrow as pa

from ingester.catalog import open_catalog
from ingester.engine import EngineStats
from ingester.iceberg_layer import markers as mk
from ingester.iceberg_layer.ledger import ledger_name
from ingester.settings import Settings
from ingester.sources.spool import SpoolQueue
from ingester.wiring import build_engine
from tests.support import CatalogUnderTest, duckdb_rows, event_for, write_parquet

EVENTS = 12
ROWS = 20


def run(settings: Settings) -> EngineStats:
    """A daemon's life: built from the settings (a new process), drained, gone."""
    engine = build_engine(settings)
    return anyio.run(lambda: engine.run(exit_when_idle=True))


def test_a_replay_of_events_older_than_every_retained_snapshot_adds_nothing(
    any_catalog: CatalogUnderTest, tmp_path: Path
) -> None:
    ns = f"l{uuid.uuid4().hex[:8]}"
    settings = Settings(
        home=tmp_path / "home", catalog=any_catalog.settings, routing={"namespace": ns},
        window={"max_batch_files": 2, "max_batch_age_s": 60},
        # a table over 3 snapshots is maintained at once and keeps the newest 2; nothing compacts
        maintenance={"retain_last": 2, "max_snapshots": 3, "min_input_files": 1000},
    )
    staging = settings.home_dir / "staging"
    payloads = [
        event_for(write_parquet(staging, {"id": pa.array(range(i * ROWS, (i + 1) * ROWS), pa.int64())}), "events",
                  event_id=f"event-{i}")
        for i in range(EVENTS)
    ]
    SpoolQueue(settings.spool_file).put_many(payloads)
    first = run(settings)
    assert (first.events, first.rows, first.snapshots, first.duplicates) == (EVENTS, EVENTS * ROWS, EVENTS // 2, 0)

    catalog = open_catalog(settings.catalog, settings.home_dir)
    table = catalog.load_table((ns, "events"))
    assert len(table.metadata.snapshots) <= 3  # expired down to the retention as the stream went
    retained = {i for s in table.metadata.snapshots for i in json.loads(s.summary.additional_properties.get(mk.EVENT_IDS, "[]"))}
    assert "event-0" not in retained and len(retained) < EVENTS  # the oldest events are in no snapshot any more
    assert catalog.table_exists((ns, ledger_name("events")))

    SpoolQueue(settings.spool_file).put_many(payloads)  # the same events, again, to a new daemon
    replay = run(settings)
    assert (replay.events, replay.rows, replay.snapshots, replay.duplicates) == (EVENTS, 0, 0, EVENTS)
    table = catalog.load_table((ns, "events"))
    assert duckdb_rows(table, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM t", any_catalog.s3) == [
        (EVENTS * ROWS, EVENTS * ROWS, 0, EVENTS * ROWS - 1)]


def test_the_daemon_writes_ledgers_after_commit_ledger_lag_s_and_maintenance_catches_up(tmp_path: Path) -> None:
    """Embedded catalog: ``commit.ledger_lag_s`` 0 writes each commit's files to the ledger;
    the default (60 s) leaves a short run's commits to the snapshots' markers, and the next
    maintenance round writes them before it expires anything."""
    def settings_for(home: Path, **commit: float) -> Settings:
        return Settings(home=home, routing={"namespace": "ns"}, commit=commit, window={"max_batch_files": 2, "max_batch_age_s": 60})

    def publish(settings: Settings) -> list[str]:
        paths = [write_parquet(settings.home_dir / "staging", {"id": pa.array([i], pa.int64())}) for i in range(4)]
        SpoolQueue(settings.spool_file).put_many([event_for(p, "events", event_id=f"e{i}") for i, p in enumerate(paths)])
        return [str(p) for p in paths]

    eager = settings_for(tmp_path / "eager", ledger_lag_s=0)
    paths = publish(eager)
    assert run(eager).snapshots == 2
    catalog = open_catalog(eager.catalog, eager.home_dir)
    rows = catalog.load_table(("ns", ledger_name("events"))).scan().to_arrow().to_pylist()
    assert sorted((r["kind"], r["event_id"], r["location"]) for r in rows) == [
        ("file", f"e{i}", p) for i, p in enumerate(paths)]

    lagging = settings_for(tmp_path / "lagging")
    publish(lagging)
    assert run(lagging).snapshots == 2
    catalog = open_catalog(lagging.catalog, lagging.home_dir)
    assert not catalog.table_exists(("ns", ledger_name("events")))  # the markers hold the 4 event ids
    done = subprocess.run([str(Path(sys.executable).parent / "ingester"), "maintain"], env={**os.environ, "INGESTER_HOME": str(lagging.home_dir)},
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    rows = catalog.load_table(("ns", ledger_name("events"))).scan().to_arrow().to_pylist()
    assert sorted((r["kind"], r["event_id"]) for r in rows) == [("event", f"e{i}") for i in range(4)]
