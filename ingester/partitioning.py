"""dlt partition hints -> Iceberg ``PartitionSpec``, read as dlt-iceberg reads them.

A column hinted ``partition: true`` or ``x-partition: true`` is partitioned by its
``x-partition-transform`` (or ``partition_transform``) hint: ``identity``, ``year``,
``month``, ``day``, ``hour``, ``bucket[N]``, ``truncate[N]``. Without one, timestamp and date
columns use ``month`` and everything else ``identity``. The field is named by its
``x-partition-name`` (or ``partition_name``) hint, else ``<column>_<transform>``
(``ts_month``, ``region_identity``, ``user_id_bucket_16``, ``path_truncate_3``), field ids from
1000 in column order.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pyiceberg.partitioning import PartitionField, PartitionSpec
from pyiceberg.schema import Schema
from pyiceberg.transforms import (
    BucketTransform,
    DayTransform,
    HourTransform,
    IdentityTransform,
    MonthTransform,
    Transform,
    TruncateTransform,
    YearTransform,
)
from pyiceberg.types import DateType, TimestampType, TimestamptzType

from ingester.errors import SchemaConflict

PARTITION_HINT = "x-partition"
TRANSFORM_HINT = "x-partition-transform"
NAME_HINT = "x-partition-name"
PARTITION_HINTS = (PARTITION_HINT, "partition")
TRANSFORM_HINTS = (TRANSFORM_HINT, "partition_transform")
NAME_HINTS = (NAME_HINT, "partition_name")
_PARAM = re.compile(r"^(bucket|truncate)\[(\d+)\]$")
_SIMPLE: dict[str, type[Transform[Any, Any]]] = {
    "identity": IdentityTransform,
    "year": YearTransform,
    "month": MonthTransform,
    "day": DayTransform,
    "hour": HourTransform,
}
PARTITION_FIELD_ID_START = 1000


def parse_transform(text: str) -> Transform[Any, Any]:
    """``"bucket[16]"`` -> ``BucketTransform(16)``; raises ValueError for unknown names."""
    name = text.strip().lower()
    if name in _SIMPLE:
        return _SIMPLE[name]()
    m = _PARAM.match(name)
    if m:
        n = int(m.group(2))
        if n <= 0:
            raise ValueError(f"transform {text!r} needs a positive width")
        return BucketTransform(n) if m.group(1) == "bucket" else TruncateTransform(n)
    raise ValueError(f"unknown partition transform {text!r} (identity, year, month, day, hour, bucket[N], truncate[N])")


def _field_name(column: str, transform: Transform[Any, Any]) -> str:
    if isinstance(transform, BucketTransform):
        return f"{column}_bucket_{transform.num_buckets}"
    if isinstance(transform, TruncateTransform):
        return f"{column}_truncate_{transform.width}"
    return f"{column}_{transform}"


def _first(hints: Mapping[str, Any], names: tuple[str, ...]) -> Any:
    return next((hints[k] for k in names if hints.get(k)), None)


def partition_columns(columns: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, str | None, str | None]]:
    """(column, transform hint or None, field name hint or None) for every partitioned column, in order."""
    return [(name, _first(hints, TRANSFORM_HINTS), _first(hints, NAME_HINTS))
            for name, hints in columns.items() if _first(hints, PARTITION_HINTS)]


def spec_for(schema: Schema, columns: Mapping[str, Mapping[str, Any]], table: str = "") -> PartitionSpec:
    """Partition spec for a new table; raises ``SchemaConflict`` for a bad hint."""
    fields = []
    for i, (name, hint, field_name) in enumerate(partition_columns(columns)):
        try:
            source = schema.find_field(name)
        except ValueError:
            raise SchemaConflict(table, name, "partition column is not in the data") from None
        if hint is None:
            temporal = isinstance(source.field_type, (TimestampType, TimestamptzType, DateType))
            hint = "month" if temporal else "identity"
        try:
            transform = parse_transform(str(hint))
        except ValueError as exc:
            raise SchemaConflict(table, name, str(exc)) from None
        if not transform.can_transform(source.field_type):
            raise SchemaConflict(table, name, f"transform {hint} does not apply to {source.field_type}")
        fields.append(
            PartitionField(
                source_id=source.field_id,
                field_id=PARTITION_FIELD_ID_START + i,
                transform=transform,
                name=str(field_name or _field_name(name, transform)),
            )
        )
    return PartitionSpec(*fields)
