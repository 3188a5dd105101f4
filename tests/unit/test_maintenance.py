"""Table maintenance policy (what expires, what compacts, when) and compaction on the
embedded SQLite catalog: deletes folded back, offsets carried, conflicts skipped."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.table import FileScanTask, Table
from pyiceberg.typedef import Record

from ingester.batch import Batch, Pending, TableRef
from ingester.branches import publish
from ingester.catalog import open_catalog
from ingester.cli.tables import list_tables
from ingester.commit import SnapshotCommitter
from ingester.events import FileEvent, WriteDisposition
from ingester.iceberg_layer import markers as mk
from ingester.iceberg_layer.ledger import Ledger
from ingester.maintenance.maintainer import TableMaintainer
from ingester.maintenance.planning import MAINTENANCE, MaintenancePolicy, expirable_snapshots, plan_compaction
from ingester.maintenance.schedule import MaintenanceSchedule
from ingester.settings import CatalogSettings
from ingester.sources.base import Position
from ingester.storage import FileReader
from tests.support import write_parquet

T = TableRef("ns", "t")


def policy(**kw: Any) -> MaintenancePolicy:
    return MaintenancePolicy(**{"expire_older_than_s": 0, "retain_last": 1, "target_file_size_bytes": 1000,
                                "min_input_files": 3, **kw})


@pytest.fixture
def committer(tmp_path: Path) -> SnapshotCommitter:
    catalog = open_catalog(CatalogSettings(), tmp_path / "home")
    return SnapshotCommitter(catalog, FileReader([tmp_path.as_uri()]), group="g", ledger=Ledger(catalog))


def commit(c: SnapshotCommitter, folder: Path, ids: range, offset: int, **event: Any) -> Any:
    path = write_parquet(folder, {"id": pa.array(ids, pa.int64()), "v": [f"v{i}" for i in ids]})
    return c.commit(Batch(T, (Pending(FileEvent("t", location=str(path), **event), Position("p", offset)),)))


def merge(c: SnapshotCommitter, folder: Path, ids: list[int], offset: int) -> Any:
    path = write_parquet(folder, {"id": pa.array(ids, pa.int64()), "v": ["new"] * len(ids)})
    ev = FileEvent("t", location=str(path), write_disposition=WriteDisposition.MERGE, primary_key=("id",))
    return c.commit(Batch(T, (Pending(ev, Position("p", offset)),)))


def load(c: SnapshotCommitter) -> Table:
    return c.catalog.load_table(("ns", "t"))


def data_file(path: str, size: int, partition: Record | None = None, content: DataFileContent = DataFileContent.DATA) -> DataFile:
    f = DataFile.from_args(content=content, file_path=path, file_format=FileFormat.PARQUET, partition=partition or Record(),
                           record_count=10, file_size_in_bytes=size)
    f.spec_id = 0
    return f


def offsets(table: Table) -> dict[str, int]:
    return json.loads(table.current_snapshot().summary.additional_properties[mk.OFFSETS_PREFIX + "g"])


# ------------------------------------------------------------------ policy
def test_plan_picks_small_files_per_partition_and_files_with_deletes() -> None:
    small = [data_file(f"a{i}", 100, Record(1)) for i in range(3)]
    too_few = [data_file(f"b{i}", 100, Record(2)) for i in range(2)]
    big = data_file("big", 900, Record(2))  # >= 0.75 x target: not small
    deletes = data_file("d", 50, Record(2), DataFileContent.POSITION_DELETES)
    tasks = [FileScanTask(f) for f in (*small, *too_few)] + [FileScanTask(big, {deletes})]
    plan = plan_compaction(tasks, [deletes], 0, policy())
    assert plan is not None
    assert sorted(f.file_path for f in plan.data_files) == ["a0", "a1", "a2", "b0", "b1", "big"]
    assert [d.file_path for d in plan.delete_files] == ["d"]
    # partition 2 alone: two small files are below min_input_files, no deletes -> nothing to do
    assert plan_compaction([FileScanTask(f) for f in too_few], [], 0, policy()) is None


def test_plan_keeps_a_delete_file_that_also_applies_to_a_file_left_alone() -> None:
    shared = data_file("d", 50, content=DataFileContent.POSITION_DELETES)
    dangling = data_file("gone", 50, content=DataFileContent.POSITION_DELETES)
    other_spec = data_file("old-spec", 10)
    other_spec.spec_id = 7
    tasks = [FileScanTask(data_file("s", 100), {shared}), FileScanTask(other_spec, {shared})]
    plan = plan_compaction(tasks, [shared, dangling], 0, policy())
    assert plan is not None and [f.file_path for f in plan.data_files] == ["s"]
    assert [d.file_path for d in plan.delete_files] == ["gone"]  # applies to no live file


def test_plan_leaves_tables_with_equality_deletes_alone() -> None:
    eq = data_file("eq", 50, content=DataFileContent.EQUALITY_DELETES)
    assert plan_compaction([FileScanTask(data_file(f"s{i}", 10)) for i in range(5)], [eq], 0, policy()) is None


def test_expiry_keeps_retain_last_young_snapshots_refs_and_marker_carriers(committer: SnapshotCommitter, tmp_path: Path) -> None:
    for i in range(6):
        commit(committer, tmp_path / "in", range(i, i + 1), i)
    table = load(committer)
    snaps = table.metadata.snapshots
    now = snaps[-1].timestamp_ms + 1
    assert len(expirable_snapshots(table.metadata, now, policy(retain_last=2), covered=-1)) == 4
    assert expirable_snapshots(table.metadata, now, policy(retain_last=2, expire_older_than_s=3600), covered=-1) == []
    table.manage_snapshots().create_tag(snaps[0].snapshot_id, "keep").commit()
    assert snaps[0].snapshot_id not in expirable_snapshots(table.metadata, now, policy(), covered=-1)
    # a head written by another tool carries no offsets: its marker-carrying parent stays
    table.append(pa.table({"id": pa.array([99], pa.int64()), "v": ["x"]}))
    kept = set(s.snapshot_id for s in table.metadata.snapshots) - set(
        expirable_snapshots(table.metadata, table.metadata.snapshots[-1].timestamp_ms + 1, policy(), covered=-1))
    assert kept == {snaps[0].snapshot_id, snaps[-1].snapshot_id, table.metadata.current_snapshot_id}


def test_expiry_keeps_snapshots_whose_event_ids_the_ledger_lacks_and_caps_the_count(
    committer: SnapshotCommitter, tmp_path: Path
) -> None:
    for i in range(6):
        commit(committer, tmp_path / "in", range(i, i + 1), i, event_id=f"e{i}")
    table = load(committer)
    snaps = table.metadata.snapshots
    now = snaps[-1].timestamp_ms + 1
    young = policy(retain_last=2, expire_older_than_s=3600, max_snapshots=10)
    assert expirable_snapshots(table.metadata, now, young, covered=snaps[-1].sequence_number) == []
    # more snapshots than max_snapshots: young ones go too, down to retain_last
    capped = policy(retain_last=2, expire_older_than_s=3600, max_snapshots=5)
    covered = snaps[-1].sequence_number
    assert expirable_snapshots(table.metadata, now, capped, covered=covered) == [s.snapshot_id for s in snaps[:4]]
    # what the ledger does not cover yet stays, whatever the count
    assert expirable_snapshots(table.metadata, now, capped, covered=snaps[1].sequence_number) == [
        s.snapshot_id for s in snaps[:2]]
    assert expirable_snapshots(table.metadata, now, capped, covered=-1) == []


def test_schedule_is_due_when_a_table_holds_more_than_max_snapshots(committer: SnapshotCommitter, tmp_path: Path) -> None:
    maintainer = TableMaintainer(policy(retain_last=2, max_snapshots=4, min_input_files=100))
    schedule = MaintenanceSchedule(committer.catalog, maintainer, 3600)
    assert not schedule.is_due(T, 4) and schedule.is_due(T, 5)
    for i in range(5):
        commit(committer, tmp_path / "in", range(i, i + 1), i, event_id=f"e{i}")
    assert schedule.run(T).snapshots == 2
    assert not schedule.is_due(T, 4) and schedule.is_due(T, 5)
    committer.ledger.sync = lambda table, own={}: 0  # type: ignore[method-assign]  # the ledger falls behind
    schedule.maintainer = TableMaintainer(schedule.maintainer.policy, ledger=committer.ledger)
    for i in range(5, 8):
        commit(committer, tmp_path / "in", range(i, i + 1), i, event_id=f"e{i}")
    assert schedule.run(T).snapshots == 3  # the newest 2 and the one the ledger lacks
    assert not schedule.is_due(T, 5) and schedule.is_due(T, 6)  # again once a round's worth more came


def test_schedule_is_due_every_interval_and_reports_instead_of_raising(committer: SnapshotCommitter) -> None:
    now = [100.0]
    schedule = MaintenanceSchedule(committer.catalog, TableMaintainer(policy()), 60, clock=lambda: now[0])
    assert not schedule.is_due(T)
    now[0] = 160.0
    assert schedule.is_due(T)
    report = schedule.run(T)  # the table does not exist: reported, never raised
    assert report.error is not None and "NoSuchTable" in report.error
    assert not schedule.is_due(T)
    assert schedule.statistics().failed == 1


# -------------------------------------------------------------- compaction
def test_compaction_folds_position_deletes_back_and_carries_offsets(committer: SnapshotCommitter, tmp_path: Path) -> None:
    for i in range(4):
        commit(committer, tmp_path / "in", range(i * 10, i * 10 + 10), i)
    merge(committer, tmp_path / "in", [1, 2, 15, 100], 4)
    merge(committer, tmp_path / "in", [2, 25], 5)
    table = load(committer)
    assert sum(len(t.delete_files) for t in table.scan().plan_files()) == 4
    report = TableMaintainer(policy(target_file_size_bytes=10_000_000)).maintain(table)
    assert report.compaction is not None and report.skipped == () and report.error is None
    assert report.compaction.delete_files_in == 4 and report.compaction.data_files_out == 1
    table = load(committer)
    tasks = list(table.scan().plan_files())
    assert len(tasks) == 1 and not tasks[0].delete_files
    rows = {r["id"]: r["v"] for r in table.scan().to_arrow().to_pylist()}
    assert len(rows) == 41 and rows[1] == rows[2] == rows[15] == rows[25] == rows[100] == "new" and rows[3] == "v3"
    summary = table.current_snapshot().summary
    assert summary.operation.value == "replace" and summary[MAINTENANCE] == "compact"
    assert summary["total-delete-files"] == "0" and summary["total-position-deletes"] == "0"
    assert offsets(table) == {"p": 5} and list_tables(committer.catalog)[0].rows == 41
    assert len(table.metadata.snapshots) == 1  # retain_last=1, everything older expired
    assert commit(committer, tmp_path / "in", range(7, 8), 3).duplicates == 1  # replay after expiry: nothing added


def test_a_partitioned_table_is_compacted_per_partition(committer: SnapshotCommitter, tmp_path: Path) -> None:
    hints = {"k": {"partition": True, "x-partition-transform": "identity"}}
    for i in range(6):
        path = write_parquet(tmp_path / "in", {"id": pa.array([2 * i, 2 * i + 1], pa.int64()), "k": ["a", "b"]})
        committer.commit(Batch(T, (Pending(FileEvent("t", location=str(path), columns=hints), Position("p", i)),)))
    table = load(committer)
    assert len(list(table.scan().plan_files())) == 12
    report = TableMaintainer(policy(retain_last=10, target_file_size_bytes=1_000_000)).maintain(table)
    assert report.compaction is not None and (report.compaction.data_files_in, report.compaction.data_files_out) == (12, 2)
    table = load(committer)
    by_partition = {t.file.partition[0]: t.file.record_count for t in table.scan().plan_files()}
    assert by_partition == {"a": 6, "b": 6}
    assert sorted(table.scan(row_filter="k == 'b'").to_arrow().column("id").to_pylist()) == list(range(1, 12, 2))


def test_a_concurrent_append_is_kept_and_its_offsets_carried(committer: SnapshotCommitter, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        commit(committer, tmp_path / "in", range(i * 10, i * 10 + 10), i)
    other = SnapshotCommitter(committer.catalog, committer.reader, group="g")
    racing = _race(monkeypatch, lambda: commit(other, tmp_path / "in", range(500, 510), 3))
    report = TableMaintainer(policy(retain_last=10, target_file_size_bytes=1_000_000)).maintain(load(committer))
    assert racing == [True] and report.compaction is not None and report.skipped == ()
    table = load(committer)
    assert table.scan().to_arrow().num_rows == 40 and offsets(table) == {"p": 3}  # retried on the new head
    assert table.current_snapshot().summary[MAINTENANCE] == "compact"


def test_a_concurrent_merge_on_compacted_files_skips_the_round(committer: SnapshotCommitter, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    for i in range(3):
        commit(committer, tmp_path / "in", range(i * 10, i * 10 + 10), i)
    other = SnapshotCommitter(committer.catalog, committer.reader, group="g")
    racing = _race(monkeypatch, lambda: merge(other, tmp_path / "in", [1, 11], 3))
    files_before = set(Path(load(committer).location().removeprefix("file://"), "data").iterdir())
    report = TableMaintainer(policy(retain_last=10, target_file_size_bytes=1_000_000)).maintain(load(committer))
    assert racing == [True] and report.compaction is None and report.skipped == ("compaction (ValidationException)",)
    table = load(committer)
    rows = {r["id"]: r["v"] for r in table.scan().to_arrow().to_pylist()}
    assert len(rows) == 30 and rows[1] == rows[11] == "new"
    left = set(Path(table.location().removeprefix("file://"), "data").iterdir()) - files_before
    assert len(left) == 3  # the merge's data file and two delete files; the compaction's output was removed
    assert "compact" not in {s.summary.get(MAINTENANCE) for s in table.metadata.snapshots}


def _race(monkeypatch: pytest.MonkeyPatch, concurrent: Any) -> list[bool]:
    """Commit ``concurrent`` while the compaction writes (after planning, before its commit)."""
    done: list[bool] = []
    chunks = TableMaintainer._chunks

    def racing(self: TableMaintainer, *args: Any) -> Iterator[pa.Table]:
        if not done:
            concurrent()
            done.append(True)
        yield from chunks(self, *args)

    monkeypatch.setattr(TableMaintainer, "_chunks", racing)
    return done


def test_unpublished_branch_snapshots_are_kept_and_main_is_not_compacted_under_them(
    committer: SnapshotCommitter, tmp_path: Path
) -> None:
    for i in range(3):
        commit(committer, tmp_path / "in", range(i, i + 1), i)
    main = {s.snapshot_id for s in load(committer).metadata.snapshots}
    for i in range(3, 6):
        commit(committer, tmp_path / "in", range(i, i + 1), i, branch="audit")
    table = load(committer)
    on_branch = {s.snapshot_id for s in table.metadata.snapshots} - main
    assert len(on_branch) == 3
    now = table.metadata.snapshots[-1].timestamp_ms + 1
    assert set(expirable_snapshots(table.metadata, now, policy(), covered=10**9)) & on_branch == set()
    assert TableMaintainer(policy(min_input_files=2)).compact(table) is None  # 3 small files on main, but a branch is ahead
    publish(table, "audit")
    assert TableMaintainer(policy(min_input_files=2)).compact(table) is not None
