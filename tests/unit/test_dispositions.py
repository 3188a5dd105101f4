"""Append, replace and merge, each filling one snapshot; as-is (zero-copy) registration."""

from __future__ import annotations

import dataclasses
import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.manifest import DataFileContent
from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.table import Table
from pyiceberg.transforms import IdentityTransform

from ingester.batch import Pending
from ingester.catalog import open_catalog
from ingester.commit.as_is import copy_into_table, fits_as_is
from ingester.commit.dispositions import append, merge_into, replace_all
from ingester.commit.options import WriteOptions
from ingester.commit.source_files import SourceFile
from ingester.events import FileEvent, WriteDisposition
from ingester.schema import normalize_schema, table_arrow_schema, to_iceberg
from ingester.settings import CatalogSettings
from ingester.storage import FileReader
from tests.support import write_parquet

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
    pf = pq.ParquetFile(path)
    return SourceFile(Pending(ev), normalize_schema(pf.schema_arrow), pf.schema_arrow, pf.metadata.num_rows,
                      open=lambda read_dictionary=(): reader.open(ev, read_dictionary),
                      open_raw=lambda: reader.open_raw(ev), location=reader.check(str(path)))


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


def test_fits_as_is_only_when_every_column_has_the_table_type(catalog: Catalog, tmp_path: Path) -> None:
    table = catalog.create_table(("ns", "t"), to_iceberg(SCHEMA))
    target = table_arrow_schema(table.schema())
    assert fits_as_is([source(data(tmp_path, [1]))], target, table)
    narrow = write_parquet(tmp_path / "in", pa.table({"id": pa.array([1], pa.int32()), "v": ["x"]}))
    extra = write_parquet(tmp_path / "in", pa.table({"id": [1], "v": ["x"], "w": [1.0]}))
    with_ids = tmp_path / "in" / "ids.parquet"
    pq.write_table(pa.table({"id": pa.array([1], pa.int64())}).cast(
        pa.schema([pa.field("id", pa.int64(), metadata={"PARQUET:field_id": "7"})])), with_ids)
    for path in (narrow, extra, with_ids):
        assert not fits_as_is([source(path)], target, table), path
    partitioned = catalog.create_table(("ns", "p"), to_iceberg(SCHEMA), partition_spec=PartitionSpec(
        PartitionField(source_id=1, field_id=1000, transform=IdentityTransform(), name="id")))
    assert not fits_as_is([source(data(tmp_path, [1]))], target, partitioned)


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


def test_copies_into_the_table_are_named_by_batch_and_replaced_on_retry(catalog: Catalog, tmp_path: Path) -> None:
    table = catalog.create_table(("ns", "t"), to_iceberg(SCHEMA))
    files = [source(data(tmp_path, [1])), source(data(tmp_path, [2]))]
    first = copy_into_table(table, files, "b1")
    assert first == copy_into_table(table, files, "b1")  # a retried commit overwrites its own copies
    assert [p.rsplit("/", 1)[1] for p in first] == ["ingester-b1-00000.parquet", "ingester-b1-00001.parquet"]
    assert all(p.startswith(table.location()) for p in first)
