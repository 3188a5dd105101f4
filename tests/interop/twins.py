"""A case's *twin*: the same loads replayed by plain pyiceberg (no ingester code), so a reader's
disagreement that shows on the twin too belongs to the reader (or to pyiceberg's writer).

The twin has the built table's partition spec and goes through the same history: the first load
is appended; each later one evolves the schema (`union_by_name`) when it brings new columns or
struct fields, then is appended (append), `overwrite`s (replace), or deletes its keys and is
appended (merge; upsert keeps the last row per key of the load).
"""

from __future__ import annotations

from typing import Any

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.expressions import In
from pyiceberg.table import StaticTable
from pyiceberg.transforms import Transform

from .build import Built
from .cases import APPEND, REPLACE, UPSERT, Case
from .expected import cast_to, column_name, last_per_key, table_schema

NAMESPACE = "twins"

SpecFields = list[tuple[str, Transform[Any, Any], str]]


def partition_fields(built: Built) -> SpecFields:
    """(source column, transform, partition field name) of the built table's current spec."""
    assert built.metadata_location is not None
    table = StaticTable.from_metadata(built.metadata_location, properties=built.s3.pyiceberg_properties() if built.s3 else {})
    schema = table.schema()
    return [(str(schema.find_column_name(f.source_id)), f.transform, f.name) for f in table.spec().fields]


def _renamed(case: Case, schema: pa.Schema) -> pa.Schema:
    return pa.schema([f.with_name(column_name(case, f.name)) for f in schema])


def write_twin(catalog: Catalog, case: Case, spec: SpecFields) -> str:
    """Replay `case`'s loads into a new table `twins.<case>` of `catalog`, partitioned by `spec`;
    returns its metadata location."""
    table = None
    for k, load in enumerate(case.loads):
        schema = table_schema(case, k + 1)
        rows = pa.concat_tables([cast_to(f, schema) for f in load.files])
        rows = rows.rename_columns([column_name(case, n) for n in rows.column_names])
        if table is None:
            table = catalog.create_table((NAMESPACE, case.table), schema=rows.schema)
            if spec:
                with table.update_spec() as update:
                    for column, transform, name in spec:
                        update.add_field(column, transform, name)
        elif schema != table_schema(case, k):
            with table.update_schema() as update:
                update.union_by_name(_renamed(case, schema))
        if k == 0 or case.disposition == APPEND:
            table.append(rows)
        elif case.disposition == REPLACE:
            table.overwrite(rows)
        else:
            key = column_name(case, str(case.key))
            if case.strategy == UPSERT:
                rows = last_per_key(rows, key)
            table.delete(In(key, set(rows.column(key).to_pylist())))  # type: ignore[call-arg]  # pydantic plugin misreads __init__
            table.append(rows)
    assert table is not None
    return table.metadata_location
