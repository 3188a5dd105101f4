"""The table's layout follows the hints: the partition spec evolves when a batch's partition
hints ask for another one, the sort order is the one the sort hints name, and the table
properties are those of the settings (``apply_properties``).

A batch whose files carry partition hints (``x-partition`` / ``partition`` column hints, the
dlt adapter's) that differ from the table's current spec evolves the spec with pyiceberg's
``update_spec`` before the commit: the fields no longer hinted are removed, the new ones added,
in one metadata commit. Old data files keep the spec they were written with (every reader plans
them by their own spec); new files get the new one. Files without partition hints leave the
spec alone (an event without hints never unpartitions a table).

Sort order: the table's ``commit.sort_orders`` terms, else the columns hinted ``x-sort`` (``true``
/ ``"asc"`` / ``"desc"``) or dlt's ``sort`` (``true``) in column order, become the table's sort
order (``update_sort_order``, nulls last); the rewrite path and compaction sort what they write by it and mark the files with its
id (``ingester.iceberg_layer.datafiles.DataFileWriter``). Files without sort hints leave it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

from typing import Any

from pyiceberg.partitioning import PartitionSpec
from pyiceberg.table import Table
from pyiceberg.table.sorting import SortDirection
from pyiceberg.transforms import IdentityTransform

from ingester.commit.source_files import SourceFile
from ingester.errors import SchemaConflict
from ingester.partitioning import partition_columns, spec_for

log = logging.getLogger(__name__)


def _fields(spec: PartitionSpec) -> dict[tuple[int, str], str]:
    """(source field id, transform) -> field name of each field (void fields of v1 left out)."""
    return {(f.source_id, str(f.transform)): f.name for f in spec.fields if str(f.transform) != "void"}


def hinted_spec(table: Table, files: Sequence[SourceFile]) -> PartitionSpec | None:
    """The spec the first file with partition hints asks for (None: no file has any)."""
    hinted = next((f for f in files if partition_columns(f.item.event.columns)), None)
    if hinted is None:
        return None
    return spec_for(table.schema(), hinted.item.event.columns, ".".join(table.name()))


def evolve_partitioning(table: Table, files: Sequence[SourceFile]) -> bool:
    """Make the table's spec the one the files' hints ask for; True when it changed (``table``
    is updated). Call after the schema evolved (hinted columns exist). Raises ``SchemaConflict``
    for a hint that fits no column, ``CommitFailedException`` on a concurrent change (retry)."""
    wanted = hinted_spec(table, files)
    if wanted is None:
        return False
    have, want = _fields(table.spec()), _fields(wanted)
    if have == want:
        return False
    with table.update_spec() as update:
        for key, name in have.items():
            if key not in want:
                update.remove_field(name)
        for (source_id, _), name in want.items():
            field = next(f for f in wanted.fields if f.source_id == source_id and f.name == name)
            if (source_id, str(field.transform)) not in have:
                update.add_field(table.schema().find_column_name(source_id) or "", field.transform, name)
    log.info("evolved the partition spec of %s to spec %d: %s", ".".join(table.name()), table.spec().spec_id, table.spec())
    return True


SORT_HINTS = ("x-sort", "sort")


def _direction(value: Any) -> SortDirection | None:
    if value is True or (isinstance(value, str) and value.lower() in ("asc", "true")):
        return SortDirection.ASC
    if isinstance(value, str) and value.lower() == "desc":
        return SortDirection.DESC
    return None


def sort_columns(columns: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, SortDirection]]:
    """(column, direction) of each sort-hinted column, in column order."""
    out = []
    for name, hints in columns.items():
        direction = next((d for d in (_direction(hints.get(k)) for k in SORT_HINTS) if d is not None), None)
        if direction is not None:
            out.append((name, direction))
    return out


def configured_columns(terms: Sequence[str]) -> list[tuple[str, SortDirection]]:
    """(column, direction) of ``commit.sort_orders`` terms (``"ts"``, ``"ts asc"``, ``"ts desc"``;
    checked by the settings)."""
    out = []
    for term in terms:
        name, _, direction = term.strip().partition(" ")
        out.append((name, SortDirection.DESC if direction.strip().lower() == "desc" else SortDirection.ASC))
    return out


def evolve_sort_order(table: Table, files: Sequence[SourceFile], configured: Sequence[str] = ()) -> bool:
    """Make the table's sort order the ``configured`` one (``commit.sort_orders``: the operator's
    choice wins, so hints and settings never take turns), else the one the first file with sort
    hints names; True when it changed. Raises ``SchemaConflict`` for a sort column the table lacks."""
    hinted = next((f for f in files if sort_columns(f.item.event.columns)), None)
    if configured and files:
        wanted, where = configured_columns(configured), f"{files[0].describe()} (commit.sort_orders)"
    elif hinted is not None:
        wanted, where = sort_columns(hinted.item.event.columns), hinted.describe()
    else:
        return False
    schema = table.schema()
    ids = []
    for name, direction in wanted:
        try:
            ids.append((schema.find_field(name).field_id, direction))
        except ValueError:
            raise SchemaConflict(where, name, "sort column is not in the table") from None
    have = [(f.source_id, f.direction) for f in table.sort_order().fields if isinstance(f.transform, IdentityTransform)]
    if have == ids and len(have) == len(table.sort_order().fields):
        return False
    with table.update_sort_order() as update:
        for name, direction in wanted:
            (update.desc if direction == SortDirection.DESC else update.asc)(name, IdentityTransform())
    log.info("sort order of %s is now %s", ".".join(table.name()), table.sort_order())
    return True


def apply_properties(table: Table, wanted: Mapping[str, str]) -> bool:
    """Set the properties of ``wanted`` that the table lacks or holds with another value, in one
    metadata commit; True when any changed. Properties not named are left as they are."""
    changed = {k: v for k, v in wanted.items() if table.metadata.properties.get(k) != v}
    if not changed:
        return False
    with table.transaction() as tx:
        tx.set_properties(changed)
    log.info("table properties of %s set: %s", ".".join(table.name()), changed)
    return True
