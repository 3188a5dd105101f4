"""``iceberg_adapter``: partition hints on a dlt resource.

Sets the column hints the commit path reads (``partition: true`` and
``x-partition-transform``), so the spec applies when the table is created. Transforms:
``identity``, ``year``, ``month``, ``day``, ``hour``, ``bucket[N]``, ``truncate[N]``; a
column given without one gets ``month`` (timestamp / date) or ``identity`` (anything else).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, cast

from dlt.common.schema.typing import TTableSchemaColumns
from dlt.destinations.utils import get_resource_for_adapter
from dlt.extract import DltResource

from ingester.partitioning import parse_transform

TRANSFORM_HINT = "x-partition-transform"

PartitionArg = str | Mapping[str, str | None] | Sequence[Any]


def _transform_of(spec: Any) -> tuple[str, str | None]:
    """(column, transform) of a column name, a ``(column, transform)`` pair or a dlt
    ``iceberg_partition`` spec (``source_column``, ``transform``, ``param_value``)."""
    if isinstance(spec, str):
        return spec, None
    if isinstance(spec, tuple) and len(spec) == 2:
        return str(spec[0]), spec[1]
    column = getattr(spec, "source_column", None)
    if column is None:
        raise ValueError(f"partition entry {spec!r} is not a column name, (column, transform) or partition spec")
    transform = str(spec.transform)
    if getattr(spec, "param_value", None) is not None:
        transform = f"{transform}[{spec.param_value}]"
    return str(column), transform


def partition_hints(partition: PartitionArg) -> dict[str, dict[str, Any]]:
    """Column hints for ``partition``; raises ValueError for an unknown transform."""
    if isinstance(partition, Mapping):
        entries = list(partition.items())
    elif isinstance(partition, str):
        entries = [(partition, None)]
    else:
        entries = [_transform_of(p) for p in partition]
    hints: dict[str, dict[str, Any]] = {}
    for column, transform in entries:
        hints[column] = {"partition": True}
        if transform is not None:
            parse_transform(transform)  # validate now, not at the first load
            hints[column][TRANSFORM_HINT] = transform.strip().lower()
    return hints


def iceberg_adapter(data: Any, partition: PartitionArg | None = None) -> DltResource:
    """Mark ``data`` (a resource, or raw data to wrap in one) for Iceberg partitioning.

    ``partition``: a column name, a sequence of column names / ``(column, transform)`` pairs /
    ``dlt`` ``iceberg_partition`` specs, or a mapping ``{column: transform}``. Returns the
    resource with the hints applied; raises ValueError when nothing is given or a transform
    is unknown.
    """
    if not partition:
        raise ValueError("iceberg_adapter needs `partition`")
    resource = get_resource_for_adapter(data)
    resource.apply_hints(columns=cast(TTableSchemaColumns, partition_hints(partition)))
    return resource
