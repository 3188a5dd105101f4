"""The table's layout follows the hints: the partition spec evolves when a batch's partition
hints ask for another one.

A batch whose files carry partition hints (``x-partition`` / ``partition`` column hints, the
dlt adapter's) that differ from the table's current spec evolves the spec with pyiceberg's
``update_spec`` before the commit: the fields no longer hinted are removed, the new ones added,
in one metadata commit. Old data files keep the spec they were written with (every reader plans
them by their own spec); new files get the new one. Files without partition hints leave the
spec alone (an event without hints never unpartitions a table).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from pyiceberg.partitioning import PartitionSpec
from pyiceberg.table import Table

from ingester.commit.source_files import SourceFile
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
