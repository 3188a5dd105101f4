"""What a case's table must hold, computed from what was fed in (never read back from the table).

The dispositions as the README states them: append keeps every load; replace keeps the last load;
merge upsert keeps, per primary key, the last row of the newest load that has the key; merge
delete-insert drops the rows whose merge key a load has and inserts all of that load's rows.
Types as Iceberg stores them (`table_type`): signed integers, microsecond timestamps, plain
strings and binaries, an all-null column as a string; dlt-fed names as dlt's `snake_case`
naming convention spells them.
"""

from __future__ import annotations

import operator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from dlt.common.normalizers.naming.snake_case import NamingConvention

from .canonical import canonical_rows, summarize
from .cases import APPEND, DAEMON, DELETE_INSERT, REPLACE, UPSERT, Case

_SNAKE = NamingConvention()


def table_type(t: pa.DataType) -> pa.DataType:
    """The Arrow type of the column an Iceberg table stores for a source column of type `t`."""
    if pa.types.is_null(t):
        return pa.string()
    if pa.types.is_unsigned_integer(t):
        return pa.int64() if t.bit_width < 64 else pa.decimal128(20, 0)
    if pa.types.is_timestamp(t):
        return pa.timestamp("us", "UTC" if t.tz else None)
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return pa.string()
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return pa.binary()
    if pa.types.is_struct(t):
        return pa.struct([f.with_type(table_type(f.type)) for f in t])
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return pa.list_(table_type(t.value_type))
    if pa.types.is_map(t):
        return pa.map_(table_type(t.key_type), table_type(t.item_type))
    return t


_PRIMITIVE = {
    pa.bool_(): "boolean", pa.int32(): "int", pa.int64(): "long", pa.float32(): "float", pa.float64(): "double",
    pa.date32(): "date", pa.time64("us"): "time", pa.timestamp("us"): "timestamp", pa.timestamp("us", "UTC"): "timestamptz",
    pa.string(): "string", pa.binary(): "binary",
}  # fmt: skip


def iceberg_type(t: pa.DataType) -> str:
    """The canonical (Iceberg) name of a `table_type`, spelled as `typenames.canonical` spells it."""
    if t in _PRIMITIVE:
        return _PRIMITIVE[t]
    if pa.types.is_decimal(t):
        return f"decimal({t.precision}, {t.scale})"
    if pa.types.is_list(t):
        return f"list<{iceberg_type(t.value_type)}>"
    if pa.types.is_map(t):
        return f"map<{iceberg_type(t.key_type)}, {iceberg_type(t.item_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ", ".join(f"{f.name}: {iceberg_type(f.type)}" for f in t) + ">"
    raise ValueError(f"no Iceberg type for {t}")


def _conform(array: pa.Array, t: pa.DataType) -> pa.Array:
    """`array` as type `t`, a struct gaining the fields it lacks as nulls (a field added later)."""
    if pa.types.is_struct(t) and pa.types.is_struct(array.type):
        present = {array.type.field(i).name: i for i in range(array.type.num_fields)}
        children = [
            _conform(array.field(present[f.name]), f.type) if f.name in present else pa.nulls(len(array), f.type) for f in t
        ]
        return pa.StructArray.from_arrays(children, fields=list(t), mask=array.is_null())
    return array.cast(t)


def cast_to(table: pa.Table, schema: pa.Schema) -> pa.Table:
    """`table` as `schema`: columns it lacks as nulls, struct fields it lacks as nulls."""
    arrays = [
        _conform(table.column(f.name).combine_chunks(), f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(arrays, schema=schema)


def _without_keys(table: pa.Table, key: str, keys: pa.Array) -> pa.Table:
    return table.filter(pc.invert(pc.fill_null(pc.is_in(table.column(key), value_set=keys), False)))


def last_per_key(table: pa.Table, key: str) -> pa.Table:
    """The last row of each key, in row order (an upsert's rows of one load)."""
    last = {k: i for i, k in enumerate(table.column(key).to_pylist())}
    return table.take(sorted(last.values()))


def apply_loads(case: Case, schema: pa.Schema) -> pa.Table:
    """The rows after every load of `case`, in the source names, cast to `schema`."""
    current = schema.empty_table()
    for load in case.loads:
        rows = pa.concat_tables([cast_to(f, schema) for f in load.files])
        if case.disposition == APPEND:
            current = pa.concat_tables([current, rows])
        elif case.disposition == REPLACE:
            current = rows
        else:
            assert case.key is not None and case.strategy in (UPSERT, DELETE_INSERT)
            if case.strategy == UPSERT:
                rows = last_per_key(rows, case.key)
            current = pa.concat_tables([_without_keys(current, case.key, rows.column(case.key).combine_chunks()), rows])
    return current


def column_name(case: Case, name: str) -> str:
    """The table's name of source column `name`: as fed to the daemon, dlt's spelling otherwise."""
    return name if case.mode == DAEMON else _SNAKE.normalize_identifier(name)


_OPS = {"==": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt, ">=": operator.ge}


@dataclass(frozen=True)
class Expected:
    """The truth for one table: its rows (canonical), per-column hash and type, and the filter's count."""

    table: pa.Table
    columns: dict[str, dict[str, str]]
    types: dict[str, str]
    rows: list[dict[str, Any]]
    filtered_rows: int

    @property
    def num_rows(self) -> int:
        return self.table.num_rows


def table_schema(case: Case, loads: int | None = None) -> pa.Schema:
    """The table's schema after its first `loads` loads (all by default), in the source names."""
    source = pa.unify_schemas([load.schema for load in case.loads[:loads]], promote_options="permissive")
    return pa.schema([pa.field(f.name, table_type(f.type)) for f in source])


def expected(case: Case) -> Expected:
    schema = table_schema(case)
    rows = apply_loads(case, schema)
    table = rows.rename_columns([column_name(case, n) for n in rows.column_names])
    column = table.column(column_name(case, case.filter.column))
    value = pa.scalar(case.filter.value).cast(column.type)
    matched = _OPS[case.filter.op](pc.field(column_name(case, case.filter.column)), value)
    return Expected(
        table=table,
        columns=summarize(table),
        types={f.name: iceberg_type(f.type) for f in table.schema},
        rows=canonical_rows(table),
        filtered_rows=table.filter(matched).num_rows,
    )
