"""Position delete files (Iceberg v2 merge-on-read), written next to the data files.

Merge marks replaced rows with position deletes instead of rewriting whole data files:
readers that support position deletes (upstream pyiceberg, DuckDB, Spark, Trino) see the
merged table; equality deletes, which pyiceberg cannot read, are never written.
Compaction folds the deletes back into data files. Equality deletes another writer left
(dlt-iceberg's pyiceberg fork merges with them) are turned into position deletes with the
same effect by ``equality_deletes_as_positions``, after which pyiceberg plans the table again.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyiceberg.conversions import to_bytes
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.table import Table
from pyiceberg.types import LongType, StringType

from ingester.iceberg_layer.producers import DeleteRewriteFiles

PATH_FIELD_ID = 2147483546
POS_FIELD_ID = 2147483545
POSITION_DELETE_SCHEMA = pa.schema([
    pa.field("file_path", pa.string(), nullable=False, metadata={"PARQUET:field_id": str(PATH_FIELD_ID)}),
    pa.field("pos", pa.int64(), nullable=False, metadata={"PARQUET:field_id": str(POS_FIELD_ID)}),
])
_ROW = "__ingester_pos"


def matching_positions(table: Table, data_file: DataFile, key_chunks: Sequence[pa.Table], already: Sequence[DataFile]) -> pa.Array:
    """Positions (row numbers, ascending) in ``data_file`` whose key is in one of ``key_chunks``
    (distinct keys, one schema) and that no existing delete file removes yet. Reads the key
    columns once; each chunk is one hash probe, so a chunk's size bounds the probe's memory."""
    if not key_chunks:
        return pa.array([], pa.int64())
    names = key_chunks[0].column_names
    with table.io.new_input(data_file.file_path).open() as f:
        raw = pq.read_table(f, columns=names)
    raw = raw.cast(key_chunks[0].schema)
    probe = raw.append_column(_ROW, pa.array(range(raw.num_rows), pa.int64())) if len(names) > 1 else raw
    parts = [_positions_in(raw, probe, keys) for keys in key_chunks]
    positions = pa.concat_arrays(parts).cast(pa.int64()) if len(parts) > 1 else parts[0].cast(pa.int64())
    if len(parts) > 1:
        positions = pc.take(positions, pc.sort_indices(positions))
    if len(positions) and already:
        deleted = deleted_positions(table, data_file, already)
        if len(deleted):
            positions = positions.filter(pc.invert(pc.is_in(positions, value_set=deleted)))
    return positions


def _positions_in(raw: pa.Table, probe: pa.Table, keys: pa.Table) -> pa.Array:
    if raw.num_columns == 1:
        return pc.indices_nonzero(pc.is_in(raw.column(0), value_set=keys.column(0)))
    hits = probe.join(keys, keys.column_names, join_type="left semi").column(_ROW)
    return pc.take(hits, pc.sort_indices(hits)).combine_chunks() if len(hits) else pa.array([], pa.int64())


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


@dataclass(frozen=True, slots=True)
class _LiveFile:
    file: DataFile
    spec_id: int
    sequence_number: int


def _live_files(table: Table) -> dict[DataFileContent, list[_LiveFile]]:
    snapshot = table.current_snapshot()
    files: dict[DataFileContent, list[_LiveFile]] = {c: [] for c in DataFileContent}
    for manifest in snapshot.manifests(table.io) if snapshot else ():
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            assert entry.sequence_number is not None  # inherited from the manifest when read
            files[entry.data_file.content].append(_LiveFile(entry.data_file, manifest.partition_spec_id, entry.sequence_number))
    return files


def has_equality_deletes(table: Table) -> bool:
    return bool(_live_files(table)[DataFileContent.EQUALITY_DELETES])


def _applies(delete: _LiveFile, data: _LiveFile, table: Table) -> bool:
    """Iceberg's rule: an equality delete removes rows of data files with a smaller data
    sequence number, in its partition (every partition when its spec is unpartitioned)."""
    if delete.sequence_number <= data.sequence_number:
        return False
    return table.specs()[delete.spec_id].is_unpartitioned() or (
        delete.spec_id == data.spec_id and delete.file.partition == data.file.partition)


def equality_deletes_as_positions(table: Table, properties: Callable[[Table], dict[str, str]]) -> int:
    """Replace every live equality delete file of ``table`` by position delete files that
    remove the same rows, in one snapshot (``properties`` gives its summary properties).
    Reads the equality delete files and the key columns of the data files they apply to.
    Returns the number of equality delete files removed (0: nothing to do, no snapshot)."""
    files = _live_files(table)
    equality = files[DataFileContent.EQUALITY_DELETES]
    if not equality:
        return 0
    schema = table.schema()
    keys: dict[str, pa.Table] = {}
    for delete in equality:
        with table.io.new_input(delete.file.file_path).open() as f:
            names = [schema.find_column_name(i) for i in delete.file.equality_ids or ()]
            keys[delete.file.file_path] = pq.read_table(f, columns=[str(n) for n in names])
    tx = table.transaction()
    producer = DeleteRewriteFiles(tx, table.io, properties)
    with producer:
        for delete in equality:
            producer.delete_data_file(delete.file)
        for data in files[DataFileContent.DATA]:
            by_columns: dict[tuple[str, ...], list[pa.Table]] = {}
            for delete in (d for d in equality if _applies(d, data, table)):
                chunk = keys[delete.file.file_path]
                by_columns.setdefault(tuple(chunk.column_names), []).append(chunk)
            parts = [matching_positions(table, data.file, [pa.concat_tables(chunks).group_by(list(cols)).aggregate([])], ())
                     for cols, chunks in by_columns.items()]
            positions = pa.concat_arrays(parts) if parts else pa.array([], pa.int64())
            if len(positions):
                positions = pc.unique(positions)
                producer.append_data_file(write_position_deletes(table, data.file, positions, producer.commit_uuid))
    tx.commit_transaction()
    return len(equality)
