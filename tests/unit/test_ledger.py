"""The dedupe ledger on the embedded SQLite catalog: what it records, the repair of a lag, the
committer's dedupe once snapshots are expired, its own maintenance; and ``EventIds``."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from pyiceberg.table import Table

from ingester import event_ids
from ingester.batch import Batch, Pending, TableRef
from ingester.catalog import open_catalog
from ingester.cli.tables import list_tables
from ingester.commit import SnapshotCommitter
from ingester.commit.ledger_writes import LedgerLag
from ingester.event_ids import EventIds, as_digests, digest
from ingester.events import FileEvent, WriteDisposition
from ingester.iceberg_layer import ledger as lg
from ingester.iceberg_layer import markers as mk
from ingester.iceberg_layer.ledger import Ledger
from ingester.maintenance.maintainer import TableMaintainer
from ingester.maintenance.planning import MaintenancePolicy
from ingester.settings import CatalogSettings
from ingester.storage import FileReader
from tests.support import write_parquet

T = TableRef("ns", "t")
EXPIRE_ALL = MaintenancePolicy(expire_older_than_s=0, retain_last=1, target_file_size_bytes=1_000_000, min_input_files=100,
                               max_snapshots=2)
"""Keeps one snapshot; compacts nothing."""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def committer(home: Path, tmp_path: Path, lag: LedgerLag = LedgerLag()) -> SnapshotCommitter:
    """A new committer each time, as a new daemon process makes it (with the ledger)."""
    catalog = open_catalog(CatalogSettings(), home)
    return SnapshotCommitter(catalog, FileReader([tmp_path.as_uri()]), ledger=Ledger(catalog), ledger_lag=lag)


def events(tmp_path: Path, first: int, count: int, **kw: Any) -> list[FileEvent]:
    out = []
    for i in range(first, first + count):
        path = write_parquet(tmp_path / "in", {"id": pa.array([i], pa.int64())}, f"f{i}.parquet")
        out.append(FileEvent("t", location=str(path), byte_size=path.stat().st_size, event_id=f"e{i}", load_id="L", **kw))
    return out


def commit(c: SnapshotCommitter, evs: list[FileEvent]) -> Any:
    return c.commit(Batch(T, tuple(Pending(e) for e in evs)))


def ids_of(table: Table) -> list[int]:
    table.refresh()
    return sorted(table.scan().to_arrow().column("id").to_pylist())


def ledger_rows(c: SnapshotCommitter) -> list[dict[str, Any]]:
    table = c.catalog.load_table(("ns", lg.ledger_name("t")))
    return sorted(table.scan().to_arrow().to_pylist(), key=lambda r: (r["sequence_number"], r["kind"], r["event_id"] or ""))


def test_each_commit_records_its_files_and_moves_the_watermark(home: Path, tmp_path: Path) -> None:
    c = committer(home, tmp_path)
    evs = events(tmp_path, 0, 2)
    commit(c, evs)
    table = c.catalog.load_table(("ns", "t"))
    rows = ledger_rows(c)
    assert [(r["kind"], r["event_id"], r["load_id"], r["location"], r["byte_size"]) for r in rows] == [
        ("file", "e0", "L", evs[0].location, evs[0].byte_size), ("file", "e1", "L", evs[1].location, evs[1].byte_size)]
    snap = table.current_snapshot()
    assert snap is not None and {r["snapshot_id"] for r in rows} == {snap.snapshot_id}
    assert {r["table_uuid"] for r in rows} == {str(table.metadata.table_uuid)}
    assert {r["event_digest"] for r in rows} == {digest("e0"), digest("e1")}
    assert c.ledger.covered(table) == snap.sequence_number
    assert [t.name for t in list_tables(c.catalog)] == ["ns.t"]  # the ledger is the ingester's own


def test_a_lagging_ledger_is_repaired_from_the_markers_once(home: Path, tmp_path: Path) -> None:
    c = committer(home, tmp_path)
    commit(c, events(tmp_path, 0, 1))
    lagging = committer(home, tmp_path)
    lagging.ledger.sync = lambda table, own={}: 0  # type: ignore[method-assign]  # a crash right after each commit
    commit(lagging, events(tmp_path, 1, 2))
    commit(lagging, [*events(tmp_path, 3, 1, write_disposition=WriteDisposition.REPLACE)])
    table = c.catalog.load_table(("ns", "t"))
    assert c.ledger.covered(table) == 1
    assert c.ledger.sync(table) == 4  # e1, e2, e3 and the replace load id, from the snapshots' markers
    assert c.ledger.sync(table) == 0
    rows = ledger_rows(c)
    assert [(r["kind"], r["event_id"], r["load_id"]) for r in rows] == [
        ("file", "e0", "L"), ("event", "e1", None), ("event", "e2", None), ("event", "e3", None), ("replace-load", None, "L")]
    history = c.ledger.history(table)
    assert history.event_ids.known(["e0", "e1", "e2", "e3", "e4"]) == {"e0", "e1", "e2", "e3"}
    assert history.replace_load_ids == {"L"} and history.covers == table.current_snapshot().sequence_number  # type: ignore[union-attr]


def test_a_failing_ledger_never_fails_the_commit(home: Path, tmp_path: Path) -> None:
    c = committer(home, tmp_path)

    def broken(table: Table, own: Any = {}) -> int:
        raise OSError("ledger storage down")

    c.ledger.sync = broken  # type: ignore[method-assign]
    result = commit(c, events(tmp_path, 0, 2))
    assert result.rows == 2 and result.snapshot_id is not None and result.snapshots == 1


def test_replays_are_skipped_after_the_snapshots_are_expired(home: Path, tmp_path: Path) -> None:
    c = committer(home, tmp_path)
    for first in range(0, 6, 2):
        commit(c, events(tmp_path, first, 2))
    maintainer = TableMaintainer(EXPIRE_ALL)
    report = maintainer.maintain(c.catalog.load_table(("ns", "t")))
    table = c.catalog.load_table(("ns", "t"))
    assert report.expired == 2 and report.snapshots == len(table.metadata.snapshots) == 1
    summary = table.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
    assert json.loads(summary[mk.EVENT_IDS]) == ["e4", "e5"]  # e0..e3 live only in the ledger now
    fresh = committer(home, tmp_path)  # a new process: its markers come from the one snapshot + the ledger
    replay = fresh.commit(Batch(T, tuple(Pending(e) for e in [*events(tmp_path, 0, 6), *events(tmp_path, 6, 1)])))
    assert (replay.rows, replay.duplicates) == (1, 6)
    assert ids_of(table) == list(range(7))


def test_a_table_dropped_and_made_again_does_not_inherit_its_ledger(home: Path, tmp_path: Path) -> None:
    c = committer(home, tmp_path)
    commit(c, events(tmp_path, 0, 2))
    TableMaintainer(EXPIRE_ALL).maintain(c.catalog.load_table(("ns", "t")))
    c.catalog.drop_table(("ns", "t"))  # the ledger stays, with rows of the old table's uuid
    again = committer(home, tmp_path)
    commit(again, events(tmp_path, 5, 1))
    commit(again, events(tmp_path, 6, 1))
    TableMaintainer(EXPIRE_ALL).maintain(again.catalog.load_table(("ns", "t")))  # history now starts after e5
    replay = commit(committer(home, tmp_path), [*events(tmp_path, 0, 1), *events(tmp_path, 5, 1)])
    assert (replay.rows, replay.duplicates) == (1, 1)  # e0 belonged to the dropped table; e5 is this one's


def test_maintenance_compacts_the_ledger_and_keeps_one_snapshot_of_it(home: Path, tmp_path: Path) -> None:
    c = committer(home, tmp_path)
    for first in range(0, 8, 2):
        commit(c, events(tmp_path, first, 2))
    report = TableMaintainer(dataclasses.replace(EXPIRE_ALL, min_input_files=3)).maintain(c.catalog.load_table(("ns", "t")))
    assert report.ledger is not None and report.ledger.compaction is not None
    assert report.ledger.compaction.data_files_in == 4 and report.ledger.snapshots == 1
    ledger = c.catalog.load_table(("ns", lg.ledger_name("t")))
    assert len(ledger.metadata.snapshots) == 1 and len(list(ledger.scan().plan_files())) == 1
    assert sorted(r["event_id"] for r in ledger_rows(c)) == [f"e{i}" for i in range(8)]
    assert "ledger ns.ingester_ledger__t: expired" in report.describe()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_lagging_ledger_is_written_once_the_lag_is_up_with_every_waiting_file(home: Path, tmp_path: Path) -> None:
    c = committer(home, tmp_path, LedgerLag(max_s=60, max_files=100))
    assert c.ledger_writes is not None
    clock = Clock()
    c.ledger_writes._clock = clock
    first, second, third = events(tmp_path, 0, 2), events(tmp_path, 2, 1), events(tmp_path, 3, 1)
    commit(c, first)
    clock.now += 59
    commit(c, second)
    table = c.catalog.load_table(("ns", "t"))
    assert not c.catalog.table_exists(("ns", lg.ledger_name("t"))) and c.ledger_writes.waiting_files() == 3
    fresh = committer(home, tmp_path)  # meanwhile a new process dedupes by the snapshots' markers
    assert (commit(fresh, [*first, *second]).rows, commit(fresh, [*first, *second]).duplicates) == (0, 3)
    clock.now += 1
    commit(c, third)  # 60 s after the first commit that waited: all three commits are written
    table.refresh()
    rows = ledger_rows(c)
    assert [(r["kind"], r["event_id"], r["location"]) for r in rows] == [("file", e.event_id, e.location) for e in [*first, *second, *third]]
    assert c.ledger.covered(table) == table.current_snapshot().sequence_number  # type: ignore[union-attr]
    assert c.ledger_writes.waiting_files() == 0


def test_a_ledger_is_written_once_as_many_files_as_the_bound_wait_over_all_tables(home: Path, tmp_path: Path) -> None:
    c = committer(home, tmp_path, LedgerLag(max_s=3600, max_files=4))
    commit(c, events(tmp_path, 0, 2))
    other = [dataclasses.replace(e, table="u") for e in events(tmp_path, 10, 1)]
    c.commit(Batch(TableRef("ns", "u"), tuple(Pending(e) for e in other)))
    assert not c.catalog.table_exists(("ns", lg.ledger_name("t"))) and c.ledger_writes is not None
    assert c.ledger_writes.waiting_files() == 3
    commit(c, events(tmp_path, 2, 1))  # 4 files wait: the table committing now writes its ledger
    assert [r["event_id"] for r in ledger_rows(c)] == ["e0", "e1", "e2"]
    assert not c.catalog.table_exists(("ns", lg.ledger_name("u"))) and c.ledger_writes.waiting_files() == 1


def test_maintenance_writes_a_lagging_ledger_before_it_expires(home: Path, tmp_path: Path) -> None:
    c = committer(home, tmp_path, LedgerLag(max_s=3600))
    for first in range(0, 6, 2):
        commit(c, events(tmp_path, first, 2))
    assert not c.catalog.table_exists(("ns", lg.ledger_name("t")))
    report = TableMaintainer(EXPIRE_ALL).maintain(c.catalog.load_table(("ns", "t")))
    assert report.expired == 2
    assert sorted(r["event_id"] for r in ledger_rows(c)) == [f"e{i}" for i in range(6)]  # from the markers
    replay = committer(home, tmp_path).commit(Batch(T, tuple(Pending(e) for e in events(tmp_path, 0, 6))))
    assert (replay.rows, replay.duplicates) == (0, 6)


# ------------------------------------------------------------------ EventIds
def test_event_ids_answer_membership_across_merges(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(event_ids, "MERGE_MIN", 4)
    ids = EventIds([f"a{i}" for i in range(3)])
    for i in range(3, 50):
        ids.add(f"a{i}")
    ids.add("a7")  # again
    assert len(ids._high) > 0 and len(ids._recent) <= 12  # most are in the sorted arrays now
    assert ids.known([f"a{i}" for i in range(60)]) == {f"a{i}" for i in range(50)}
    assert "a49" in ids and "b1" not in ids and 1 not in ids
    ids.add_digests(as_digests(digest("x") + digest("y")))
    assert ids.known(["x", "y", "z"]) == {"x", "y"}
    assert len(EventIds(digests=as_digests(digest("x") * 3))) == 1  # repeats dropped when merged


def test_event_ids_tell_apart_digests_sharing_their_first_half(monkeypatch: pytest.MonkeyPatch) -> None:
    pairs = np.array([[5, 3], [5, 1], [7, 0], [5, 2]], dtype=np.uint64)
    ids = EventIds(digests=pairs)
    assert len(ids) == 4
    names = {"in": pairs[[3]].tobytes(), "out": np.array([[5, 9]], dtype=np.uint64).tobytes()}  # (5, 2) is in, (5, 9) not
    monkeypatch.setattr(event_ids, "digest", names.__getitem__)
    assert ids.known(["in", "out"]) == {"in"}
