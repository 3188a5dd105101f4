"""Table maintenance for long-running streams: expire old snapshots, compact small files, keep
the table's ledger up to date and small.

``TableMaintainer.compact`` rewrites the small data files of a partition, and data files
that carry position deletes (applying them), into files of about ``target_file_size_bytes``
in ONE ``replace`` snapshot that removes the old data files and their position delete files
(and delete files that apply to no live data file). The snapshot carries the table's
cumulative offsets markers forward and marks itself ``ingester.maintenance=compact``.
``TableMaintainer.expire`` removes snapshots older than ``expire_older_than_s`` (any age while
the table holds more than ``max_snapshots``) but keeps the newest ``retain_last`` of the current
lineage, every branch/tag head, every snapshot between the current one and the newest one that
carries each group's offsets marker, and every snapshot whose event ids or replace load id the
ledger (``ingester.iceberg_layer.ledger``) does not hold yet. A round first brings the ledger up
to date (repairing what a crash left behind), and ends by compacting the ledger's small files and
expiring all its snapshots but the newest (its rows are the record, not its history).

Readers: no file is ever deleted here, neither compacted-away files nor the files of expired
snapshots (pyiceberg's ``ExpireSnapshots`` only drops them from the metadata), so a reader
that planned on an older snapshot keeps reading it. Removing unreferenced files is orphan
cleanup, a separate, age-gated step (``ingester.maintenance.orphans``, ``ingester remove-orphans``).

Exactly-once: source offsets are cumulative in every snapshot, so they survive expiry and
compaction. Event ids and replace load ids are per snapshot, and outlive it in the ledger: they
dedupe replays however old (``expire_older_than_s`` is only the time-travel window).

Concurrency: a commit that races the compaction is either compatible (an append: pyiceberg
retries the commit on the new head, re-reading the offsets markers from it) or a conflict
(our input files were removed or got new deletes: ``ValidationException``). A conflict or a
transient failure skips the step for this round; it never fails the stream. Files written
for a compaction that did not land are deleted. The engine runs maintenance from the table's
own commit worker, so it never races the engine's own commits to that table.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile, ManifestContent
from pyiceberg.table import FileScanTask, Table, TableProperties
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.utils.properties import property_as_int

from ingester.errors import is_transient
from ingester.branches import unpublished
from ingester.iceberg_layer import markers as mk
from ingester.iceberg_layer.datafiles import DataFileWriter
from ingester.iceberg_layer.ledger import Ledger
from ingester.iceberg_layer.producers import CompactionFiles
from ingester.iceberg_layer.transactions import expire_snapshots, transaction
from ingester.maintenance.planning import MAINTENANCE, MaintenancePolicy, expirable_snapshots, plan_compaction

log = logging.getLogger(__name__)
_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class CompactionResult:
    snapshot_id: int | None
    data_files_in: int
    delete_files_in: int
    data_files_out: int
    rows: int
    bytes_in: int
    bytes_out: int
    seconds: float


@dataclass(frozen=True, slots=True)
class MaintenanceReport:
    """One round on one table. ``skipped`` names steps that met a conflict or a transient
    failure (retried next round); ``error`` is set when the round failed otherwise."""

    table: str
    compaction: CompactionResult | None = None
    expired: int = 0
    skipped: tuple[str, ...] = ()
    error: str | None = None
    snapshots: int = 0
    """Snapshots the table holds after the round."""
    ledger: MaintenanceReport | None = None
    """The round on the table's ledger (None without a ledger)."""

    def describe(self) -> str:
        parts = [f"expired {self.expired} snapshots, {self.snapshots} left"]
        c = self.compaction
        if c is not None:
            parts.append(
                f"compacted {c.data_files_in} data + {c.delete_files_in} delete files -> {c.data_files_out} "
                f"({c.rows} rows, {c.bytes_in} -> {c.bytes_out} bytes, {c.seconds:.2f}s)"
            )
        parts += [f"skipped {s}" for s in self.skipped]
        if self.error:
            parts.append(f"failed: {self.error}")
        if self.ledger is not None:
            parts.append(f"ledger {self.ledger.describe()}")
        return f"{self.table}: " + "; ".join(parts)


class TableMaintainer:
    """Expires and compacts one table at a time, and its ledger. Blocking (run it in a thread);
    not for two threads on one table at once. ``expire`` and ``compact`` raise pyiceberg's
    conflict and transient errors (``maintain`` turns those into skipped steps)."""

    def __init__(
        self, policy: MaintenancePolicy, *, ledger: Ledger | None = None, wall_clock: Callable[[], float] = time.time
    ) -> None:
        """``ledger``: the tables' ledgers (default: in each table's own catalog)."""
        self.policy = policy
        self.ledger_policy = dataclasses.replace(policy, expire_older_than_s=0, retain_last=1)
        self._ledger = ledger
        self._wall_clock = wall_clock  # snapshot timestamps are epoch milliseconds
        self._markers = mk.MarkerCache()
        self._ratios: dict[str, float] = {}  # parquet/arrow bytes of each table's last compaction

    def maintain(self, table: Table) -> MaintenanceReport:
        """Bring the ledger up to date, compact, then expire (so the compaction's predecessors can
        go too), then the same for the ledger. A step that meets a conflict or a transient failure
        is skipped (reported); other errors raise."""
        skipped: list[str] = []
        ledger = self._ledger or Ledger(table.catalog)
        self._unless_conflict("ledger update", ledger.sync, table, skipped)
        report = self._round(table, lambda t: self.expire(t, ledger.covered(t)), skipped)
        ledger_table = ledger.table_of(table, refresh=True)
        if ledger_table is None:
            return report
        ledger_report = self._round(ledger_table, lambda t: self.expire(t, -1, self.ledger_policy), [])
        return dataclasses.replace(report, ledger=ledger_report)

    def _round(self, table: Table, expire: Callable[[Table], int], skipped: list[str]) -> MaintenanceReport:
        compaction = self._unless_conflict("compaction", self.compact, table, skipped)
        expired = self._unless_conflict("expiry", expire, table, skipped)
        return MaintenanceReport(".".join(table.name()), compaction, expired or 0, tuple(skipped),
                                 snapshots=len(table.metadata.snapshots))

    @staticmethod
    def _unless_conflict(step: str, fn: Callable[[Table], _T], table: Table, skipped: list[str]) -> _T | None:
        try:
            return fn(table)
        except Exception as exc:
            if not _is_conflict(exc):
                raise
            log.warning("%s of %s skipped this round: %s: %s", step, ".".join(table.name()), type(exc).__name__, exc)
            skipped.append(f"{step} ({type(exc).__name__})")
            table.refresh()
            return None

    def expire(self, table: Table, covered: int, policy: MaintenancePolicy | None = None) -> int:
        """Remove expirable snapshots from the metadata (files stay); returns how many.
        ``covered``: the sequence number the table's ledger covers (``Ledger.covered``)."""
        ids = expirable_snapshots(table.metadata, int(self._wall_clock() * 1000), policy or self.policy, covered=covered)
        if ids:
            expire_snapshots(table, ids)
            log.info("expired %d snapshots of %s, %d left", len(ids), ".".join(table.name()), len(table.metadata.snapshots))
        return len(ids)

    def compact(self, table: Table) -> CompactionResult | None:
        """Rewrite what ``plan_compaction`` picks in one snapshot; None when nothing was due.

        Memory: one input file's rows (deletes applied) plus one output file's rows, at most
        ``write.target-file-size-bytes`` of arrow memory (pyiceberg's own limit for one file).
        """
        snapshot = table.current_snapshot()
        if snapshot is None or unpublished(table.metadata):
            return None  # compacting main under a branch not published yet would make publishing it refused
        started = time.monotonic()
        tasks = list(table.scan(snapshot_id=snapshot.snapshot_id).plan_files())
        plan = plan_compaction(tasks, _live_delete_files(table, snapshot), table.metadata.default_spec_id, self.policy)
        if plan is None:
            return None
        key = ".".join(table.name())
        tx = transaction(table)
        producer = CompactionFiles(tx, table.io, lambda t: self._properties(key, t))
        sizing = _OutputSizing(lambda: sum(f.file_size_in_bytes for f in producer.added_files()), self._ratios.get(key, 0.0))
        staged = False
        try:
            with producer:
                for f in (*plan.data_files, *plan.delete_files):
                    producer.delete_data_file(f)
                writer = DataFileWriter(tx, table, producer, max_pending=1)
                writer.write(itertools.chain.from_iterable(self._chunks(table, g, sizing) for g in plan.groups))
            staged = True
            tx.commit_transaction()
        except Exception as exc:
            if not staged or isinstance(exc, (CommitFailedException, ValidationException)):
                _discard(table, producer.added_files())  # the commit certainly did not land
            raise
        added = producer.added_files()
        sizing.measure()
        self._ratios[key] = sizing.ratio
        result = CompactionResult(
            snapshot_id=producer.snapshot_id,
            data_files_in=len(plan.data_files),
            delete_files_in=len(plan.delete_files),
            data_files_out=len(added),
            rows=writer.rows,
            bytes_in=sum(f.file_size_in_bytes for f in (*plan.data_files, *plan.delete_files)),
            bytes_out=sum(f.file_size_in_bytes for f in added),
            seconds=time.monotonic() - started,
        )
        log.info("compacted %s: %s", key, result)
        return result

    def _properties(self, key: str, table: Table) -> dict[str, str]:
        return {MAINTENANCE: "compact", **self._markers.read(key, table).carried_properties(None, {})}

    def _chunks(self, table: Table, group: Sequence[FileScanTask], sizing: _OutputSizing) -> Iterator[pa.Table]:
        """The group's live rows in chunks of about one target file, and never more arrow
        bytes than pyiceberg puts in one file (``write.target-file-size-bytes``)."""
        scan = ArrowScan(table.metadata, table.io, table.schema(), AlwaysTrue())
        max_chunk_bytes = property_as_int(
            table.metadata.properties, TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
            TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT,
        ) or TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT
        pending: list[pa.Table] = []
        size = 0
        for task in group:
            for batch in scan.to_record_batches([task]):  # one file at a time: bounded memory
                sizing.guess(task.file, batch)
                pending.append(pa.Table.from_batches([batch]))
                size += batch.nbytes
                if size * sizing.ratio >= self.policy.target_file_size_bytes or size >= max_chunk_bytes:
                    yield sizing.hand(pending, size)
                    sizing.measure()
                    pending, size = [], 0
        if pending:
            yield sizing.hand(pending, size)


@dataclass(slots=True)
class _OutputSizing:
    """Parquet bytes written per arrow byte: remembered from the table's last compaction, or
    first guessed from an input file, then measured while writing (the writer, with
    ``max_pending=1``, has written every chunk handed to it when the next one is asked for)."""

    written_bytes: Callable[[], int]
    ratio: float = 0.0
    handed_bytes: int = 0

    def guess(self, f: DataFile, batch: pa.RecordBatch) -> None:
        if not self.ratio and batch.nbytes:
            encoded = sum(f.column_sizes.values()) if f.column_sizes else f.file_size_in_bytes
            self.ratio = encoded * batch.num_rows / max(f.record_count, 1) / batch.nbytes

    def hand(self, tables: list[pa.Table], size: int) -> pa.Table:
        """The chunk to yield; call ``measure`` when the generator resumes."""
        self.handed_bytes += size
        return pa.concat_tables(tables, promote_options="permissive")

    def measure(self) -> None:
        if self.handed_bytes and (written := self.written_bytes()):
            self.ratio = written / self.handed_bytes


def _live_delete_files(table: Table, snapshot: Snapshot) -> list[DataFile]:
    return [
        entry.data_file
        for manifest in snapshot.manifests(table.io)
        if manifest.content == ManifestContent.DELETES
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
    ]


def _discard(table: Table, files: Iterable[DataFile]) -> None:
    for f in files:
        try:
            table.io.delete(f.file_path)
        except OSError as exc:  # an orphan left behind; orphan cleanup will find it
            log.warning("could not delete unused file %s: %s", f.file_path, exc)


def _is_conflict(exc: BaseException) -> bool:
    """A concurrent commit conflicted, or a transient failure: retry next round."""
    return isinstance(exc, ValidationException) or is_transient(exc)
