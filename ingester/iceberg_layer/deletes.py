"""Position delete files (Iceberg v2 merge-on-read), written next to the data files.

Merge marks replaced rows with position deletes instead of rewriting whole data files:
readers that support position deletes (upstream pyiceberg, DuckDB, Spark, Trino) see the
merged table; equality deletes, which pyiceberg cannot read, are never written.
Compaction folds the deletes back into data files.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.conversions import to_bytes
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.table import Table
from pyiceberg.types import LongType, StringType

PATH_FIELD_ID = 2147483546
POS_FIELD_ID = 2147483545
POSITION_DELETE_SCHEMA = pa.schema([
    pa.field("file_path", pa.string(), nullable=False, metadata={"PARQUET:field_id": str(PATH_FIELD_ID)}),
    pa.field("pos", pa.int64(), nullable=False, metadata={"PARQUET:field_id": str(POS_FIELD_ID)}),
])
_ROW = "__ingester_pos"


def matching_positions(table: Table, data_file: DataFile, keys: pa.Table, already: Sequence[DataFile]) -> pa.Array:
    """Positions (row numbers) in ``data_file`` whose key is in ``keys`` and that no existing
    delete file removes yet. Reads only the key columns."""
    names = keys.column_names
    with table.io.new_input(data_file.file_path).open() as f:
        raw = pq.read_table(f, columns=names)
    raw = raw.cast(keys.schema)
    if len(names) == 1:
        mask = pc.is_in(raw.column(0), value_set=keys.column(0))
        positions = pc.indices_nonzero(mask)
    else:
        probe = raw.append_column(_ROW, pa.array(range(raw.num_rows), pa.int64()))
        hits = probe.join(keys, names, join_type="left semi").column(_ROW)
        positions = pc.take(hits, pc.sort_indices(hits)).combine_chunks() if len(hits) else pa.array([], pa.int64())
    positions = positions.cast(pa.int64())
    if len(positions) and already:
        deleted = deleted_positions(table, data_file, already)
        if len(deleted):
            positions = positions.filter(pc.invert(pc.is_in(positions, value_set=deleted)))
    return positions


def deleted_positions(table: Table, data_file: DataFile, delete_files: Sequence[DataFile]) -> pa.Array:
    parts = []
    for d in delete_files:
        with table.io.new_input(d.file_path).open() as f:
            t = pq.read_table(f)
        parts.append(t.filter(pc.equal(t.column("file_path"), data_file.file_path)).column("pos").combine_chunks())
    return pa.concat_arrays(parts) if parts else pa.array([], pa.int64())


def write_position_deletes(table: Table, data_file: DataFile, positions: pa.Array, write_id: uuid.UUID) -> DataFile:
    """Write one position delete file for ``data_file`` and describe it."""
    positions = pc.take(positions, pc.sort_indices(positions))
    path = f"{table.location().rstrip('/')}/data/{write_id}-{uuid.uuid4().hex[:8]}-deletes.parquet"
    rows = pa.table({"file_path": pa.array([data_file.file_path] * len(positions), pa.string()), "pos": positions},
                    schema=POSITION_DELETE_SCHEMA)
    with table.io.new_output(path).create(overwrite=True) as out:
        pq.write_table(rows, out, compression="zstd")
    size = len(table.io.new_input(path))
    lo, hi = pc.min_max(positions).values()
    path_bytes = to_bytes(StringType(), data_file.file_path)
    delete_file = DataFile.from_args(
        _table_format_version=2,
        content=DataFileContent.POSITION_DELETES,
        file_path=path,
        file_format=FileFormat.PARQUET,
        partition=data_file.partition,
        record_count=len(positions),
        file_size_in_bytes=size,
        column_sizes={},
        value_counts={PATH_FIELD_ID: len(positions), POS_FIELD_ID: len(positions)},
        null_value_counts={PATH_FIELD_ID: 0, POS_FIELD_ID: 0},
        nan_value_counts={},
        lower_bounds={PATH_FIELD_ID: path_bytes, POS_FIELD_ID: to_bytes(LongType(), lo.as_py())},
        upper_bounds={PATH_FIELD_ID: path_bytes, POS_FIELD_ID: to_bytes(LongType(), hi.as_py())},
        key_metadata=None,
        split_offsets=None,
        equality_ids=None,
        sort_order_id=None,
    )
    delete_file.spec_id = _spec_id(table, data_file)
    return delete_file


def _spec_id(table: Table, data_file: DataFile) -> int:
    """Files read back from manifests do not carry their spec id; tables we write keep one spec."""
    spec = getattr(data_file, "_spec_id", None)
    return spec if spec is not None else table.metadata.default_spec_id
