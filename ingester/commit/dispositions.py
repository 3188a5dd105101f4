"""Append, replace and merge: each fills exactly one snapshot producer of a transaction.

Files whose schema fits the table are registered as they are (``as_is``); otherwise their
rows stream in bounded chunks. Replace is one OVERWRITE snapshot that removes every data
file. Merge is merge-on-read: replaced rows get position deletes and new versions are
appended (``ingester.iceberg_layer.deletes``). No equality deletes are ever written, so upstream
pyiceberg and DuckDB read every table we write.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, GreaterThanOrEqual, LessThanOrEqual
from pyiceberg.manifest import DataFile
from pyiceberg.table import FileScanTask, Table, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.refs import MAIN_BRANCH

from ingester.commit.as_is import add_as_is, as_is_footers, name_mapped
from ingester.commit.options import WriteOptions
from ingester.commit.source_files import SourceFile, chunked, file_batches
from ingester.events import FileEvent
from ingester.iceberg_layer.datafiles import DataFileWriter, SnapshotProducer
from ingester.iceberg_layer.deletes import matching_positions, write_position_deletes
from ingester.iceberg_layer.filestream import StreamingDataFiles
from ingester.iceberg_layer.producers import MergeOnReadFiles

_ROW = "__ingester_row"
PROBE_THREADS = 2
MIN_PROBE_KEYS = 10_000  # a hash set of this many keys is well under a megabyte per key column


def write_rows(
    tx: Transaction, table: Table, producer: SnapshotProducer, tables: Iterator[pa.Table], write_chunk_bytes: int  # type: ignore[type-arg]
) -> int:
    """Data files from a stream of tables into ``producer``; returns the rows written.
    Unpartitioned unsorted tables stream (``ingester.iceberg_layer.filestream``); partitioned
    or sorted ones go in chunks of ``write_chunk_bytes`` through pyiceberg, which splits them by
    partition (a sorted table's chunks are sorted first: ``DataFileWriter``)."""
    if streams(tx.table_metadata):
        stream = StreamingDataFiles(tx.table_metadata, table.io, producer.commit_uuid, write_chunk_bytes=write_chunk_bytes)
        for data_file in stream.write(tables):
            producer.append_data_file(data_file)
        return stream.rows
    writer = DataFileWriter(tx, table, producer)
    writer.write(chunked(tables, write_chunk_bytes))
    return writer.rows


def streams(metadata: TableMetadata) -> bool:
    """Whether ``write_rows`` streams into a table (unpartitioned and unsorted)."""
    return metadata.spec().is_unpartitioned() and metadata.sort_order().is_unsorted


def _batches(tx: Transaction, files: Sequence[SourceFile], target: pa.Schema, strict_casting: bool) -> Iterator[tuple[int, pa.Table]]:
    """The rows ``write_rows`` writes: dictionary columns stay dictionaries when they stream
    (unpartitioned, unsorted); pyiceberg's partition split gets plain columns."""
    return file_batches(files, target, strict_casting, dictionaries=streams(tx.table_metadata))


def _head_id(table: Table, branch: str) -> int | None:
    """The snapshot a commit to ``branch`` builds on (None: the branch has none yet)."""
    snap = table.snapshot_by_name(branch)
    return snap.snapshot_id if snap is not None else None


def append(
    tx: Transaction, table: Table, files: Sequence[SourceFile], target: pa.Schema, props: dict[str, str],
    options: WriteOptions, batch_id: str, branch: str = MAIN_BRANCH,
) -> tuple[int, bool]:
    """Returns (rows, whether the files were registered zero-copy). ``branch``: where the
    snapshot goes (every disposition)."""
    footers = as_is_footers(files, target, table) if options.zero_copy else None
    if footers is not None:
        name_mapped(tx)
    with tx.update_snapshot(snapshot_properties=props, branch=branch).fast_append() as producer:
        if footers is not None:
            return add_as_is(tx, table, producer, files, footers, batch_id, options), True
        return _rewrite(tx, table, producer, files, target, options), False


def _rewrite(
    tx: Transaction, table: Table, producer: SnapshotProducer, files: Sequence[SourceFile], target: pa.Schema,  # type: ignore[type-arg]
    options: WriteOptions,
) -> int:
    """Every row of ``files`` cast to ``target`` and written into ``producer``."""
    rows = (t for _, t in _batches(tx, files, target, options.strict_casting))
    return write_rows(tx, table, producer, rows, options.write_chunk_bytes)


def replace_all(
    tx: Transaction, table: Table, files: Sequence[SourceFile], target: pa.Schema, props: dict[str, str],
    options: WriteOptions, batch_id: str, branch: str = MAIN_BRANCH,
) -> tuple[int, bool]:
    """Atomically swap every data file of the table for the batch (history is kept).
    Returns (rows, whether the files were registered zero-copy)."""
    footers = as_is_footers(files, target, table) if options.zero_copy else None
    if footers is not None:
        name_mapped(tx)
    with tx.update_snapshot(snapshot_properties=props, branch=branch).overwrite() as producer:
        base = _head_id(table, branch)
        if base is not None:
            for task in table.scan(snapshot_id=base).plan_files():
                producer.delete_data_file(task.file)
        if footers is not None:
            return add_as_is(tx, table, producer, files, footers, batch_id, options), True
        return _rewrite(tx, table, producer, files, target, options), False


def _hard_delete_columns(event: FileEvent, target: pa.Schema) -> list[str]:
    return [n for n, h in event.columns.items() if h.get("hard_delete") and n in target.names]


def _flags(keys: pa.Table, columns: Sequence[str]) -> pa.ChunkedArray | pa.Array:
    """True for rows flagged by a dlt ``hard_delete`` column (true, or non-null)."""
    mask: pa.ChunkedArray | pa.Array = pa.array([False] * keys.num_rows, pa.bool_())
    for name in columns:
        col = keys.column(name)
        flag = pc.fill_null(col, False) if pa.types.is_boolean(col.type) else pc.is_valid(col)
        mask = pc.or_(mask, flag)
    return mask


def _key_range(keys: pa.Table) -> BooleanExpression:
    """Prune candidate files by the min/max of a single key column."""
    if keys.num_columns != 1 or keys.num_rows == 0:
        return AlwaysTrue()
    col = keys.column(0)
    if not (pa.types.is_integer(col.type) or pa.types.is_string(col.type) or pa.types.is_date(col.type)):
        return AlwaysTrue()
    bounds = pc.min_max(col)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    if lo is None:
        return AlwaysTrue()
    name = keys.column_names[0]
    return And(GreaterThanOrEqual(name, lo), LessThanOrEqual(name, hi))  # type: ignore[call-arg, misc]  # pydantic plugin misreads __init__


def _keys_in(files: Sequence[SourceFile], target: pa.Schema, names: list[str], strict_casting: bool) -> pa.Table | None:
    """The key values that keys-only files list (None without such files)."""
    parts = [t for _, t in file_batches(files, target, strict_casting, columns=names)]
    return pa.concat_tables(parts) if parts else None


def _winners(
    files: Sequence[SourceFile], target: pa.Schema, names: list[str], hard: list[str], dedupe: bool, strict_casting: bool
) -> tuple[pa.Table, pa.Array, int]:
    """Distinct keys of the batch, the global row ids to insert in ascending order (last row
    per key wins, rows flagged for hard delete are not inserted), and the batch's row count.
    Reads only key and flag columns."""
    parts = [
        t.append_column(_ROW, pa.array(range(s, s + t.num_rows), pa.int64()))
        for s, t in file_batches(files, target, strict_casting, columns=[*names, *hard])
    ]
    if not parts:
        return pa.table({n: pa.array([], target.field(n).type) for n in names}), pa.array([], pa.int64()), 0
    keys = pa.concat_tables(parts)  # row i has _ROW == i
    if dedupe:
        grouped = keys.group_by(names, use_threads=False).aggregate([(_ROW, "max")])
        distinct = grouped.select(names)
        rows = grouped.column(f"{_ROW}_max").combine_chunks()
        rows = pc.take(rows, pc.sort_indices(rows))
    else:
        distinct = keys.select(names).group_by(names, use_threads=False).aggregate([])
        rows = keys.column(_ROW).combine_chunks()
    if hard:
        rows = rows.filter(pc.invert(pc.take(_flags(keys, hard), rows)))
    return distinct, rows, keys.num_rows


def merge_into(
    tx: Transaction, table: Table, files: Sequence[SourceFile], target: pa.Schema, props: dict[str, str],
    event: FileEvent, options: WriteOptions, batch_id: str, extra_keys: pa.Table | None = None, branch: str = MAIN_BRANCH,
) -> tuple[int, bool]:
    """Upsert by primary key (last row per key wins) or delete-insert by merge key; rows
    flagged by a ``hard_delete`` column delete their key and are not inserted. Keys-only
    files (``FileEvent.keys_only``) and ``extra_keys`` only delete.

    Merge-on-read: replaced rows get position deletes (one small file per touched data
    file, reading only key columns); new versions are appended, as-is when every row of the
    batch is inserted and the files fit. One OVERWRITE snapshot. Returns (rows, zero-copy)."""
    names = list(event.primary_key or event.merge_key)
    hard = _hard_delete_columns(event, target)
    deleting = [f for f in files if f.item.event.keys_only]
    files = [f for f in files if not f.item.event.keys_only]
    keys, insert_rows, total = _winners(files, target, names, hard, bool(event.primary_key), options.strict_casting)
    extra = [k for k in (extra_keys, _keys_in(deleting, target, names, options.strict_casting)) if k is not None and k.num_rows]
    if extra:
        more = [k.select(names).cast(keys.schema) for k in extra]
        keys = pa.concat_tables([keys, *more]).group_by(names, use_threads=False).aggregate([])
    every_row = len(insert_rows) == total and total > 0
    footers = as_is_footers(files, target, table) if options.zero_copy and every_row else None
    if footers is not None:
        name_mapped(tx)
    producer = MergeOnReadFiles(transaction=tx, io=table.io, snapshot_properties=props, branch=branch)
    base = _head_id(table, branch)
    with producer:
        if base is not None and keys.num_rows:
            tasks = list(table.scan(row_filter=_key_range(keys), snapshot_id=base).plan_files())
            for data_file, positions in _replaced(table, tasks, keys, options.merge_batch_size):
                producer.append_data_file(write_position_deletes(table, data_file, positions, producer.commit_uuid))
        if footers is not None:
            return add_as_is(tx, table, producer, files, footers, batch_id, options), True
        if len(insert_rows) == total:
            return _rewrite(tx, table, producer, files, target, options), False
        selected = _select_rows(_batches(tx, files, target, options.strict_casting), insert_rows)
        rows = write_rows(tx, table, producer, selected, options.write_chunk_bytes)
    return rows, False


def _replaced(table: Table, tasks: Sequence[FileScanTask], keys: pa.Table, merge_batch_size: int) -> Iterator[tuple[DataFile, pa.Array]]:
    """(data file, positions of its rows whose key is in ``keys``) for each touched file;
    two files are probed at a time (each read of key columns and hash probe is native code).
    Each file's key columns are read once and probed with chunks of ``merge_batch_size`` keys
    (at least ``MIN_PROBE_KEYS``: smaller chunks save no memory worth the extra probes)."""
    size = max(merge_batch_size, MIN_PROBE_KEYS)
    chunks = [keys.slice(start, size) for start in range(0, keys.num_rows, size)]

    def probe(task: FileScanTask) -> tuple[DataFile, pa.Array]:
        return task.file, matching_positions(table, task.file, chunks, list(task.delete_files))

    with ThreadPoolExecutor(PROBE_THREADS, thread_name_prefix="ingester-probe") as pool:
        for data_file, positions in pool.map(probe, tasks):
            if len(positions):
                yield data_file, positions


def _select_rows(batches: Iterator[tuple[int, pa.Table]], rows: pa.Array) -> Iterator[pa.Table]:
    """The rows of each batch whose global row id is in ``rows`` (ascending)."""
    wanted = rows.to_pylist()
    for start, t in batches:
        lo, hi = bisect.bisect_left(wanted, start), bisect.bisect_left(wanted, start + t.num_rows)
        if hi > lo:
            yield t.take(pa.array([r - start for r in wanted[lo:hi]], pa.int64()))
