"""When the committer writes a table's ledger: after a commit, at most once per ``LedgerLag.max_s``
per table, or as soon as ``LedgerLag.max_files`` committed files wait for their ledgers (all
tables together: the bound on the rows held).

A ledger that lags loses nothing: the data snapshots' markers hold what it lacks (the committer's
dedupe reads them), ``Ledger.sync`` writes them from those markers, and maintenance syncs the
ledger before it expires any snapshot, keeping those the ledger does not cover yet. What the
lag saves is one ledger commit per table per window (a stream over many tables paid a second
commit for each of its commits). The files of our own commits that wait are held here, to be
recorded with their locations and sizes; what a stop or a maintenance round gets to first is
recorded from the markers (event ids, without locations).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pyiceberg.table import Table

from ingester.iceberg_layer.ledger import Ledger, LedgerEntry

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LedgerLag:
    """How far a table's ledger may fall behind its commits. ``max_s`` 0: written after every commit."""

    max_s: float = 0.0
    max_files: int = 10_000


@dataclass(slots=True)
class _Waiting:
    since: float
    entries: dict[int, Sequence[LedgerEntry]] = field(default_factory=dict)
    files: int = 0


class LedgerWrites:
    """The ledger writes of one committer. Never raises: the data is committed, and a ledger
    left behind is brought up to date by a later write or maintenance round (until then
    maintenance keeps the snapshots it lacks). Thread-safe; one writer per table."""

    def __init__(self, ledger: Ledger, lag: LedgerLag = LedgerLag(), clock: Callable[[], float] = time.monotonic) -> None:
        self.ledger = ledger
        self.lag = lag
        self._clock = clock
        self._waiting: dict[tuple[str, ...], _Waiting] = {}
        self._files = 0
        self._lock = threading.Lock()

    def committed(self, table: Table, snapshot_id: int, entries: Sequence[LedgerEntry]) -> bool:
        """Note the files of ``table``'s new snapshot; write the ledger when due. Returns whether it wrote."""
        now = self._clock()
        with self._lock:
            waiting = self._waiting.setdefault(table.name(), _Waiting(now))
            waiting.entries[snapshot_id] = entries
            waiting.files += len(entries)
            self._files += len(entries)
            if now - waiting.since < self.lag.max_s and self._files < self.lag.max_files:
                return False
            del self._waiting[table.name()]
            self._files -= waiting.files
        try:
            self.ledger.sync(table, waiting.entries)
            return True
        except Exception as exc:
            log.warning("ledger of %s not written, a later commit or maintenance round catches up: %s: %s",
                        ".".join(table.name()), type(exc).__name__, exc)
            return False

    def waiting_files(self) -> int:
        """Committed files whose ledger rows wait (the memory this holds)."""
        return self._files
