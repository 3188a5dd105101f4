"""What maintenance keeps and rewrites, decided from metadata alone (pure functions).

``expirable_snapshots``: older than ``expire_older_than_s`` (or any age while the table holds
more than ``max_snapshots``), except the newest ``retain_last`` of the current lineage, every
branch/tag head, every snapshot between the current one and the newest one that carries each
group's offsets marker, and every snapshot whose dedupe markers the table's ledger lacks.
``plan_compaction``: per partition, the small data files and the data files carrying position
deletes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from pyiceberg.manifest import DataFile, DataFileContent
from pyiceberg.table import FileScanTask
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Snapshot, ancestors_of
from pyiceberg.typedef import Record

from ingester.branches import unpublished
from ingester.iceberg_layer import markers as mk
from ingester.iceberg_layer.ledger import sequence
from ingester.settings import DEFAULT_MAX_SNAPSHOTS

log = logging.getLogger(__name__)

MAINTENANCE = "ingester.maintenance"
"""Snapshot summary key of our maintenance snapshots (value: ``compact``)."""
SMALL_FILE_RATIO = 0.75
"""A data file is small below this share of the target (Iceberg's ``min-file-size-bytes``
default): a compacted file a little under the target is not rewritten again next round."""


@dataclass(frozen=True, slots=True)
class MaintenancePolicy:
    """What maintenance keeps and produces (see ``MaintenanceSettings`` for the meanings)."""

    expire_older_than_s: float
    retain_last: int
    target_file_size_bytes: int
    min_input_files: int
    max_snapshots: int = DEFAULT_MAX_SNAPSHOTS

    def __post_init__(self) -> None:
        if (self.retain_last < 1 or self.min_input_files < 1 or self.target_file_size_bytes < 1 or self.expire_older_than_s < 0
                or self.max_snapshots <= self.retain_last):
            raise ValueError(f"invalid maintenance policy: {self}")


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    """Files to rewrite, one group per partition, and the position delete files to remove."""

    groups: tuple[tuple[FileScanTask, ...], ...]
    delete_files: tuple[DataFile, ...]

    @property
    def data_files(self) -> list[DataFile]:
        return [t.file for g in self.groups for t in g]


def expirable_snapshots(metadata: TableMetadata, now_ms: int, policy: MaintenancePolicy, *, covered: int) -> list[int]:
    """Ids of the snapshots ``expire`` removes (pure: reads ``metadata`` only). ``covered``: the
    sequence number up to which the table's ledger holds every dedupe marker (-1: none)."""
    lineage = list(ancestors_of(metadata.current_snapshot(), metadata))
    keep = {s.snapshot_id for s in lineage[: max(policy.retain_last, _marker_depth(lineage) + 1)]}
    keep |= {ref.snapshot_id for ref in metadata.refs.values()} | unpublished(metadata)
    keep |= {s.snapshot_id for s in metadata.snapshots if sequence(s) > covered and _has_dedupe_markers(s)}
    over = len(metadata.snapshots) > policy.max_snapshots
    cutoff = now_ms - int(policy.expire_older_than_s * 1000)
    return [s.snapshot_id for s in metadata.snapshots if (over or s.timestamp_ms < cutoff) and s.snapshot_id not in keep]


def _has_dedupe_markers(snap: Snapshot) -> bool:
    summary = snap.summary.additional_properties if snap.summary else {}
    return any(key in summary for key in mk.DEDUPE_KEYS)


def _marker_depth(lineage: Sequence[Snapshot]) -> int:
    """Index (newest first) of the oldest snapshot that is the newest carrier of some offsets key:
    ``MarkerCache`` walks the parents back to it, so nothing up to it may go."""
    seen: set[str] = set()
    depth = 0
    for i, snap in enumerate(lineage):
        summary = snap.summary.additional_properties if snap.summary else {}
        for key in summary:
            if key.startswith(mk.OFFSETS_PREFIX) and key not in seen:
                seen.add(key)
                depth = i
    return depth


def plan_compaction(
    tasks: Iterable[FileScanTask], live_deletes: Iterable[DataFile], spec_id: int, policy: MaintenancePolicy
) -> CompactionPlan | None:
    """Pick what to rewrite (pure), or None when there is nothing worth doing.

    Per partition of the default spec: the small data files and the data files carrying
    position deletes; a partition is rewritten when it has ``min_input_files`` of them or any
    deletes. A delete file is removed when every data file it applies to is rewritten, or
    when it applies to no live data file. Tables with equality deletes are left alone: a
    rewrite would renumber the rows past their sequence numbers.
    """
    tasks = list(tasks)
    live_deletes = list(live_deletes)
    if any(d.content == DataFileContent.EQUALITY_DELETES for d in live_deletes):
        log.warning("not compacting a table with equality deletes")
        return None
    small = policy.target_file_size_bytes * SMALL_FILE_RATIO
    by_partition: dict[Record, list[FileScanTask]] = {}
    for t in tasks:
        if t.file.spec_id == spec_id and (t.file.file_size_in_bytes < small or t.delete_files):
            by_partition.setdefault(t.file.partition, []).append(t)
    groups = tuple(
        tuple(g) for g in by_partition.values() if len(g) >= policy.min_input_files or any(t.delete_files for t in g)
    )
    rewritten = {t.file.file_path for g in groups for t in g}
    applies_to: dict[str, set[str]] = {}
    for t in tasks:
        for d in t.delete_files:
            applies_to.setdefault(d.file_path, set()).add(t.file.file_path)
    removed = tuple(d for d in live_deletes if applies_to.get(d.file_path, set()) <= rewritten)
    if not groups and not removed:
        return None
    return CompactionPlan(groups, removed)
