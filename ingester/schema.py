"""dlt columns / arrow schemas <-> Iceberg schemas: normalisation, evolution, casting."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.exceptions import ResolveError
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema, promote

from ingester.errors import SchemaConflict
from ingester.iceberg_layer.schemas import arrow_to_iceberg

DLT_TYPES: dict[str, pa.DataType] = {
    "text": pa.string(),
    "bigint": pa.int64(),
    "double": pa.float64(),
    "bool": pa.bool_(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "date": pa.date32(),
    "time": pa.time64("us"),
    "decimal": pa.decimal128(38, 9),
    "wei": pa.decimal128(38, 0),
    "binary": pa.binary(),
    "json": pa.string(),
}


def _normalize_type(t: pa.DataType) -> pa.DataType:
    """Types Iceberg can store: us timestamps, signed ints, plain strings, no dictionaries."""
    if pa.types.is_dictionary(t):
        return _normalize_type(t.value_type)
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", tz="UTC" if t.tz else None)
    if pa.types.is_time(t):
        return pa.time64("us")
    if pa.types.is_unsigned_integer(t):
        return pa.int64() if t.bit_width < 64 else pa.decimal128(20, 0)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t) or pa.types.is_fixed_size_binary(t):
        return pa.binary()
    if pa.types.is_float16(t):
        return pa.float32()
    if pa.types.is_struct(t):
        return pa.struct([_normalize_field(f) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(_normalize_field(t.value_field))
    if pa.types.is_map(t):
        return pa.map_(_normalize_type(t.key_type), _normalize_field(t.item_field))
    return t


def _normalize_field(f: pa.Field, hint: Mapping[str, Any] | None = None) -> pa.Field:
    t = f.type
    if pa.types.is_null(t):
        t = DLT_TYPES.get(str((hint or {}).get("data_type")), pa.string())
    return pa.field(f.name, _normalize_type(t), nullable=True)


def normalize_schema(schema: pa.Schema, columns: Mapping[str, Mapping[str, Any]] | None = None) -> pa.Schema:
    """The arrow schema a table built from this file should have (all columns optional)."""
    cols = columns or {}
    return pa.schema([_normalize_field(f, cols.get(f.name)) for f in schema])


def to_iceberg(schema: pa.Schema) -> Schema:
    """Iceberg schema with fresh field ids for a (normalised) arrow schema."""
    return arrow_to_iceberg(schema)


def table_arrow_schema(schema: Schema) -> pa.Schema:
    return normalize_schema(schema_to_pyarrow(schema, include_field_ids=False))


def _lossless(src: pa.DataType, dst: pa.DataType) -> bool:
    """Casts that can never lose information (strict mode allows only these)."""
    if src.equals(dst) or pa.types.is_null(src):
        return True
    if pa.types.is_integer(src) and pa.types.is_integer(dst):
        return dst.bit_width >= src.bit_width and pa.types.is_signed_integer(dst)
    if pa.types.is_floating(src) and pa.types.is_floating(dst):
        return dst.bit_width >= src.bit_width
    if pa.types.is_decimal(src) and pa.types.is_decimal(dst):
        return dst.scale == src.scale and dst.precision >= src.precision
    if pa.types.is_integer(src) and pa.types.is_decimal(dst):
        return dst.precision - dst.scale >= 19
    if pa.types.is_timestamp(src) and pa.types.is_timestamp(dst):
        return True  # unit changes are checked per value by the safe cast
    return False


def evolution(table_schema: Schema, incoming: pa.Schema, source: str, strict: bool) -> pa.Schema | None:
    """Columns to add or promote so ``incoming`` fits; None when nothing changes.

    Raises ``SchemaConflict`` for a column whose type can neither be promoted in the table
    nor cast losslessly (strict) / safely (non-strict) on write.
    """
    table_arrow = table_arrow_schema(table_schema)
    incoming_ice = to_iceberg(incoming)
    changes: list[pa.Field] = []
    for field in incoming:
        if field.name not in table_arrow.names:
            changes.append(field)
            continue
        target = table_arrow.field(field.name).type
        if field.type.equals(target) or _lossless(field.type, target):
            continue
        current = table_schema.find_field(field.name).field_type
        try:
            promoted = promote(current, incoming_ice.find_field(field.name).field_type)
        except ResolveError:
            promoted = None
        if promoted is not None and promoted != current:
            changes.append(field)
        elif strict:
            raise SchemaConflict(source, field.name, f"{field.type} does not fit table type {target} without loss (strict casting)")
    return pa.schema(changes) if changes else None


def cast_to(table: pa.Table, target: pa.Schema, source: str, strict: bool) -> pa.Table:
    """Reorder, fill missing columns with nulls and cast ``table`` to ``target``.

    Raises ``SchemaConflict`` naming the column when a value cannot be converted.
    """
    arrays = []
    for field in target:
        if field.name not in table.column_names:
            arrays.append(pa.nulls(table.num_rows, field.type))
            continue
        col = table.column(field.name)
        if col.type.equals(field.type):
            arrays.append(col)
            continue
        if strict and not _lossless(_normalize_type(col.type), field.type):
            raise SchemaConflict(source, field.name, f"{col.type} into {field.type} may lose data (strict casting)")
        try:
            arrays.append(pc.cast(col, field.type, safe=True))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise SchemaConflict(source, field.name, f"cannot cast {col.type} to {field.type}: {exc}") from None
    extra = set(table.column_names) - set(target.names)
    if extra:
        raise SchemaConflict(source, sorted(extra)[0], "column is not in the table schema")
    return pa.Table.from_arrays(arrays, schema=target)
