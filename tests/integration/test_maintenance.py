"""Table maintenance on the embedded catalog: 1,000 small commits while a reader counts rows,
snapshots expired and files compacted on a schedule, exactly-once replay afterwards; merge
deletes folded back; the engine's schedule and ``ingester maintain``."""

from __future__ import annotations

import dataclasses
import math
import os
import re
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import anyio
import pyarrow as pa
import pyarrow.compute as pc
import pytest

from ingester.batch import Batch, Pending, TableRef
from ingester.catalog import open_catalog
from ingester.commit import SnapshotCommitter
from ingester.errors import is_transient
from ingester.events import FileEvent, WriteDisposition
from ingester.iceberg_layer.ledger import Ledger
from ingester.maintenance.maintainer import MaintenanceReport, TableMaintainer
from ingester.maintenance.planning import MAINTENANCE, SMALL_FILE_RATIO, MaintenancePolicy
from ingester.settings import CatalogSettings, Settings
from ingester.sources.base import Position
from ingester.sources.spool import SpoolQueue, SpoolSource
from ingester.storage import FileReader
from ingester.wiring import build_engine
from tests.support import CatalogUnderTest, duckdb_rows, event_for, write_parquet

INGESTER = str(Path(sys.executable).parent / "ingester")
T = TableRef("ns", "stream")
COMMITS = 1_000
ROWS = 50
EVERY = 50  # commits between maintenance rounds (the engine's interval, in commits)
POLICY = MaintenancePolicy(expire_older_than_s=0, retain_last=10, target_file_size_bytes=48 * 1024, min_input_files=8)


def rows(i: int) -> pa.Table:
    ids = pa.array(range(i * ROWS, (i + 1) * ROWS), pa.int64())
    return pa.table({"id": ids, "name": pc.binary_join_element_wise("name-", pc.cast(ids, pa.string()), ""),
                     "score": pc.multiply(pc.cast(ids, pa.float64()), 0.37)})


def batch(files: list[Path], first: int, ref: TableRef = T) -> Batch:
    return Batch(ref, tuple(Pending(FileEvent(ref.name, location=str(p)), Position("p", first + k)) for k, p in enumerate(files)))


class Reader(threading.Thread):
    """Keeps reading the current snapshot with its own catalog: (snapshot, rows, distinct ids, max id)."""

    def __init__(self, home: Path) -> None:
        super().__init__(daemon=True)
        self.catalog = open_catalog(CatalogSettings(), home)
        self.seen: list[tuple[int, int, int, int]] = []
        self.errors: list[BaseException] = []
        self.transient = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                table = self.catalog.load_table(("ns", "stream"))
                snap = table.current_snapshot()
                ids = table.scan(snapshot_id=snap.snapshot_id, selected_fields=("id",)).to_arrow().column("id")
                self.seen.append((snap.snapshot_id, len(ids), pc.count_distinct(ids).as_py(), pc.max(ids).as_py()))
                self.stop.wait(0.2)  # leave the writer some of the GIL
            except Exception as exc:  # reported by the test; a transient one (SQLite busy) is read again
                if not is_transient(exc):
                    self.errors.append(exc)
                    return
                self.transient += 1


def test_a_thousand_small_commits_are_expired_and_compacted_while_a_reader_counts(tmp_path: Path) -> None:
    home = tmp_path / "home"
    files = [write_parquet(tmp_path / "in", rows(i)) for i in range(COMMITS)]
    catalog = open_catalog(CatalogSettings(), home)
    committer = SnapshotCommitter(catalog, FileReader([tmp_path.as_uri()]), group="g", ledger=Ledger(catalog))
    maintainer = TableMaintainer(POLICY)
    expected: dict[int, int] = {}  # snapshot id -> rows it must show
    reports: list[MaintenanceReport] = []
    committer.commit(batch(files[:1], 0))
    reader = Reader(home)
    reader.start()
    started = time.monotonic()
    for i in range(COMMITS):
        if i:
            result = committer.commit(batch(files[i:i + 1], i))
            assert result.rows == ROWS and result.snapshot_id is not None
        expected[committer.catalog.load_table(("ns", "stream")).current_snapshot().snapshot_id] = (i + 1) * ROWS
        if (i + 1) % EVERY == 0:
            reports.append(maintainer.maintain(committer.catalog.load_table(("ns", "stream"))))
            if reports[-1].compaction is not None:
                expected[reports[-1].compaction.snapshot_id] = (i + 1) * ROWS
    commit_s = time.monotonic() - started
    reader.stop.set()
    reader.join(60)
    table = committer.catalog.load_table(("ns", "stream"))
    total = COMMITS * ROWS

    # maintenance ran every EVERY commits and never skipped or failed
    assert len(reports) == COMMITS // EVERY and all(not r.skipped and r.error is None for r in reports)
    compactions = [r.compaction for r in reports if r.compaction is not None]
    assert len(compactions) == len(reports)
    # snapshots expired to the bound: the newest retain_last, the compaction among them
    assert len(table.metadata.snapshots) == POLICY.retain_last
    assert table.current_snapshot().summary[MAINTENANCE] == "compact"
    # files compacted to the target size: every file but the smallest (the last chunk) is near it
    sizes = sorted(t.file.file_size_in_bytes for t in table.scan().plan_files())
    target = POLICY.target_file_size_bytes
    assert all(SMALL_FILE_RATIO * target <= s <= 1.5 * target for s in sizes[1:]), sizes
    assert len(sizes) <= math.ceil(sum(sizes) / (SMALL_FILE_RATIO * target)) + 1
    # the reader saw exact counts throughout, on every snapshot it read (commits and compactions)
    assert not reader.errors and len(reader.seen) >= 10
    for snap, count, distinct, top in reader.seen:
        assert (count, distinct, top) == (expected[snap], expected[snap], expected[snap] - 1)
    assert {s for s, *_ in reader.seen} & {c.snapshot_id for c in compactions}, "the reader read a compacted snapshot"
    # pyiceberg and DuckDB read the same rows
    assert table.scan().to_arrow().num_rows == total
    assert duckdb_rows(table, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM t") == [(total, total, 0, total - 1)]
    # exactly-once after expiry + compaction: a restarted committer replaying every position adds nothing
    catalog = open_catalog(CatalogSettings(), home)
    restarted = SnapshotCommitter(catalog, FileReader([tmp_path.as_uri()]), group="g", ledger=Ledger(catalog))
    replay = restarted.commit(batch(files, 0))
    assert (replay.snapshot_id, replay.rows, replay.duplicates) == (None, 0, COMMITS)
    assert restarted.catalog.load_table(("ns", "stream")).scan().to_arrow().num_rows == total
    print(f"\n{COMMITS} commits + {len(reports)} maintenance rounds in {commit_s:.1f}s; reader reads: {len(reader.seen)}; "
          f"files now {len(sizes)} ({min(sizes)}..{max(sizes)} bytes, target {target}); compactions: "
          + ", ".join(f"{c.data_files_in}->{c.data_files_out} in {c.seconds:.2f}s" for c in compactions))


@pytest.fixture
def on_catalog(any_catalog: CatalogUnderTest, tmp_path: Path) -> tuple[SnapshotCommitter, TableRef, dict[str, str] | None]:
    """A committer on each catalog, a fresh table name, the S3 secret for DuckDB."""
    cfg = CatalogSettings(**any_catalog.settings)
    catalog = open_catalog(cfg, tmp_path / "home")
    committer = SnapshotCommitter(catalog, FileReader([tmp_path.as_uri()]), group="g", ledger=Ledger(catalog))
    return committer, TableRef(f"m{uuid.uuid4().hex[:8]}", "stream"), any_catalog.s3


def test_compaction_folds_merge_deletes_back_for_pyiceberg_and_duckdb(
    on_catalog: tuple[SnapshotCommitter, TableRef, dict[str, str] | None], tmp_path: Path
) -> None:
    committer, ref, s3 = on_catalog
    for i in range(3):
        committer.commit(batch([write_parquet(tmp_path / "in", rows(i))], i, ref))
    change = write_parquet(tmp_path / "in", {"id": pa.array([3, 77, 149, 999], pa.int64()), "name": ["new"] * 4,
                                             "score": pa.array([0.0] * 4)})
    ev = FileEvent("stream", location=str(change), write_disposition=WriteDisposition.MERGE, primary_key=("id",))
    committer.commit(Batch(ref, (Pending(ev, Position("p", 3)),)))
    table = committer.catalog.load_table((ref.namespace, ref.name))
    query = "SELECT count(*), count(DISTINCT id), count(*) FILTER (name = 'new') FROM t"
    assert duckdb_rows(table, query, s3) == [(151, 151, 4)]
    report = TableMaintainer(dataclasses.replace(POLICY, retain_last=2)).maintain(table)
    assert report.compaction is not None and report.compaction.delete_files_in == 3 and not report.skipped
    assert report.expired == 3
    table = committer.catalog.load_table((ref.namespace, ref.name))
    assert all(not t.delete_files for t in table.scan().plan_files())
    assert table.current_snapshot().summary["total-delete-files"] == "0"
    assert table.current_snapshot().summary[MAINTENANCE] == "compact" and len(table.metadata.snapshots) == 2
    assert duckdb_rows(table, query, s3) == [(151, 151, 4)]
    assert table.scan().to_arrow().num_rows == 151


def test_the_engine_maintains_each_table_between_its_batches_and_the_cli_on_demand(tmp_path: Path) -> None:
    settings = Settings(
        home=tmp_path / "home", routing={"namespace": "ns"}, window={"max_batch_files": 2, "max_batch_age_s": 60},
        maintenance={"interval_s": 0.001, "expire_older_than_s": 0, "retain_last": 2, "min_input_files": 3},
    )
    queue = SpoolQueue(settings.spool_file)
    for i in range(12):
        queue.put_many([event_for(write_parquet(settings.home_dir / "staging", rows(i)), "stream", event_id=f"e{i}")])  # ids: ledger rows
    engine = build_engine(settings, source=SpoolSource(SpoolQueue(settings.spool_file)))
    stats = anyio.run(lambda: engine.run(exit_when_idle=True))
    assert stats.snapshots == 6 and stats.rows == 12 * ROWS
    assert engine.maintenance is not None and engine.maintenance.statistics().compactions >= 1
    table = open_catalog(settings.catalog, settings.home_dir).load_table(("ns", "stream"))
    assert len(table.metadata.snapshots) <= 3 and table.scan().to_arrow().num_rows == 12 * ROWS
    env = {**os.environ, "INGESTER_HOME": str(settings.home), "INGESTER_ROUTING__NAMESPACE": "ns",
           "INGESTER_MAINTENANCE__RETAIN_LAST": "1", "INGESTER_MAINTENANCE__EXPIRE_OLDER_THAN_S": "0"}
    done = subprocess.run([INGESTER, "maintain", "--table", "stream"], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(rf"ns\.stream: expired {len(table.metadata.snapshots) - 1} snapshots, 1 left; "
                        r"ledger ns\.ingester_ledger__stream: expired \d+ snapshots, 1 left", done.stdout.strip()), done.stdout
    assert len(open_catalog(settings.catalog, settings.home_dir).load_table(("ns", "stream")).metadata.snapshots) == 1
    missing = subprocess.run([INGESTER, "maintain", "--table", "ns.nope"], env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 1 and "failed: NoSuchTableError" in missing.stdout
