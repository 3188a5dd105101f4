"""Append, replace and merge, each filling one snapshot; as-is (zero-copy) registration."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.conversions import from_bytes
from pyiceberg.manifest import DataFileContent
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform
from pyiceberg.types import LongType

from ingester.batch import Pending
from ingester.catalog import open_catalog
from ingester.commit.as_is import add_as_is, as_is_footers
from ingester.commit.dispositions import append, merge_into, replace_all
from ingester.commit.options import WriteOptions
from ingester.commit.source_files import BadFile, SourceFile, null_columns
from ingester.events import FileEvent, WriteDisposition
from ingester.iceberg_layer.datafiles import nan_count
from ingester.schema import normalize_schema, table_arrow_schema, to_iceberg
from ingester.settings import CatalogSettings
from ingester.storage import FileReader
from tests.support import flip_page_bytes, write_parquet

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string())])


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    cat = open_catalog(CatalogSettings(), tmp_path / "home")
    cat.create_namespace("ns")
    return cat


def source(path: Path, event: FileEvent | None = None) -> SourceFile:
    """A ``SourceFile`` as ``SnapshotCommitter.read`` makes it."""
    reader = FileReader([path.parent.as_uri()])
    ev = dataclasses.replace(event or FileEvent(table="t"), location=str(path))
    footer, metadata = reader.footer(ev)
    raw = metadata.schema.to_arrow_schema()
    return SourceFile(Pending(ev), normalize_schema(raw), raw, metadata.num_rows,
                      open=lambda read_dictionary=(), metadata=None: reader.open(ev, read_dictionary, metadata),
                      open_raw=lambda: reader.open_raw(ev), location=reader.check(str(path)),
                      footer=footer, null_columns=null_columns(metadata, raw))


def rows(table: Table) -> list[tuple[int, str]]:
    table.refresh()
    t = table.scan().to_arrow()
    return sorted(zip(t.column("id").to_pylist(), t.column("v").to_pylist()))


def commit(table: Table, fn: object, files: list[SourceFile], *args: object, options: WriteOptions = WriteOptions()) -> tuple[int, bool]:
    with table.transaction() as tx:
        result = fn(tx, table, files, table_arrow_schema(table.schema()), {"k": "v"}, *args, options, uuid.uuid4().hex)  # type: ignore[operator]
    return result  # type: ignore[no-any-return]


def data(tmp_path: Path, ids: list[int], v: str = "x") -> Path:
    return write_parquet(tmp_path / "in", pa.table({"id": ids, "v": [v] * len(ids)}, SCHEMA))


def test_append_registers_fitting_files_as_is_else_rewrites(catalog: Catalog, tmp_path: Path) -> None:
    table = catalog.create_table(("ns", "t"), to_iceberg(SCHEMA))
    assert commit(table, append, [source(data(tmp_path, [1, 2]))]) == (2, True)
    assert commit(table, append, [source(data(tmp_path, [3]))], options=WriteOptions(zero_copy=False)) == (1, False)
    assert rows(table) == [(1, "x"), (2, "x"), (3, "x")]
    assert [s.summary.additional_properties["k"] for s in table.metadata.snapshots] == ["v", "v"]  # type: ignore[union-attr]


def test_as_is_only_when_every_column_has_the_table_type(catalog: Catalog, tmp_path: Path) -> None:
    table = catalog.create_table(("ns", "t"), to_iceberg(SCHEMA))
    target = table_arrow_schema(table.schema())
    assert as_is_footers([source(data(tmp_path, [1]))], target, table) is not None
    narrow = write_parquet(tmp_path / "in", pa.table({"id": pa.array([1], pa.int32()), "v": ["x"]}))
    extra = write_parquet(tmp_path / "in", pa.table({"id": [1], "v": ["x"], "w": [1.0]}))
    with_ids = tmp_path / "in" / "ids.parquet"
    pq.write_table(pa.table({"id": pa.array([1], pa.int64())}).cast(
        pa.schema([pa.field("id", pa.int64(), metadata={"PARQUET:field_id": "7"})])), with_ids)
    for path in (narrow, extra, with_ids):
        assert as_is_footers([source(path)], target, table) is None, path
    partitioned = catalog.create_table(("ns", "p"), to_iceberg(SCHEMA), partition_spec=PartitionSpec(
        PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="id")))
    assert as_is_footers([source(data(tmp_path, [1]))], target, partitioned) is None


def test_replace_swaps_every_data_file_in_one_snapshot(catalog: Catalog, tmp_path: Path) -> None:
    table = catalog.create_table(("ns", "t"), to_iceberg(SCHEMA))
    commit(table, append, [source(data(tmp_path, [1, 2]))])
    commit(table, append, [source(data(tmp_path, [3]))])
    assert commit(table, replace_all, [source(data(tmp_path, [7], "new"))]) == (1, True)
    assert rows(table) == [(7, "new")]
    assert len(table.metadata.snapshots) == 3 and table.current_snapshot().summary.operation.value == "overwrite"  # type: ignore[union-attr]


def merge_event(**kw: object) -> FileEvent:
    return FileEvent(table="t", write_disposition=WriteDisposition.MERGE, **kw)  # type: ignore[arg-type]


def test_upsert_keeps_the_last_row_per_key_with_position_deletes(catalog: Catalog, tmp_path: Path) -> None:
    table = catalog.create_table(("ns", "t"), to_iceberg(SCHEMA))
    commit(table, append, [source(data(tmp_path, [1, 2, 3], "old"))])
    ev = merge_event(primary_key=("id",))
    update = write_parquet(tmp_path / "in", pa.table({"id": [2, 4, 2], "v": ["a", "b", "c"]}, SCHEMA))
    assert commit(table, merge_into, [source(update, ev)], ev) == (2, False)
    assert rows(table) == [(1, "old"), (2, "c"), (3, "old"), (4, "b")]
    deletes = [d for t in table.scan().plan_files() for d in t.delete_files]
    assert [d.content for d in deletes] == [DataFileContent.POSITION_DELETES] and deletes[0].record_count == 1


def test_merge_hard_delete_flag_deletes_the_key_and_inserts_nothing(catalog: Catalog, tmp_path: Path) -> None:
    schema = pa.schema([("id", pa.int64()), ("v", pa.string()), ("gone", pa.bool_())])
    table = catalog.create_table(("ns", "t"), to_iceberg(schema))
    first = write_parquet(tmp_path / "in", pa.table({"id": [1, 2], "v": ["a", "b"], "gone": [False, False]}, schema))
    commit(table, append, [source(first)])
    ev = merge_event(primary_key=("id",), columns={"gone": {"hard_delete": True}})
    flagged = write_parquet(tmp_path / "in", pa.table({"id": [1, 3], "v": ["x", "y"], "gone": [True, None]}, schema))
    assert commit(table, merge_into, [source(flagged, ev)], ev) == (1, False)
    assert rows(table) == [(2, "b"), (3, "y")]


def test_delete_insert_by_merge_key_replaces_every_row_of_the_key(catalog: Catalog, tmp_path: Path) -> None:
    table = catalog.create_table(("ns", "t"), to_iceberg(SCHEMA))
    commit(table, append, [source(write_parquet(tmp_path / "in", pa.table({"id": [1, 1, 2], "v": ["a", "b", "c"]}, SCHEMA)))])
    ev = merge_event(merge_key=("id",))
    new = write_parquet(tmp_path / "in", pa.table({"id": [1, 1], "v": ["x", "y"]}, SCHEMA))
    assert commit(table, merge_into, [source(new, ev)], ev) == (2, True)  # every row inserted: as-is
    assert rows(table) == [(1, "x"), (1, "y"), (2, "c")]


def test_the_table_copy_has_the_same_pages_and_the_table_field_ids(catalog: Catalog, tmp_path: Path) -> None:
    nested = pa.schema([("id", pa.int64()), ("st", pa.struct([("a", pa.int32()), ("b", pa.string())])),
                        ("xs", pa.list_(pa.struct([("p", pa.float64())]))), ("m", pa.map_(pa.string(), pa.int64()))])
    rows_in = {"id": [1, 2], "st": [{"a": 1, "b": "x"}, None], "xs": [[{"p": 1.5}], []], "m": [[("k", 7)], None]}
    path = write_parquet(tmp_path / "in", pa.table(rows_in, nested))
    table = catalog.create_table(("ns", "n"), to_iceberg(nested))
    assert commit(table, append, [source(path)]) == (2, True)
    table.refresh()
    (task,) = table.scan().plan_files()
    copy = Path(task.file.file_path.removeprefix("file://"))
    assert copy.name.startswith("ingester-") and copy.stat().st_ino != path.stat().st_ino
    original, copied = path.read_bytes(), copy.read_bytes()
    data_end = len(original) - 8 - int.from_bytes(original[-8:-4], "little")
    assert copied[:data_end] == original[:data_end]  # every page byte for byte
    ids = {leaf.path: leaf.field_id for leaf in _leaves(copy)}
    by_name = {".".join(p): i for p, i in _iceberg_paths(table)}
    assert ids == by_name
    assert table.scan().to_arrow().to_pylist() == pa.table(rows_in, nested).to_pylist()
    assert task.file.value_counts and task.file.lower_bounds[1] and task.file.upper_bounds[1]


def _leaves(path: Path) -> list[Any]:
    """(path, field id) of every schema node of a parquet file, by pyarrow's reading."""
    out = []

    def walk(field: pa.Field, prefix: list[str]) -> None:
        out.append(Node(".".join([*prefix, field.name]), int(field.metadata[b"PARQUET:field_id"])))
        t = field.type
        if pa.types.is_struct(t):
            for child in t:
                walk(child, [*prefix, field.name])
        elif pa.types.is_list(t):
            walk(t.value_field, [*prefix, field.name])
        elif pa.types.is_map(t):
            walk(t.key_field, [*prefix, field.name])
            walk(t.item_field, [*prefix, field.name])

    for field in pq.read_schema(path):
        walk(field, [])
    return out


@dataclasses.dataclass
class Node:
    path: str
    field_id: int


def _iceberg_paths(table: Table) -> list[tuple[list[str], int]]:
    """(names down to the field, field id) for every field, as pyarrow names nested fields."""
    from pyiceberg.types import ListType, MapType, NestedField, StructType

    out: list[tuple[list[str], int]] = []

    def walk(field: NestedField, prefix: list[str], name: str) -> None:
        here = [*prefix, name]
        out.append((here, field.field_id))
        t = field.field_type
        if isinstance(t, StructType):
            for child in t.fields:
                walk(child, here, child.name)
        elif isinstance(t, ListType):
            walk(t.element_field, here, "element")
        elif isinstance(t, MapType):
            walk(t.key_field, here, "key")
            walk(t.value_field, here, "value")

    for field in table.schema().fields:
        walk(field, [], field.name)
    return out


def test_a_retried_commit_replaces_its_own_copies(catalog: Catalog, tmp_path: Path) -> None:
    table = catalog.create_table(("ns", "t"), to_iceberg(SCHEMA))
    files = [source(data(tmp_path, [1])), source(data(tmp_path, [2]))]
    target = table_arrow_schema(table.schema())
    for _ in range(2):  # the same batch id twice, as a retry after an unknown commit state
        with table.transaction() as tx:
            footers = as_is_footers(files, target, table)
            assert footers is not None
            with tx.update_snapshot().fast_append() as producer:
                add_as_is(tx, table, producer, files, footers, "b1", WriteOptions())
    table.refresh()
    paths = sorted({t.file.file_path.rsplit("/", 1)[1] for t in table.scan().plan_files()})
    assert paths == ["ingester-b1-00000.parquet"]  # the two small files joined (ingester.commit.joining)
    folder = Path(urlparse(table.location()).path) / "data"
    assert sorted(p.name for p in folder.iterdir()) == paths  # the retry wrote over its own file
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == [1, 1, 2, 2]  # two commits of two rows


def test_a_registered_column_named_with_a_dot_gets_bounds_not_only_counts(catalog: Catalog, tmp_path: Path) -> None:
    dotted = pa.schema([("a.b", pa.int64()), ("c", pa.string())])
    table = catalog.create_table(("ns", "d"), to_iceberg(dotted))
    path = write_parquet(tmp_path / "in", pa.table({"a.b": [3, 9], "c": ["x", "y"]}, dotted))
    assert commit(table, append, [source(path)]) == (2, True)
    table.refresh()
    (task,) = table.scan().plan_files()
    field = table.schema().find_field("a.b", case_sensitive=True)
    assert from_bytes(LongType(), task.file.lower_bounds[field.field_id]) == 3
    assert from_bytes(LongType(), task.file.upper_bounds[field.field_id]) == 9


@pytest.mark.parametrize("options", [WriteOptions(), WriteOptions(verify_files=False), WriteOptions(zero_copy=False)],
                         ids=["as-is, verified", "as-is, trusted", "rewritten"])
def test_float_columns_carry_nan_counts(catalog: Catalog, tmp_path: Path, options: WriteOptions) -> None:
    schema = pa.schema([("id", pa.int64()), ("f", pa.float64()), ("g", pa.float32())])
    table = catalog.create_table(("ns", "f"), to_iceberg(schema))
    path = write_parquet(tmp_path / "in", pa.table({"id": [1, 2, 3], "f": [1.0, float("nan"), float("nan")],
                                                    "g": pa.array([0.5, None, 2.0], pa.float32())}, schema))
    assert commit(table, append, [source(path)], options=options)[1] == options.zero_copy
    table.refresh()
    (task,) = table.scan().plan_files()
    ids = {f.name: f.field_id for f in table.schema().fields}
    assert task.file.nan_value_counts == {ids["f"]: 2, ids["g"]: 0}


@pytest.mark.parametrize(("column", "nans"), [
    (pa.array([1.0, float("nan"), 3.0, float("nan")]), 2),
    (pa.array([float("nan"), 1.0, float("nan"), float("nan")]).slice(1, 2), 1),  # an offset into the buffer
    (pa.array([float("nan"), None, 2.0], pa.float32()), 1),
    (pa.array([None, None], pa.float64()), 0),
    (pa.chunked_array([[float("nan")], [1.0, float("nan")]]), 2),
], ids=["no nulls", "sliced", "nulls", "all null", "chunked"])
def test_nan_count_counts_nan_values_only(column: pa.Array, nans: int) -> None:
    assert nan_count(column) == nans


@pytest.mark.parametrize(("verified", "options", "decoded"), [
    (False, WriteOptions(), True),
    (True, WriteOptions(), False),
    (True, WriteOptions(trust_verified=False), True),
    (False, WriteOptions(verify_files=False), False),
], ids=["unverified event", "verified by its producer", "verify_pages=all", "written by this process"])
def test_pages_are_decoded_unless_the_producer_did(catalog: Catalog, tmp_path: Path, verified: bool,
                                                   options: WriteOptions, decoded: bool) -> None:
    table = catalog.create_table(("ns", "c"), to_iceberg(SCHEMA))
    path = flip_page_bytes(write_parquet(tmp_path / "in", pa.table({"id": list(range(5000)), "v": [str(i) for i in range(5000)]}, SCHEMA)))
    f = source(path, FileEvent(table="c", verified=verified))
    good = source(data(tmp_path, [1, 2]))
    assert options.must_verify(f.item.event) is decoded
    if decoded:
        with pytest.raises(BadFile, match="cannot read") as caught:
            commit(table, append, [good, f], options=options)
        assert caught.value.file is f and table.current_snapshot() is None
        folder = Path(urlparse(table.location()).path) / "data"
        assert not folder.exists() or list(folder.iterdir()) == []  # nothing copied before the check
    else:  # the producer's check stands: registered without a page decoded
        assert commit(table, append, [good, f], options=options) == (5002, True)


@pytest.mark.parametrize(("concurrency", "remote", "peak"), [(1, True, 1), (3, True, 3), (3, False, 1)])
def test_as_is_copies_run_read_concurrency_at_once(catalog: Catalog, tmp_path: Path, concurrency: int, remote: bool,
                                                    peak: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Copies to or from an object store (here: local files taken for remote) run
    ``read_concurrency`` at once, local ones one after another (files too large to join: one
    copy each)."""
    import threading
    import time

    import ingester.storage
    from ingester.commit import as_is, joining

    if remote:
        monkeypatch.setattr(ingester.storage, "is_remote", lambda location: True)
    monkeypatch.setattr(joining, "JOIN_BELOW_BYTES", 0)

    running, most, lock = [0], [0], threading.Lock()
    copy = as_is._write

    def counted(*args: Any) -> Any:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.05)
        try:
            return copy(*args)
        finally:
            with lock:
                running[0] -= 1

    monkeypatch.setattr(as_is, "_write", counted)
    table = catalog.create_table(("ns", f"k{concurrency}{remote}"), to_iceberg(SCHEMA))
    files = [source(data(tmp_path / str(i), [i])) for i in range(6)]
    assert commit(table, append, files, options=WriteOptions(read_concurrency=concurrency)) == (6, True)
    assert most[0] == peak
