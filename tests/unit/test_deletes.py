"""Position delete files: which rows a key set hits, and the file that records them."""

from __future__ import annotations

import uuid
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.conversions import from_bytes
from pyiceberg.manifest import DataFileContent
from pyiceberg.table import Table
from pyiceberg.types import LongType

from ingester.catalog import open_catalog
from ingester.iceberg_layer.deletes import (
    PATH_FIELD_ID,
    POS_FIELD_ID,
    deleted_positions,
    matching_positions,
    write_position_deletes,
)
from ingester.schema import to_iceberg
from ingester.settings import CatalogSettings


@pytest.fixture
def table(tmp_path: Path) -> Table:
    catalog = open_catalog(CatalogSettings(), tmp_path / "home")
    catalog.create_namespace("ns")
    data = pa.table({"a": pa.array([1, 2, 3, 2, 5], pa.int64()), "b": ["x", "y", "z", "w", "y"]})
    t = catalog.create_table(("ns", "t"), to_iceberg(data.schema))
    t.append(data)
    return t


def test_single_and_composite_keys_hit_exactly_their_rows(table: Table) -> None:
    (task,) = table.scan().plan_files()
    single = matching_positions(table, task.file, [pa.table({"a": pa.array([2, 9], pa.int64())})], [])
    assert single.to_pylist() == [1, 3]
    both = matching_positions(table, task.file, [pa.table({"a": pa.array([2, 5], pa.int64()), "b": ["w", "y"]})], [])
    assert both.to_pylist() == [3, 4]


def test_delete_file_is_sorted_with_field_ids_and_bounds_and_skips_rows_already_deleted(table: Table) -> None:
    (task,) = table.scan().plan_files()
    written = write_position_deletes(table, task.file, pa.array([3, 1], pa.int64()), uuid.uuid4())
    assert written.content == DataFileContent.POSITION_DELETES and written.record_count == 2
    assert from_bytes(LongType(), written.lower_bounds[POS_FIELD_ID]) == 1
    assert from_bytes(LongType(), written.upper_bounds[POS_FIELD_ID]) == 3
    with table.io.new_input(written.file_path).open() as f:
        stored = pq.read_table(f)
    assert stored.column("pos").to_pylist() == [1, 3]
    assert stored.column("file_path").to_pylist() == [task.file.file_path] * 2
    assert [int(f.metadata[b"PARQUET:field_id"]) for f in stored.schema] == [PATH_FIELD_ID, POS_FIELD_ID]
    assert deleted_positions(table, task.file, [written]).to_pylist() == [1, 3]
    again = matching_positions(table, task.file, [pa.table({"a": pa.array([2, 3], pa.int64())})], [written])
    assert again.to_pylist() == [2]  # rows 1 and 3 are gone already
