"""Arrow schemas -> Iceberg schemas, with fresh field ids."""

from __future__ import annotations

import pyarrow as pa
from pyiceberg.io.pyarrow import _ConvertToIcebergWithoutIDs, visit_pyarrow
from pyiceberg.schema import Schema, assign_fresh_schema_ids


def arrow_to_iceberg(schema: pa.Schema) -> Schema:
    """Iceberg schema with fresh field ids for an arrow schema (ns timestamps become us)."""
    converted = visit_pyarrow(schema, _ConvertToIcebergWithoutIDs(downcast_ns_timestamp_to_us=True))
    return assign_fresh_schema_ids(converted)
