"""Replace and merge as copy-on-write overwrites: one OVERWRITE snapshot, data files only.

No equality or position deletes are written, so upstream pyiceberg and DuckDB read the
result correctly. Merge rewrites only the data files that hold a matching key (files are
pruned by the key range first) and reads them one at a time: memory is bounded by one
data file plus the batch, not by the table.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.expressions import AlwaysTrue, And, BooleanExpression, GreaterThanOrEqual, LessThanOrEqual
from pyiceberg.io.pyarrow import ArrowScan, _dataframe_to_data_files
from pyiceberg.table import Table, Transaction
from pyiceberg.table.update.snapshot import _OverwriteFiles

from ingester.events import FileEvent

_ROW = "__ingester_row"


def _write(tx: Transaction, table: Table, producer: _OverwriteFiles, df: pa.Table, counter: itertools.count[int]) -> None:
    if df.num_rows:
        for data_file in _dataframe_to_data_files(
            table_metadata=tx.table_metadata, df=df, io=table.io, write_uuid=producer.commit_uuid, counter=counter
        ):
            producer.append_data_file(data_file)


def replace_all(tx: Transaction, table: Table, data: pa.Table, props: dict[str, str]) -> None:
    """Atomically swap every data file of the table for ``data`` (history is kept)."""
    counter = itertools.count(0)
    with tx.update_snapshot(snapshot_properties=props).overwrite() as producer:
        if table.current_snapshot() is not None:
            for task in table.scan().plan_files():
                producer.delete_data_file(task.file)
        _write(tx, table, producer, data, counter)


def hard_delete_mask(data: pa.Table, columns: Mapping[str, Mapping[str, Any]]) -> pa.ChunkedArray | None:
    """Rows flagged by a column with dlt's ``hard_delete`` hint (true, or non-null)."""
    mask = None
    for name, hints in columns.items():
        if hints.get("hard_delete") and name in data.column_names:
            col = data.column(name)
            flag = pc.fill_null(col, False) if pa.types.is_boolean(col.type) else pc.is_valid(col)
            mask = flag if mask is None else pc.or_(mask, flag)
    return mask


def dedupe_last(data: pa.Table, keys: Sequence[str]) -> pa.Table:
    """Keep the last row per key (the newest version in load order)."""
    indexed = data.append_column(_ROW, pa.array(range(data.num_rows), pa.int64()))
    last = indexed.group_by(list(keys), use_threads=False).aggregate([(_ROW, "max")])
    rows = pc.sort_indices(last.column(f"{_ROW}_max"))
    return data.take(pc.take(last.column(f"{_ROW}_max"), rows))


def _key_range(keys: pa.Table) -> BooleanExpression:
    """Prune candidate files by the min/max of a single key column."""
    if keys.num_columns != 1:
        return AlwaysTrue()
    col = keys.column(0)
    if not (pa.types.is_integer(col.type) or pa.types.is_string(col.type) or pa.types.is_date(col.type)):
        return AlwaysTrue()
    bounds = pc.min_max(col)
    lo, hi = bounds["min"].as_py(), bounds["max"].as_py()
    if lo is None:
        return AlwaysTrue()
    name = keys.column_names[0]
    return And(GreaterThanOrEqual(name, lo), LessThanOrEqual(name, hi))


def _chunks(keys: pa.Table, size: int) -> Iterator[pa.Table]:
    for start in range(0, max(keys.num_rows, 1), size):
        yield keys.slice(start, size)


def _without_keys(existing: pa.Table, keys: pa.Table, names: list[str], chunk_rows: int) -> pa.Table:
    """Rows of ``existing`` whose key is not in ``keys`` (anti-join in chunks of keys)."""
    remaining = existing
    for chunk in _chunks(keys, chunk_rows):
        probe = remaining.select(names).append_column(_ROW, pa.array(range(remaining.num_rows), pa.int64()))
        keep = probe.join(chunk, names, join_type="left anti", use_threads=True).column(_ROW)
        remaining = remaining.take(pc.take(keep, pc.sort_indices(keep)))
    return remaining


def merge_into(
    tx: Transaction, table: Table, data: pa.Table, props: dict[str, str], event: FileEvent, chunk_rows: int
) -> None:
    """Upsert by primary key (last row per key wins) or delete-insert by merge key; rows
    flagged by a ``hard_delete`` column delete their key and are not inserted."""
    names = list(event.primary_key or event.merge_key)
    if event.primary_key:
        data = dedupe_last(data, names)
    mask = hard_delete_mask(data, event.columns)
    inserts = data.filter(pc.invert(mask)) if mask is not None else data
    keys = data.select(names).group_by(names, use_threads=False).aggregate([])
    counter = itertools.count(0)
    projected = table.schema()
    with tx.update_snapshot(snapshot_properties=props).overwrite() as producer:
        if table.current_snapshot() is not None:
            scan = table.scan(row_filter=_key_range(keys))
            reader = ArrowScan(table.metadata, table.io, projected, AlwaysTrue(), case_sensitive=True)
            for task in scan.plan_files():
                existing = reader.to_table([task])
                remaining = _without_keys(existing, keys, names, chunk_rows)
                if remaining.num_rows == existing.num_rows:
                    continue
                producer.delete_data_file(task.file)
                _write(tx, table, producer, remaining, counter)
        _write(tx, table, producer, inserts, counter)
