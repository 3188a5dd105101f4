"""Per-table micro-batch windows and the in-flight byte budget (backpressure accounting)."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from ingester.batch import Batch, Pending, TableRef
from ingester.events import FileEvent, WriteDisposition


@dataclass(frozen=True, slots=True)
class BatchLimits:
    max_files: int
    max_rows: int
    max_bytes: int
    max_age_s: float


def _compatible(a: FileEvent, b: FileEvent) -> bool:
    """Events that can share one snapshot: same disposition, keys, branch and (for replace) load."""
    same = (a.write_disposition, a.primary_key, a.merge_key, a.branch) == (b.write_disposition, b.primary_key, b.merge_key, b.branch)
    if same and a.write_disposition is WriteDisposition.REPLACE:
        return a.load_id == b.load_id
    return same


class TableWindow:
    """The open batch of one table. ``is_ready`` / ``append`` / ``close``."""

    def __init__(self, table: TableRef, limits: BatchLimits, opened_at: float) -> None:
        self.table = table
        self._limits = limits
        self.opened_at = opened_at
        self._items: list[Pending] = []
        self.rows = 0
        self.bytes = 0

    def __len__(self) -> int:
        return len(self._items)

    def accepts(self, event: FileEvent) -> bool:
        return not self._items or _compatible(self._items[0].event, event)

    def append(self, item: Pending) -> None:
        self._items.append(item)
        self.rows += item.event.row_count or 0
        self.bytes += item.event.byte_size

    def is_ready(self, now: float) -> bool:
        lim = self._limits
        return bool(self._items) and (
            len(self._items) >= lim.max_files
            or self.rows >= lim.max_rows
            or self.bytes >= lim.max_bytes
            or now - self.opened_at >= lim.max_age_s
        )

    def close(self) -> Batch:
        return Batch(self.table, tuple(self._items))


class WindowSet:
    """One open window per table. Never blocks; returns the batches that closed."""

    def __init__(self, limits: BatchLimits, clock: Callable[[], float] = time.monotonic) -> None:
        self._limits = limits
        self._clock = clock
        self._open: dict[TableRef, TableWindow] = {}

    def add(self, table: TableRef, item: Pending) -> list[Batch]:
        """Flush-before-append: an incompatible open batch closes first."""
        closed: list[Batch] = []
        window = self._open.get(table)
        if window is not None and not window.accepts(item.event):
            closed.append(self._open.pop(table).close())
            window = None
        if window is None:
            window = self._open[table] = TableWindow(table, self._limits, self._clock())
        window.append(item)
        if window.is_ready(self._clock()):
            closed.append(self._open.pop(table).close())
        return closed

    def due(self) -> list[Batch]:
        now = self._clock()
        ready = [t for t, w in self._open.items() if w.is_ready(now)]
        return [self._open.pop(t).close() for t in ready]

    def largest(self) -> Batch | None:
        """Close the open window holding the most bytes (used when the budget is full)."""
        if not self._open:
            return None
        table = max(self._open, key=lambda t: self._open[t].bytes)
        return self._open.pop(table).close()

    def drain(self) -> list[Batch]:
        batches = [w.close() for w in self._open.values()]
        self._open.clear()
        return batches

    def __len__(self) -> int:
        return len(self._open)


class InflightBudget:
    """Bytes admitted but not yet committed; admission refuses past ``max_bytes``.

    A single event larger than the whole budget is admitted only when nothing else is in
    flight, so it can never deadlock and the peak stays ``max(max_bytes, largest event)``.
    """

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.used = 0
        self.peak = 0

    def try_acquire(self, n: int) -> bool:
        if self.used and self.used + n > self.max_bytes:
            return False
        self.used += n
        self.peak = max(self.peak, self.used)
        return True

    def release(self, n: int) -> None:
        self.used = max(0, self.used - n)
