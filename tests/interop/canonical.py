"""Engine-independent content hashes of an Arrow table (pyarrow + stdlib only: every reader venv imports it).

Each column becomes a list of canonical JSON values: timestamps (with or without zone) as epoch
microseconds, dates as days since epoch, times as microseconds since midnight, decimals as plain
strings, binary as hex, floats as repr with NaN/Infinity/-Infinity spelled out, maps as key-sorted
[key, value] lists, structs as objects, lists as lists, nulls as null. Rows are sorted by the canonical
JSON of the whole row (columns in name order), then each column is hashed in that row order, so equal
hashes mean equal values in the same rows, whatever order the engine returned the rows in.
"""

from __future__ import annotations

import hashlib
import json
import math
from decimal import Decimal
from typing import Any

import pyarrow as pa


def _plain(t: pa.DataType) -> pa.DataType:
    """The type to cast to first: one spelling per logical type, temporal values in microseconds."""
    if pa.types.is_dictionary(t):
        return _plain(t.value_type)
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", t.tz)
    if pa.types.is_date(t):
        return pa.date32()
    if pa.types.is_time(t):
        return pa.time64("us")
    if pa.types.is_duration(t):
        return pa.duration("us")
    if pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_binary(t) or pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_fixed_size_binary(t):
        return pa.binary()
    if pa.types.is_map(t):
        return pa.map_(_plain(t.key_type), pa.field("value", _plain(t.item_type)))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_plain(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t) or pa.types.is_list_view(t):
        return pa.list_(_plain(t.value_type))
    return t


def _integral(t: pa.DataType) -> pa.DataType:
    """The type to cast to second (from a `_plain` type): temporal values as plain integers."""
    if pa.types.is_date(t):
        return pa.int32()
    if pa.types.is_temporal(t):
        return pa.int64()
    if pa.types.is_map(t):
        return pa.map_(_integral(t.key_type), pa.field("value", _integral(t.item_type)))
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(_integral(f.type)) for f in t])
    if pa.types.is_list(t):
        return pa.list_(_integral(t.value_type))
    return t


def _json(value: Any) -> Any:
    """A Python value from `to_pylist` (temporal values already integers) as canonical JSON."""
    if isinstance(value, float):
        if math.isnan(value):
            return "NaN"
        if math.isinf(value):
            return "Infinity" if value > 0 else "-Infinity"
        return value
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, dict):
        return {k: _json(v) for k, v in value.items()}
    if isinstance(value, list):
        items = [_json(v) for v in value]
        if value and isinstance(value[0], tuple):  # a map: entries in key order
            items.sort(key=_dumps)
        return items
    if isinstance(value, tuple):  # a map entry
        return [_json(v) for v in value]
    if value is None or isinstance(value, (str, int)):
        return value
    return str(value)  # anything else (a UUID, say) by its text


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False, separators=(",", ":"))


def column_values(column: pa.ChunkedArray | pa.Array) -> list[Any]:
    """The canonical JSON values of one column, in its row order."""
    plain = _plain(column.type)
    return [_json(v) for v in column.cast(plain, safe=False).cast(_integral(plain)).to_pylist()]


def canonical_rows(table: pa.Table) -> list[dict[str, Any]]:
    """The table's rows as canonical JSON objects, sorted by their canonical JSON."""
    names = sorted(table.column_names)
    columns = [column_values(table.column(n)) for n in names]
    rows = [dict(zip(names, row)) for row in zip(*columns)]
    return sorted(rows, key=lambda r: _dumps([r[n] for n in names]))


def summarize(table: pa.Table, types: dict[str, str] | None = None) -> dict[str, dict[str, str]]:
    """Per column: its type string (the engine's when given, else Arrow's) and its content hash."""
    rows = canonical_rows(table)
    out = {}
    for field in table.schema:
        digest = hashlib.sha256(_dumps([r[field.name] for r in rows]).encode()).hexdigest()[:16]
        out[field.name] = {"type": (types or {}).get(field.name, str(field.type)), "hash": digest}
    return out
