"""``iceberg_adapter``, ``iceberg_partition`` and ``PartitionTransform``: partition hints on a
dlt resource, the way dlt-iceberg 0.6.4 spells them.

The adapter sets the column hints the commit path reads when it creates a table
(``x-partition: true``, ``x-partition-transform``, ``x-partition-name``); an existing table
whose spec differs evolves to the hinted one (``ingester.commit.layout``). Transforms: ``identity``, ``year``, ``month``, ``day``, ``hour``,
``bucket[N]``, ``truncate[N]``; a column given without one gets ``month`` (timestamp / date)
or ``identity`` (anything else).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import dlt
from dlt.common.schema.typing import TTableSchemaColumns
from dlt.extract import DltResource, DltSource

from ingester.events import BRANCH_HINT, PROPERTIES_HINT
from ingester.settings import BRANCH_PATTERN
from ingester.partitioning import NAME_HINT, PARTITION_HINT, TRANSFORM_HINT, parse_transform


@dataclass(frozen=True, slots=True)
class PartitionTransform:
    """One partition field: ``column``, ``transform`` (``identity``, ``month``, ``bucket``...),
    its ``param`` (N of ``bucket[N]`` / ``truncate[N]``) and an optional field ``name``."""

    column: str
    transform: str
    param: int | None = None
    name: str | None = None

    def to_hint_value(self) -> str:
        """The ``x-partition-transform`` value: ``"bucket[10]"``, ``"month"``."""
        return f"{self.transform}[{self.param}]" if self.param is not None else self.transform


def _positive(what: str, value: int) -> int:
    if value <= 0:
        raise ValueError(f"{what} must be positive, got {value}")
    return value


def _plain(transform: str) -> Callable[..., PartitionTransform]:
    def spec(column: str, name: str | None = None) -> PartitionTransform:
        return PartitionTransform(column, transform, name=name)

    spec.__doc__ = f"``{transform}`` of ``column``; ``name``: the partition field's name."
    return staticmethod(spec)  # type: ignore[return-value]


class iceberg_partition:
    """Partition specs for ``iceberg_adapter`` (as dlt-iceberg: ``identity``, ``year``,
    ``month``, ``day``, ``hour`` take ``(column, name=None)``; ``bucket`` and ``truncate``
    take the number first; ``name`` is the partition field's name)."""

    identity = _plain("identity")
    year = _plain("year")
    month = _plain("month")
    day = _plain("day")
    hour = _plain("hour")

    @staticmethod
    def bucket(num_buckets: int, column: str, name: str | None = None) -> PartitionTransform:
        return PartitionTransform(column, "bucket", _positive("num_buckets", num_buckets), name)

    @staticmethod
    def truncate(width: int, column: str, name: str | None = None) -> PartitionTransform:
        return PartitionTransform(column, "truncate", _positive("width", width), name)


PartitionEntry = str | PartitionTransform | tuple[str, str] | Any
PartitionArg = PartitionEntry | Mapping[str, str | None] | Sequence[PartitionEntry]


def _spec_of(entry: Any) -> PartitionTransform:
    """A column name, a ``(column, transform)`` pair, a ``PartitionTransform`` or dlt's own
    ``iceberg_partition`` spec (``source_column``, ``transform``, ``param_value``, ``partition_field``)."""
    if isinstance(entry, PartitionTransform):
        return entry
    if isinstance(entry, str):
        return PartitionTransform(entry, "")
    if isinstance(entry, tuple) and len(entry) == 2:
        return PartitionTransform(str(entry[0]), str(entry[1]))
    column = getattr(entry, "source_column", None)
    if column is None:
        raise ValueError(f"partition entry {entry!r} is not a column name, (column, transform) or partition spec")
    return PartitionTransform(str(column), str(entry.transform), getattr(entry, "param_value", None),
                              getattr(entry, "partition_field", None))


def _entries(partition: PartitionArg) -> list[PartitionTransform]:
    if isinstance(partition, Mapping):
        return [PartitionTransform(column, transform or "") for column, transform in partition.items()]
    if isinstance(partition, (str, PartitionTransform, tuple)) or hasattr(partition, "source_column"):
        return [_spec_of(partition)]
    return [_spec_of(p) for p in cast(Sequence[Any], partition)]


def partition_hints(partition: PartitionArg) -> dict[str, dict[str, Any]]:
    """Column hints for ``partition``; raises ValueError for an unknown transform. A column
    given without a transform gets none (its type decides when the table is created)."""
    hints: dict[str, dict[str, Any]] = {}
    for spec in _entries(partition):
        column = hints.setdefault(spec.column, {"name": spec.column})
        column[PARTITION_HINT] = True
        transform = spec.to_hint_value().strip().lower() if spec.transform else ""
        if transform:
            parse_transform(transform)  # validate now, not at the first load
            column[TRANSFORM_HINT] = transform
        if spec.name:
            column[NAME_HINT] = spec.name
    return hints


def _resource_for(data: Any) -> DltResource:
    """``data`` as a resource: a resource, a source with exactly one selected resource, or raw
    data (named ``content`` when it has no ``__name__``)."""
    if isinstance(data, DltResource):
        return data
    if isinstance(data, DltSource):
        resources = list(data.selected_resources.values())
        if len(resources) != 1:
            raise ValueError("iceberg_adapter takes a resource, raw data or a source with exactly one selected resource")
        return cast(DltResource, resources[0])
    if hasattr(data, "__name__"):
        return cast(DltResource, dlt.resource(data))
    return cast(DltResource, dlt.resource(data, name="content"))


def iceberg_adapter(
    data: Any, partition: PartitionArg | None = None, branch: str | None = None,
    table_properties: Mapping[str, str] | None = None,
) -> DltResource:
    """Mark ``data`` (a resource, a one-resource source, or raw data to wrap) for Iceberg
    partitioning and return the resource.

    ``branch``: the table branch the resource's loads commit to (write-audit-publish: created
    from ``main`` when missing, published with ``ingester branch publish``); a table hint
    (``x-iceberg-branch``) on the resource's table; its nested tables follow it, dlt's own
    tables stay on ``main``. ``table_properties``: Iceberg table properties of the resource's
    table and its nested tables (``x-iceberg-table-properties``), set on create and whenever
    they differ (``write.parquet.compression-codec``, ``write.target-file-size-bytes``...).

    ``partition``: a column name, a ``PartitionTransform`` (``iceberg_partition.month("ts",
    "event_month")``), a ``(column, transform)`` pair, a list of these, or a mapping
    ``{column: transform}``. None or empty: the resource unchanged. Raises ValueError for an
    unknown transform.
    """
    resource = _resource_for(data)
    if branch is not None:
        if not re.match(BRANCH_PATTERN, branch):
            raise ValueError(f"branch {branch!r} is not a valid branch name")
        resource.apply_hints(additional_table_hints={BRANCH_HINT: branch})
    if table_properties:
        resource.apply_hints(additional_table_hints={PROPERTIES_HINT: {str(k): str(v) for k, v in table_properties.items()}})
    if partition is None or (not isinstance(partition, (str, PartitionTransform)) and not partition):
        return resource
    resource.apply_hints(columns=cast(TTableSchemaColumns, partition_hints(partition)))
    return resource
