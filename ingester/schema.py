"""dlt columns / arrow schemas <-> Iceberg schemas: normalisation, evolution, casting."""

from __future__ import annotations

import functools
from collections.abc import Collection, Mapping
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema

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


class _Exact:
    """A schema as a key that tells apart metadata too (``pa.Schema.__eq__`` ignores it)."""

    __slots__ = ("schema", "_hash")

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._hash = hash(schema)

    def __hash__(self) -> int:
        return self._hash

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Exact) and self.schema.equals(other.schema, check_metadata=True)


@functools.lru_cache(maxsize=256)
def _pooled(key: _Exact) -> pa.Schema:
    return key.schema


def interned(schema: pa.Schema) -> pa.Schema:
    """One object for equal schemas (metadata included): a batch's files mostly share a schema,
    and each parsed one is 2 KB of arrow memory for 10 columns. Read only, as all schemas."""
    return _pooled(_Exact(schema))


def to_iceberg(schema: pa.Schema) -> Schema:
    """Iceberg schema with fresh field ids for a (normalised) arrow schema."""
    return arrow_to_iceberg(schema)


def table_arrow_schema(schema: Schema) -> pa.Schema:
    return normalize_schema(schema_to_pyarrow(schema, include_field_ids=False))


def _lossless(src: pa.DataType, dst: pa.DataType) -> bool:
    """Casts of primitive values that can never lose information (strict mode allows only these)."""
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


def _promotable(have: pa.DataType, new: pa.DataType) -> bool:
    """Iceberg's type promotions, the only changes of a column's type: int -> long,
    float -> double, decimal(P, S) -> decimal(P', S) with P' > P."""
    if pa.types.is_int32(have):
        return pa.types.is_int64(new)
    if pa.types.is_float32(have):
        return pa.types.is_float64(new)
    if pa.types.is_decimal(have) and pa.types.is_decimal(new):
        return new.scale == have.scale and have.precision < new.precision <= 38
    return False


def _is_list(t: pa.DataType) -> bool:
    return pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t)


def _is_nested(t: pa.DataType) -> bool:
    return pa.types.is_struct(t) or _is_list(t) or pa.types.is_map(t)


def _grown(have: pa.DataType, new: pa.DataType, path: str, source: str, strict: bool) -> pa.DataType | None:
    """The table's type ``have`` grown so values of ``new`` fit (struct fields added, also
    inside lists and map values; types promoted at any depth); None when ``have`` holds them
    already. Raises ``SchemaConflict`` naming the column path (``st.b``,
    ``items.element.price``, ``attrs.value.x``) of a value the table cannot hold."""
    if pa.types.is_struct(have) and pa.types.is_struct(new):
        fields, changed = [], False
        for f in have:
            i = new.get_field_index(f.name)
            grown = _grown(f.type, new.field(i).type, f"{path}.{f.name}", source, strict) if i >= 0 else None
            fields.append(f if grown is None else f.with_type(grown))
            changed = changed or grown is not None
        added = [f for f in new if have.get_field_index(f.name) < 0]
        return pa.struct(fields + added) if changed or added else None
    if _is_list(have) and _is_list(new):
        grown = _grown(have.value_type, new.value_type, f"{path}.element", source, strict)
        return None if grown is None else pa.list_(have.value_field.with_type(grown))
    if pa.types.is_map(have) and pa.types.is_map(new):
        if _grown(have.key_type, new.key_type, f"{path}.key", source, strict) is not None:
            raise SchemaConflict(source, f"{path}.key", f"map keys {new.key_type} cannot change the table's {have.key_type}")
        grown = _grown(have.item_type, new.item_type, f"{path}.value", source, strict)
        return None if grown is None else pa.map_(have.key_field, have.item_field.with_type(grown))
    if _is_nested(have) or _is_nested(new):
        raise SchemaConflict(source, path, f"{new} does not fit table type {have}")
    if _lossless(new, have):
        return None
    if _promotable(have, new):
        return new
    if strict:
        raise SchemaConflict(source, path, f"{new} does not fit table type {have} without loss (strict casting)")
    return None  # the safe cast on write checks every value


def evolution(
    table: pa.Schema, incoming: pa.Schema, source: str, strict: bool, null_columns: Collection[str] = ()
) -> pa.Schema | None:
    """The columns to add or change in ``table`` (a table's arrow schema) so ``incoming``
    fits, each with its grown type (the table's type plus new nested fields and promotions,
    nothing else); None when nothing changes. ``null_columns`` hold no value, so they fit
    any existing column. Nothing is dropped silently: raises ``SchemaConflict`` naming the
    column path of a value that can neither be evolved into the table nor cast losslessly
    (strict) / safely (non-strict) on write.
    """
    changes: list[pa.Field] = []
    for field in incoming:
        if field.name not in table.names:
            changes.append(field)
            continue
        if field.name in null_columns:
            continue
        grown = _grown(table.field(field.name).type, field.type, field.name, source, strict)
        if grown is not None:
            changes.append(field.with_type(grown))
    return pa.schema(changes) if changes else None


def evolved(table: pa.Schema, change: pa.Schema) -> pa.Schema:
    """``table`` with the columns of ``change`` (an ``evolution``) replaced or added."""
    fields = [change.field(f.name) if f.name in change.names else f for f in table]
    return pa.schema(fields + [f for f in change if f.name not in table.names])


def _unfit(src: pa.DataType, dst: pa.DataType, path: str, strict: bool) -> tuple[str, str] | None:
    """(column path, reason) of the first value of type ``src`` that a cast to ``dst`` would
    drop (a nested field the table lacks), cannot convert, or (strict) may change."""
    if pa.types.is_struct(src) and pa.types.is_struct(dst):
        for f in src:
            i = dst.get_field_index(f.name)
            if i < 0:
                return f"{path}.{f.name}", "field is not in the table schema"
            if problem := _unfit(f.type, dst.field(i).type, f"{path}.{f.name}", strict):
                return problem
        return None
    if _is_list(src) and _is_list(dst):
        return _unfit(src.value_type, dst.value_type, f"{path}.element", strict)
    if pa.types.is_map(src) and pa.types.is_map(dst):
        return (_unfit(src.key_type, dst.key_type, f"{path}.key", strict)
                or _unfit(src.item_type, dst.item_type, f"{path}.value", strict))
    if _is_nested(src) or _is_nested(dst):
        return path, f"cannot cast {src} to {dst}"
    if strict and not _lossless(src, dst):
        return path, f"{src} into {dst} may lose data (strict casting)"
    return None


def _failing_path(values: pa.Array, dst: pa.DataType, path: str) -> str:
    """The path of the nested leaf whose values do not cast to ``dst`` (for the error)."""
    t = values.type
    children: list[tuple[pa.Array, pa.DataType, str]] = []
    if pa.types.is_struct(t) and pa.types.is_struct(dst):
        children = [(child, dst.field(f.name).type, f"{path}.{f.name}")
                    for f, child in zip(t, values.flatten()) if dst.get_field_index(f.name) >= 0]
    elif _is_list(t) and _is_list(dst):
        children = [(values.flatten(), dst.value_type, f"{path}.element")]
    elif pa.types.is_map(t) and pa.types.is_map(dst):
        children = [(values.keys, dst.key_type, f"{path}.key"), (values.items, dst.item_type, f"{path}.value")]
    for child, child_type, child_path in children:
        try:
            pc.cast(child, child_type, safe=True)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return _failing_path(child, child_type, child_path)
    return path


def _cast_column(col: pa.ChunkedArray, dst: pa.DataType, path: str, source: str) -> pa.ChunkedArray:
    """``col`` safely cast to ``dst``; raises ``SchemaConflict`` naming the failing path."""
    try:
        return pc.cast(col, dst, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    # arrow casts the hidden child values of a sliced nested array too: retry on compact chunks
    compact = pa.chunked_array([pa.concat_arrays([c]) for c in col.chunks], col.type)
    try:
        return pc.cast(compact, dst, safe=True)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        where = _failing_path(compact.combine_chunks(), dst, path)
        raise SchemaConflict(source, where, f"cannot cast {col.type} to {dst}: {exc}") from None


def cast_to(table: pa.Table, target: pa.Schema, source: str, strict: bool) -> pa.Table:
    """Reorder, fill missing columns (and missing nested fields) with nulls and cast
    ``table`` to ``target``.

    Raises ``SchemaConflict`` naming the column path when a value cannot be converted, or
    would be dropped (a nested field the target lacks): nothing is lost silently.
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
        if col.null_count == len(col):  # no value to lose, whatever the type
            arrays.append(pa.nulls(len(col), field.type))
            continue
        if problem := _unfit(_normalize_type(col.type), _normalize_type(field.type), field.name, strict):
            raise SchemaConflict(source, *problem)
        arrays.append(_cast_column(col, field.type, field.name, source))
    extra = set(table.column_names) - set(target.names)
    if extra:
        raise SchemaConflict(source, sorted(extra)[0], "column is not in the table schema")
    return pa.Table.from_arrays(arrays, schema=target)
