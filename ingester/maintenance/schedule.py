"""When each table's maintenance is due, and one round of it, from the engine's workers."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from pyiceberg.catalog import Catalog

from ingester.batch import TableRef
from ingester.maintenance.maintainer import MaintenanceReport, TableMaintainer

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class MaintenanceStats:
    rounds: int
    compactions: int
    expired_snapshots: int
    skipped: int
    failed: int


class MaintenanceSchedule:
    """When each table is due (every ``interval_s``, first one ``interval_s`` after it is first
    seen; at once when it holds more than the policy's ``max_snapshots``) and one round for a
    table. ``run`` never raises: conflicts are skipped steps, other errors are logged and
    reported; the stream goes on either way."""

    def __init__(
        self, catalog: Catalog, maintainer: TableMaintainer, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.catalog = catalog
        self.maintainer = maintainer
        self.interval_s = interval_s
        self._clock = clock
        self._next: dict[TableRef, float] = {}
        self._seen: dict[TableRef, int] = {}
        self._left: dict[TableRef, int] = {}
        self._counts = dict.fromkeys(("rounds", "compactions", "expired_snapshots", "skipped", "failed"), 0)

    def is_due(self, ref: TableRef, snapshots: int = 0) -> bool:
        """``snapshots``: what the table holds now (0: unknown). Over ``max_snapshots`` it is due
        at once, unless the last round could not bring it down (ledger behind, conflicts): then
        again once as many more snapshots came as a round normally removes."""
        now = self._clock()
        policy = self.maintainer.policy
        self._seen[ref] = snapshots
        grown = snapshots - max(self._left.get(ref, 0), policy.retain_last) > policy.max_snapshots - policy.retain_last
        return now >= self._next.setdefault(ref, now + self.interval_s) or grown

    def run(self, ref: TableRef) -> MaintenanceReport:
        """One round now (blocking)."""
        self._next[ref] = self._clock() + self.interval_s
        try:
            report = self.maintainer.maintain(self.catalog.load_table((ref.namespace, ref.name)))
        except Exception as exc:
            log.exception("maintenance of %s failed", ref)
            report = MaintenanceReport(str(ref), error=f"{type(exc).__name__}: {exc}")
        self._left[ref] = report.snapshots if report.error is None else self._seen.get(ref, 0)
        c = self._counts
        c["rounds"] += 1
        c["compactions"] += report.compaction is not None
        c["expired_snapshots"] += report.expired
        c["skipped"] += len(report.skipped)
        c["failed"] += report.error is not None
        return report

    def statistics(self) -> MaintenanceStats:
        return MaintenanceStats(**self._counts)
