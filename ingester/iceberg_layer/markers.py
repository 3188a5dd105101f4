"""Idempotency markers kept in snapshot summaries, and reading them back.

Every snapshot we write carries: the batch id, the cumulative source offsets per consumer
group and partition (carried forward so they survive snapshot expiry, as Iceberg's Kafka
Connect sink does), the event ids and dlt load ids of the batch. On restart, or after
``CommitStateUnknownException``, these decide what is already in the table; event ids and
replace load ids of snapshots already expired come from the table's ledger
(``ingester.iceberg_layer.ledger``), read when the retained history does not reach back to the
table's first snapshot.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field

from pyiceberg.table import Table
from pyiceberg.table.refs import MAIN_BRANCH
from pyiceberg.table.snapshots import Snapshot

from ingester.event_ids import EventIds

BATCH_ID = "ingester.batch-id"
OFFSETS_PREFIX = "ingester.offsets."
EVENT_IDS = "ingester.event-ids"
LOAD_IDS = "ingester.load-ids"
REPLACE_LOAD_ID = "ingester.replace-load-id"
WATERMARK = "ingester.watermark-ms"
"""The newest event time (Unix milliseconds) of the data the table holds, carried forward like the
offsets (Iceberg's Kafka Connect sink has ``kafka.connect.vtts`` for the same question)."""
DEDUPE_KEYS = (EVENT_IDS, REPLACE_LOAD_ID)
"""Markers read by the dedupe: a snapshot carrying one may go only once the ledger has it."""


@dataclass(frozen=True, slots=True)
class LedgerHistory:
    """What a table's ledger holds: every event id and replace load id, and the watermark."""

    event_ids: EventIds = field(default_factory=EventIds)
    replace_load_ids: frozenset[str] = frozenset()
    covers: int = -1


@dataclass(slots=True)
class TableMarkers:
    """What the table's history says is committed."""

    snapshot_id: int | None = None
    offsets: dict[str, dict[str, int]] = field(default_factory=dict)
    event_ids: EventIds = field(default_factory=EventIds)
    replace_load_ids: set[str] = field(default_factory=set)
    watermark_ms: int = -1
    """The newest ``WATERMARK`` of the lineage (-1: none)."""

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

    def carried_properties(self, group: str | None, new: dict[str, int], newest_ms: int = -1) -> dict[str, str]:
        """What every snapshot carries forward: ``offset_properties`` and the watermark, moved on
        to ``newest_ms`` when that is newer (a watermark never moves back)."""
        props = self.offset_properties(group, new)
        watermark = max(self.watermark_ms, newest_ms)
        if watermark >= 0:
            props[WATERMARK] = str(watermark)
        return props


class MarkerCache:
    """Markers per table, updated in place from the snapshots not seen yet. One writer per table.

    ``history`` (the ledger's reader) is asked for what expired snapshots held when the markers
    are built afresh and the retained history does not reach back to the table's first snapshot.
    """

    def __init__(self, history: Callable[[Table], LedgerHistory] | None = None) -> None:
        self._cache: dict[str, TableMarkers] = {}
        self._history = history

    def read(self, key: str, table: Table, branch: str = MAIN_BRANCH) -> TableMarkers:
        """The markers of ``branch``'s lineage (a branch's own commits and ``main``'s before it
        was made: pyiceberg's duplicate checks look at ``main`` only)."""
        current = table.snapshot_by_name(branch)
        key = key if branch == MAIN_BRANCH else f"{key}@{branch}"
        cached = self._cache.get(key)
        if current is None:
            markers = TableMarkers()
        elif cached is not None and cached.snapshot_id == current.snapshot_id:
            return cached
        else:
            markers = self._update(table, current, cached)
        self._cache[key] = markers
        return markers

    def _update(self, table: Table, current: Snapshot, cached: TableMarkers | None) -> TableMarkers:
        """``cached`` brought up to ``current`` (when ``current`` descends from it), else new markers."""
        meta = table.metadata
        lineage: list[Snapshot] = []
        snap: Snapshot | None = current
        while snap is not None and (cached is None or snap.snapshot_id != cached.snapshot_id):
            lineage.append(snap)
            parent = snap.parent_snapshot_id
            snap = meta.snapshot_by_id(parent) if parent is not None else None
        if cached is not None and snap is not None:
            markers = cached
        else:
            markers = TableMarkers()
            complete = lineage[-1].sequence_number == 1  # back to the first commit (expiry unlinks parents)
            if not complete and self._history is not None:
                history = self._history(table)
                markers.event_ids = history.event_ids
                markers.replace_load_ids = set(history.replace_load_ids)
        markers.snapshot_id = current.snapshot_id
        offsets_seen: set[str] = set()
        for s in lineage:  # newest first: the newest offsets of a group win
            summary = s.summary.additional_properties if s.summary else {}
            for k, v in summary.items():
                if k.startswith(OFFSETS_PREFIX) and k not in offsets_seen:
                    offsets_seen.add(k)
                    mine = markers.offsets.setdefault(k[len(OFFSETS_PREFIX):], {})
                    for p, o in json.loads(v).items():
                        mine[p] = max(int(o), mine.get(p, -1))
            for event_id in json.loads(summary.get(EVENT_IDS, "[]")):
                markers.event_ids.add(event_id)
            if REPLACE_LOAD_ID in summary:
                markers.replace_load_ids.add(summary[REPLACE_LOAD_ID])
            if WATERMARK in summary:
                markers.watermark_ms = max(markers.watermark_ms, _millis(summary[WATERMARK]))
        return markers


def _millis(value: str) -> int:
    """A summary's watermark (another writer's malformed value counts as none)."""
    try:
        return int(value)
    except ValueError:
        return -1
