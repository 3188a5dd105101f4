"""Idempotency markers kept in snapshot summaries, and reading them back.

Every snapshot we write carries: the batch id, the cumulative source offsets per consumer
group and partition (carried forward so they survive snapshot expiry, as Iceberg's Kafka
Connect sink does), the event ids and dlt load ids of the batch. On restart, or after
``CommitStateUnknownException``, these decide what is already in the table.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from pyiceberg.table import Table

BATCH_ID = "ingester.batch-id"
OFFSETS_PREFIX = "ingester.offsets."
EVENT_IDS = "ingester.event-ids"
LOAD_IDS = "ingester.load-ids"
REPLACE_LOAD_ID = "ingester.replace-load-id"


@dataclass(slots=True)
class TableMarkers:
    """What the table's history says is committed."""

    snapshot_id: int | None = None
    offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    event_ids: set[str] = field(default_factory=set)
    load_ids: set[str] = field(default_factory=set)
    replace_load_ids: set[str] = field(default_factory=set)

    def committed_offset(self, group: str, partition: str) -> int:
        return self.offsets.get(group, {}).get(partition, -1)

    def offset_properties(self, group: str | None, new: dict[str, int]) -> dict[str, str]:
        """Cumulative offsets for every group, ours advanced by ``new``."""
        merged = {g: dict(p) for g, p in self.offsets.items()}
        if group is not None and new:
            mine = merged.setdefault(group, {})
            for part, off in new.items():
                mine[part] = max(off, mine.get(part, -1))
        return {OFFSETS_PREFIX + g: json.dumps(p, sort_keys=True) for g, p in merged.items()}


class MarkerCache:
    """Markers per table, updated incrementally from new snapshots. One writer per table."""

    def __init__(self) -> None:
        self._cache: dict[str, TableMarkers] = {}

    def read(self, key: str, table: Table) -> TableMarkers:
        current = table.current_snapshot()
        cached = self._cache.get(key)
        if current is None:
            markers = TableMarkers()
        elif cached is not None and cached.snapshot_id == current.snapshot_id:
            return cached
        else:
            markers = self._rebuild(table, cached)
        self._cache[key] = markers
        return markers

    @staticmethod
    def _rebuild(table: Table, cached: TableMarkers | None) -> TableMarkers:
        meta = table.metadata
        lineage = []
        snap = table.current_snapshot()
        while snap is not None and (cached is None or snap.snapshot_id != cached.snapshot_id):
            lineage.append(snap)
            snap = meta.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id is not None else None
        base = cached if (cached is not None and snap is not None) else TableMarkers()
        markers = TableMarkers(
            snapshot_id=lineage[0].snapshot_id if lineage else base.snapshot_id,
            offsets={g: dict(p) for g, p in base.offsets.items()},
            event_ids=set(base.event_ids),
            load_ids=set(base.load_ids),
            replace_load_ids=set(base.replace_load_ids),
        )
        offsets_seen: set[str] = set()
        for s in lineage:  # newest first: the newest offsets of a group win
            summary = s.summary.additional_properties if s.summary else {}
            for k, v in summary.items():
                if k.startswith(OFFSETS_PREFIX) and k not in offsets_seen:
                    offsets_seen.add(k)
                    group = k[len(OFFSETS_PREFIX):]
                    loaded = {p: int(o) for p, o in json.loads(v).items()}
                    mine = markers.offsets.setdefault(group, {})
                    for p, o in loaded.items():
                        mine[p] = max(o, mine.get(p, -1))
            markers.event_ids.update(json.loads(summary.get(EVENT_IDS, "[]")))
            markers.load_ids.update(json.loads(summary.get(LOAD_IDS, "[]")))
            if REPLACE_LOAD_ID in summary:
                markers.replace_load_ids.add(summary[REPLACE_LOAD_ID])
        return markers
