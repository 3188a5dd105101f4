"""SnapshotCommitter on the embedded SQLite catalog: zero-copy vs rewrite, bounded chunks."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.exceptions import NoSuchTableError

from ingester.batch import Batch, Pending, TableRef
from ingester.catalog import open_catalog
from ingester.commit import SnapshotCommitter, WriteOptions
from ingester.events import FileEvent, WriteDisposition
from ingester.settings import CatalogSettings
from ingester.sources.base import Position
from ingester.storage import FileReader
from tests.support import duckdb_rows, write_parquet


@pytest.fixture
def committer(tmp_path: Path) -> SnapshotCommitter:
    return SnapshotCommitter(open_catalog(CatalogSettings(), tmp_path / "home"), FileReader([tmp_path.as_uri()]),
                             group="g", options=WriteOptions(write_chunk_bytes=1024))


def batch(paths: list[Path], table: str = "t") -> Batch:
    return Batch(TableRef("ns", table), tuple(
        Pending(FileEvent(table, location=str(p), byte_size=p.stat().st_size), Position("p", i)) for i, p in enumerate(paths)
    ))


def test_files_that_fit_are_registered_without_rewrite(committer: SnapshotCommitter, tmp_path: Path) -> None:
    files = [write_parquet(tmp_path / "in", {"id": pa.array([i, i + 100], pa.int64()), "s": ["a", "b"]}) for i in range(3)]
    first = committer.commit(batch(files))
    assert first.zero_copy and first.rows == 6
    table = committer.catalog.load_table(("ns", "t"))
    tasks = list(table.scan().plan_files())
    data_files = [t.file.file_path for t in tasks]
    # three small files of one layout: one table file of three row groups (ingester.commit.joining)
    assert len(data_files) == 1 and all("/data/ingester-" in p and str(tmp_path / "in") not in p for p in data_files)
    assert tasks[0].file.record_count == 6 and len(tasks[0].file.split_offsets) == 3
    for f in files:
        f.unlink()  # the table owns its copies
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == [0, 1, 2, 100, 101, 102]


def test_the_table_copy_of_an_old_file_looks_new_to_orphan_cleanup(committer: SnapshotCommitter, tmp_path: Path) -> None:
    produced = write_parquet(tmp_path / "in", {"id": pa.array([1, 2], pa.int64())})
    four_days_ago = time.time() - 4 * 86400
    os.utime(produced, (four_days_ago, four_days_ago))
    assert committer.commit(batch([produced], "h")).zero_copy
    (task,) = committer.catalog.load_table(("ns", "h")).scan().plan_files()
    copied = Path(unquote(urlparse(task.file.file_path).path))
    assert copied.stat().st_ino != produced.stat().st_ino  # the table's own copy (with field ids)
    assert copied.stat().st_mtime > time.time() - 60


def test_files_that_do_not_fit_are_rewritten_in_bounded_chunks(committer: SnapshotCommitter, tmp_path: Path) -> None:
    committer.commit(batch([write_parquet(tmp_path / "in", {"id": pa.array([0], pa.int64())})]))
    narrow = [write_parquet(tmp_path / "in", {"id": pa.array(range(i * 1000, i * 1000 + 1000), pa.int32())}) for i in range(1, 4)]
    second = committer.commit(Batch(TableRef("ns", "t"), tuple(
        Pending(FileEvent("t", location=str(p), byte_size=1), Position("p", 10 + i)) for i, p in enumerate(narrow)
    )))
    assert not second.zero_copy and second.rows == 3000
    table = committer.catalog.load_table(("ns", "t"))
    assert table.scan().to_arrow().num_rows == 3001
    assert len(table.metadata.snapshots) == 2
    added = table.current_snapshot().summary.additional_properties["added-data-files"]
    assert int(added) >= 3  # 1 KiB chunks: several data files, never the whole batch at once


def test_a_file_that_fails_mid_stream_is_rejected_and_the_rest_commits(committer: SnapshotCommitter, tmp_path: Path) -> None:
    committer.commit(batch([write_parquet(tmp_path / "in", {"id": pa.array([0], pa.int64())})], "c"))
    good = write_parquet(tmp_path / "in", {"id": pa.array([1], pa.int64())})
    bad = write_parquet(tmp_path / "in", {"id": ["7", "x"]})
    result = committer.commit(Batch(TableRef("ns", "c"), (
        Pending(FileEvent("c", location=str(good)), Position("p", 5)),
        Pending(FileEvent("c", location=str(bad)), Position("p", 6)),
    )))
    assert result.rows == 1 and len(result.rejected) == 1 and "column 'id'" in result.rejected[0].reason
    assert sorted(committer.catalog.load_table(("ns", "c")).scan().to_arrow().column("id").to_pylist()) == [0, 1]


def test_merge_is_merge_on_read_with_position_deletes(committer: SnapshotCommitter, tmp_path: Path) -> None:
    from ingester.cli.tables import list_tables
    from ingester.events import WriteDisposition

    base = write_parquet(tmp_path / "in", {"id": pa.array(range(100), pa.int64()), "v": ["old"] * 100})
    committer.commit(batch([base], "m"))
    change = write_parquet(tmp_path / "in", {"id": pa.array([5, 6, 200], pa.int64()), "v": ["new"] * 3})
    ev = FileEvent("m", location=str(change), write_disposition=WriteDisposition.MERGE, primary_key=("id",))
    result = committer.commit(Batch(TableRef("ns", "m"), (Pending(ev, Position("p", 9)),)))
    assert result.rows == 3
    table = committer.catalog.load_table(("ns", "m"))
    tasks = list(table.scan().plan_files())
    assert sum(len(t.delete_files) for t in tasks) == 1  # one small delete file, the data file untouched
    rows = {r["id"]: r["v"] for r in table.scan().to_arrow().to_pylist()}
    assert len(rows) == 101 and rows[5] == rows[6] == rows[200] == "new" and rows[7] == "old"
    (info,) = list_tables(committer.catalog)
    assert info.rows == 101
    # merging the same keys again deletes only the current versions
    again = write_parquet(tmp_path / "in", {"id": pa.array([5], pa.int64()), "v": ["newer"]})
    ev2 = FileEvent("m", location=str(again), write_disposition=WriteDisposition.MERGE, primary_key=("id",))
    committer.commit(Batch(TableRef("ns", "m"), (Pending(ev2, Position("p", 10)),)))
    rows = committer.catalog.load_table(("ns", "m")).scan().to_arrow().to_pylist()
    assert len(rows) == 101 and [r["v"] for r in rows if r["id"] == 5] == ["newer"]
    assert list_tables(committer.catalog)[0].rows == 101


def test_a_merge_whose_rows_all_survive_registers_its_files_as_is(committer: SnapshotCommitter, tmp_path: Path) -> None:
    from ingester.events import WriteDisposition

    base = write_parquet(tmp_path / "in", {"id": pa.array(range(10), pa.int64()), "v": ["old"] * 10})
    committer.commit(batch([base], "z"))
    change = write_parquet(tmp_path / "in", {"id": pa.array([3, 4, 50], pa.int64()), "v": ["new"] * 3})
    ev = FileEvent("z", location=str(change), write_disposition=WriteDisposition.MERGE, primary_key=("id",))
    result = committer.commit(Batch(TableRef("ns", "z"), (Pending(ev, Position("p", 9)),)))
    assert result.zero_copy and result.rows == 3
    change.unlink()  # the table owns its copy
    table = committer.catalog.load_table(("ns", "z"))
    assert any("/data/ingester-" in t.file.file_path for t in table.scan().plan_files())
    rows = {r["id"]: r["v"] for r in table.scan().to_arrow().to_pylist()}
    assert len(rows) == 11 and rows[3] == rows[4] == rows[50] == "new" and rows[5] == "old"
    # a batch with a key twice keeps only its last row: rewritten, not registered as-is
    twice = write_parquet(tmp_path / "in", {"id": pa.array([3, 3], pa.int64()), "v": ["a", "b"]})
    ev2 = FileEvent("z", location=str(twice), write_disposition=WriteDisposition.MERGE, primary_key=("id",))
    second = committer.commit(Batch(TableRef("ns", "z"), (Pending(ev2, Position("p", 10)),)))
    assert not second.zero_copy and second.rows == 1
    rows = {r["id"]: r["v"] for r in committer.catalog.load_table(("ns", "z")).scan().to_arrow().to_pylist()}
    assert len(rows) == 11 and rows[3] == "b"


def test_a_replace_that_fits_registers_its_files_as_is(committer: SnapshotCommitter, tmp_path: Path) -> None:
    from ingester.events import WriteDisposition

    committer.commit(batch([write_parquet(tmp_path / "in", {"id": pa.array(range(5), pa.int64())})], "r"))
    fresh = write_parquet(tmp_path / "in", {"id": pa.array([100, 101], pa.int64())})
    ev = FileEvent("r", location=str(fresh), write_disposition=WriteDisposition.REPLACE)
    result = committer.commit(Batch(TableRef("ns", "r"), (Pending(ev, Position("p", 9)),)))
    assert result.zero_copy and result.rows == 2
    table = committer.catalog.load_table(("ns", "r"))
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == [100, 101]
    assert len(table.metadata.snapshots) == 2


def one(path: Path, table: str, offset: int, **kw: Any) -> Batch:
    return Batch(TableRef("ns", table), (Pending(FileEvent(table, location=str(path), **kw), Position("p", offset)),))


def test_files_without_rows_add_no_data_file_and_alone_commit_nothing(committer: SnapshotCommitter, tmp_path: Path) -> None:
    empty = write_parquet(tmp_path / "in", {"id": pa.array([], pa.int64())})
    assert committer.commit(batch([empty], "e")).snapshot_id is None
    with pytest.raises(NoSuchTableError):
        committer.catalog.load_table(("ns", "e"))  # nothing made the table
    full = write_parquet(tmp_path / "in", {"id": pa.array([1, 2], pa.int64())})
    for zero_copy in (True, False):
        committer.options = WriteOptions(zero_copy=zero_copy)
        name = f"e{int(zero_copy)}"
        result = committer.commit(batch([empty, full, empty], name))
        table = committer.catalog.load_table(("ns", name))
        assert (result.rows, result.zero_copy) == (2, zero_copy)
        assert [t.file.record_count for t in table.scan().plan_files()] == [2]  # no 0-row data file
        assert committer.commit(one(empty, name, 5)).snapshot_id is None
        assert len(table.refresh().metadata.snapshots) == 1


def test_a_replace_load_without_rows_still_empties_the_table_once(committer: SnapshotCommitter, tmp_path: Path) -> None:
    committer.commit(batch([write_parquet(tmp_path / "in", {"id": pa.array(range(5), pa.int64())})], "r"))
    empty = write_parquet(tmp_path / "in", {"id": pa.array([], pa.int64())})
    replace = one(empty, "r", 7, write_disposition=WriteDisposition.REPLACE, load_id="L1")
    assert committer.commit(replace).snapshot_id is not None
    table = committer.catalog.load_table(("ns", "r"))
    assert table.scan().to_arrow().num_rows == 0 and not list(table.scan().plan_files())
    committer.commit(one(write_parquet(tmp_path / "in", {"id": pa.array([9], pa.int64())}), "r", 8))
    again = committer.commit(replace)  # replayed (the ack was lost): not a second replace
    assert again.snapshot_id is None and again.duplicates == 1
    assert committer.catalog.load_table(("ns", "r")).scan().to_arrow().column("id").to_pylist() == [9]


def test_keys_only_files_delete_their_keys_and_insert_nothing(committer: SnapshotCommitter, tmp_path: Path) -> None:
    merge = {"write_disposition": WriteDisposition.MERGE, "merge_key": ("root",), "keys_only": True}
    bare_keys = write_parquet(tmp_path / "in", {"root": ["r1"]})
    assert committer.commit(one(bare_keys, "k", 1, **merge)).snapshot_id is None  # no table, nothing to delete
    with pytest.raises(NoSuchTableError):
        committer.catalog.load_table(("ns", "k"))
    # keys written with the table's schema make the table (and record the event) even with nothing to delete
    keys = write_parquet(tmp_path / "in", {"root": ["r1", "r3"], "v": pa.nulls(2, pa.string())})
    first = committer.commit(one(keys, "k", 2, **merge))
    table = committer.catalog.load_table(("ns", "k"))
    assert first.snapshot_id is not None and first.rows == 0 and table.scan().to_arrow().num_rows == 0
    rows = write_parquet(tmp_path / "in", {"root": ["r1", "r1", "r2"], "v": ["a", "b", "c"]})
    committer.commit(one(rows, "k", 3))
    assert committer.commit(one(keys, "k", 2, **merge)).duplicates == 1  # replayed: deletes nothing
    assert table.refresh().scan().to_arrow().num_rows == 3
    assert committer.commit(one(bare_keys, "k", 4, **merge)).rows == 0
    assert table.refresh().scan().to_arrow().to_pylist() == [{"root": "r2", "v": "c"}]


def test_lists_not_named_element_read_back_in_both_readers(committer: SnapshotCommitter, tmp_path: Path) -> None:
    data = pa.table({"id": [1], "l": pa.array([[1, 2]]), "items": pa.array([[{"q": [3]}]])})
    path = tmp_path / "in" / "legacy.parquet"
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(data, path, use_compliant_nested_type=False)  # "l.list.item", as older writers name it
    assert committer.commit(batch([path], "legacy")).rows == 1
    compliant = write_parquet(tmp_path / "in", {"id": [2], "l": [[4]], "items": pa.array([[{"q": [5]}]])})
    assert committer.commit(one(compliant, "legacy", 1)).rows == 1
    table = committer.catalog.load_table(("ns", "legacy"))
    assert table.scan().to_arrow().sort_by("id").to_pylist() == [
        {"id": 1, "l": [1, 2], "items": [{"q": [3]}]}, {"id": 2, "l": [4], "items": [{"q": [5]}]}]
    assert duckdb_rows(table, "SELECT * FROM t ORDER BY id") == [(1, [1, 2], [{"q": [3]}]), (2, [4], [{"q": [5]}])]


def test_files_of_one_batch_evolve_in_turn_and_a_later_one_that_disagrees_is_rejected(
    committer: SnapshotCommitter, tmp_path: Path
) -> None:
    first = write_parquet(tmp_path / "in", pa.table({"id": [1], "st": pa.array([{"a": 1}]), "items": pa.array([[{"sku": "x"}]])}))
    second = write_parquet(tmp_path / "in", pa.table({"id": [2], "st": pa.array([{"a": 2, "b": "B"}]), "items": pa.array([[{"sku": "y", "n": 2}]])}))
    third = write_parquet(tmp_path / "in", pa.table({"id": [3], "st": pa.array([{"a": 3, "b": {"deep": 1}}])}))
    # an absent nested column written as nulls of another type (dlt does so for arrow loads): no value, it fits
    fourth = write_parquet(tmp_path / "in", pa.table({"id": [4], "items": pa.nulls(1, pa.string())}))
    result = committer.commit(batch([first, second, third, fourth], "ev"))
    assert result.rows == 3 and len(result.rejected) == 1
    assert "column 'st.b': struct<deep: int64> does not fit table type string" in result.rejected[0].reason
    table = committer.catalog.load_table(("ns", "ev"))
    assert len(table.metadata.snapshots) == 1
    rows = table.scan().to_arrow().sort_by("id").select(["id", "st"]).to_pylist()
    assert rows == [{"id": 1, "st": {"a": 1, "b": None}}, {"id": 2, "st": {"a": 2, "b": "B"}}, {"id": 4, "st": None}]
    assert duckdb_rows(table, "SELECT id, items FROM t WHERE id < 4 ORDER BY id") == [
        (1, [{"sku": "x", "n": None}]), (2, [{"sku": "y", "n": 2}])]


def test_a_resumed_merge_with_extra_delete_keys_deletes_once(committer: SnapshotCommitter, tmp_path: Path) -> None:
    merge = {"write_disposition": WriteDisposition.MERGE, "merge_key": ("root",)}
    committer.commit(one(write_parquet(tmp_path / "in", {"root": ["r1", "r2"], "v": ["old", "old"]}), "x", 1))
    parents = pa.table({"root": ["r1", "r2"]})
    children = one(write_parquet(tmp_path / "in", {"root": ["r1"], "v": ["new"]}), "x", 2, **merge)
    assert committer.commit(children, parents).rows == 1
    again = committer.commit(children, parents)  # the dlt job resumed after its commit
    assert (again.snapshot_id, again.duplicates) == (None, 1)
    table = committer.catalog.load_table(("ns", "x"))
    assert table.scan().to_arrow().to_pylist() == [{"root": "r1", "v": "new"}]
    # a load whose nested file is empty still deletes the children of its parents, once
    empty = one(write_parquet(tmp_path / "in", {"root": pa.array([], pa.string()), "v": pa.array([], pa.string())}), "x", 3, **merge)
    assert committer.commit(empty, parents).snapshot_id is not None
    assert table.refresh().scan().to_arrow().num_rows == 0
    assert committer.commit(empty, parents).snapshot_id is None


def test_table_properties_come_from_star_then_the_table_name_then_ns_table() -> None:
    from ingester.commit.options import WriteOptions

    options = WriteOptions(table_properties={"*": {"a": "1", "b": "1"}, "events": {"b": "2", "c": "2"}, "ns.events": {"c": "3"}})
    assert options.properties_for("ns.events") == {"a": "1", "b": "2", "c": "3"}
    assert options.properties_for("other.events") == {"a": "1", "b": "2", "c": "2"}
    assert options.properties_for("ns.t") == {"a": "1", "b": "1"}
