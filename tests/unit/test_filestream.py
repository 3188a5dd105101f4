"""StreamingDataFiles on a local SQLite catalog: rows, file rolling, field ids, errors."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.table import Table

from ingester.iceberg_layer.filestream import StreamingDataFiles, row_groups


@pytest.fixture
def table(tmp_path: Path) -> Table:
    cat = SqlCatalog("t", uri=f"sqlite:///{tmp_path}/c.db", warehouse=tmp_path.as_uri())
    cat.create_namespace("ns")
    return cat.create_table(("ns", "t"), schema=pa.schema([("id", pa.int64()), ("s", pa.string())]))


def tables(n: int, rows: int) -> Iterator[pa.Table]:
    for i in range(n):
        ids = range(i * rows, (i + 1) * rows)
        yield pa.table({"id": pa.array(ids, pa.int64()), "s": [f"row {j}" for j in ids]})


def commit(table: Table, stream: StreamingDataFiles, data: Iterator[pa.Table]) -> None:
    with table.transaction() as tx, tx.update_snapshot().fast_append() as producer:
        for f in stream.write(data):
            producer.append_data_file(f)


def test_row_groups_coalesce_small_tables_and_skip_empty_ones() -> None:
    groups = list(row_groups([*tables(5, 100), pa.table({"id": pa.array([], pa.int64())})], rows=250))
    assert [g.num_rows for g in groups] == [300, 200]


def test_every_row_lands_once_in_files_rolled_by_size_with_field_ids(table: Table) -> None:
    stream = StreamingDataFiles(table.metadata, table.io, uuid.uuid4(), write_chunk_bytes=20_000, writers=2)
    commit(table, stream, tables(40, 500))
    table.refresh()
    assert stream.rows == 20_000
    files = [t.file for t in table.scan().plan_files()]
    assert len(files) > 4 and sum(f.record_count for f in files) == 20_000
    assert all(f.file_size_in_bytes > 0 and f.lower_bounds and f.upper_bounds for f in files)
    got = table.scan().to_arrow().sort_by("id")
    assert got.column("id").to_pylist() == list(range(20_000))
    assert got.column("s").to_pylist()[:2] == ["row 0", "row 1"]
    schema = pq.read_schema(table.io.new_input(files[0].file_path).open())
    assert schema.field("id").metadata[b"PARQUET:field_id"] == b"1"


def test_a_reading_error_closes_the_writers_and_is_raised(table: Table) -> None:
    def failing() -> Iterator[pa.Table]:
        yield from tables(3, 10)
        raise ValueError("file 4 is corrupt")

    stream = StreamingDataFiles(table.metadata, table.io, uuid.uuid4(), write_chunk_bytes=1 << 20)
    with pytest.raises(ValueError, match="file 4 is corrupt"):
        stream.write(failing())


def test_a_writer_error_is_raised_in_the_caller(table: Table, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("x")
    metadata = table.metadata.model_copy(update={"location": blocker.as_uri()})
    stream = StreamingDataFiles(metadata, table.io, uuid.uuid4(), write_chunk_bytes=1 << 20)
    with pytest.raises(OSError):
        stream.write(tables(50, 1000))


def test_partitioned_tables_are_refused(tmp_path: Path) -> None:
    cat = SqlCatalog("p", uri=f"sqlite:///{tmp_path}/p.db", warehouse=tmp_path.as_uri())
    cat.create_namespace("ns")
    t = cat.create_table(("ns", "p"), schema=pa.schema([("id", pa.int64())]))
    t.update_spec().add_identity("id").commit()
    with pytest.raises(ValueError, match="unpartitioned"):
        StreamingDataFiles(t.metadata, t.io, uuid.uuid4(), write_chunk_bytes=1 << 20)
