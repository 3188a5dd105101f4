"""Table maintenance for long-running streams: expire old snapshots, compact small files.

``TableMaintainer.compact`` rewrites the small data files of a partition, and data files
that carry position deletes (applying them), into files of about ``target_file_size_bytes``
in ONE ``replace`` snapshot that removes the old data files and their position delete files
(and delete files that apply to no live data file). The snapshot carries the table's
cumulative offsets markers forward and marks itself ``ingester.maintenance=compact``.
``TableMaintainer.expire`` removes snapshots older than ``expire_older_than_s`` but keeps
the newest ``retain_last`` of the current lineage, every branch/tag head, and every snapshot
between the current one and the newest one that carries each group's offsets marker.

Readers: no file is ever deleted here, neither compacted-away files nor the files of expired
snapshots (pyiceberg's ``ExpireSnapshots`` only drops them from the metadata), so a reader
that planned on an older snapshot keeps reading it. Removing unreferenced files is orphan
cleanup, a separate, age-gated step (``ingester.orphans``, ``ingester remove-orphans``).

Exactly-once: source offsets are cumulative in every snapshot, so they survive expiry and
compaction. Event ids and dlt load ids are per snapshot: they dedupe replays only while their
snapshot is retained (``expire_older_than_s`` is that window).

Concurrency: a commit that races the compaction is either compatible (an append: pyiceberg
retries the commit on the new head, re-reading the offsets markers from it) or a conflict
(our input files were removed or got new deletes: ``ValidationException``). A conflict or a
transient failure skips the step for this round; it never fails the stream. Files written
for a compaction that did not land are deleted. The engine runs maintenance from the table's
own commit worker, so it never races the engine's own commits to that table.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.expressions import AlwaysTrue
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import ArrowScan
from pyiceberg.manifest import DataFile, DataFileContent, ManifestContent, ManifestEntry, ManifestFile, ManifestWriter
from pyiceberg.table import FileScanTask, Table, TableProperties, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.snapshots import Operation, Snapshot, Summary, ancestors_of
from pyiceberg.table.update.snapshot import _OverwriteFiles
from pyiceberg.table.update.validate import _validate_data_files_exist, _validate_no_new_deletes_for_data_files
from pyiceberg.typedef import EMPTY_DICT, Record
from pyiceberg.utils.properties import property_as_int

from ingester import markers as mk
from ingester.deletes import _DeleteManifestWriter
from ingester.errors import is_transient
from ingester.window import TableRef
from ingester.writers import DataFileWriter

log = logging.getLogger(__name__)
_T = TypeVar("_T")

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

    def __post_init__(self) -> None:
        if self.retain_last < 1 or self.min_input_files < 1 or self.target_file_size_bytes < 1 or self.expire_older_than_s < 0:
            raise ValueError(f"invalid maintenance policy: {self}")


@dataclass(frozen=True, slots=True)
class CompactionPlan:
    """Files to rewrite, one group per partition, and the position delete files to remove."""

    groups: tuple[tuple[FileScanTask, ...], ...]
    delete_files: tuple[DataFile, ...]

    @property
    def data_files(self) -> list[DataFile]:
        return [t.file for g in self.groups for t in g]


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

    def describe(self) -> str:
        parts = [f"expired {self.expired} snapshots"]
        c = self.compaction
        if c is not None:
            parts.append(
                f"compacted {c.data_files_in} data + {c.delete_files_in} delete files -> {c.data_files_out} "
                f"({c.rows} rows, {c.bytes_in} -> {c.bytes_out} bytes, {c.seconds:.2f}s)"
            )
        parts += [f"skipped {s}" for s in self.skipped]
        if self.error:
            parts.append(f"failed: {self.error}")
        return f"{self.table}: " + "; ".join(parts)


def expirable_snapshots(metadata: TableMetadata, now_ms: int, policy: MaintenancePolicy) -> list[int]:
    """Ids of the snapshots ``expire`` removes (pure: reads ``metadata`` only)."""
    lineage = list(ancestors_of(metadata.current_snapshot(), metadata))
    keep = {s.snapshot_id for s in lineage[: max(policy.retain_last, _marker_depth(lineage) + 1)]}
    keep |= {ref.snapshot_id for ref in metadata.refs.values()}
    cutoff = now_ms - int(policy.expire_older_than_s * 1000)
    return [s.snapshot_id for s in metadata.snapshots if s.timestamp_ms < cutoff and s.snapshot_id not in keep]


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


class CompactionFiles(_OverwriteFiles):
    """One ``replace`` snapshot: adds the rewritten data files, removes the data files and
    position delete files given to ``delete_data_file`` (in their own manifests, so delete
    files are removed as delete files). On a pyiceberg commit retry the summary properties are
    recomputed from the new head (``properties``) and only real conflicts are validated:
    our input files removed, or new deletes added for them. Concurrent appends are fine."""

    def __init__(self, transaction: Transaction, io: FileIO, properties: Callable[[Table], dict[str, str]]) -> None:
        super().__init__(
            operation=Operation.OVERWRITE, transaction=transaction, io=io, snapshot_properties=properties(transaction._table)
        )
        self._properties = properties

    def added_files(self) -> list[DataFile]:
        return list(self._added_data_files)

    def _refresh_for_retry(self) -> None:
        super()._refresh_for_retry()
        self.snapshot_properties = self._properties(self._transaction._table)

    def _validate_concurrency(self) -> None:
        window = self._commit_window
        if window is None or window.is_empty() or window.head is None:
            return
        table = self._transaction._table
        inputs = {f for f in self._deleted_data_files if f.content == DataFileContent.DATA}
        _validate_data_files_exist(table, window.head, inputs, window.base)
        _validate_no_new_deletes_for_data_files(table, window.head, None, inputs, window.base)

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        # pyiceberg totals only OVERWRITE/APPEND/DELETE summaries; the operation is a REPLACE
        summary = super()._summary(snapshot_properties)
        return Summary(Operation.REPLACE, **summary.additional_properties)

    def _deleted_entries(self) -> list[ManifestEntry]:
        return []  # the DELETED entries go into the rewritten manifests (_existing_manifests)

    def _existing_manifests(self) -> list[ManifestFile]:
        parent_id = self._parent_snapshot_id
        parent = self._transaction.table_metadata.snapshot_by_id(parent_id) if parent_id is not None else None
        if parent is None:
            raise ValidationException("cannot compact a table without a snapshot")
        manifests, found = [], set()
        for manifest in parent.manifests(self._io):
            entries = manifest.fetch_manifest_entry(self._io, discard_deleted=True)
            gone = {e.data_file.file_path for e in entries if e.data_file in self._deleted_data_files}
            if not gone:
                manifests.append(manifest)
                continue
            found |= gone
            with self._manifest_writer(manifest) as writer:
                for e in entries:
                    (writer.delete if e.data_file.file_path in gone else writer.existing)(e)
            manifests.append(writer.to_manifest_file())
        missing = sorted(f.file_path for f in self._deleted_data_files if f.file_path not in found)
        if missing:
            raise ValidationException(f"files to compact are gone: {missing[:3]}")
        return manifests

    def _manifest_writer(self, manifest: ManifestFile) -> ManifestWriter:
        spec = self.spec(manifest.partition_spec_id)
        if manifest.content == ManifestContent.DELETES:
            return _DeleteManifestWriter(spec, self.schema(), self.new_manifest_output(), self._snapshot_id, self._compression)
        return self.new_manifest_writer(spec)


class TableMaintainer:
    """Expires and compacts one table at a time. Blocking (run it in a thread); not for two
    threads on one table at once. ``expire`` and ``compact`` raise pyiceberg's conflict and
    transient errors (``maintain`` turns those into skipped steps)."""

    def __init__(self, policy: MaintenancePolicy, *, wall_clock: Callable[[], float] = time.time) -> None:
        self.policy = policy
        self._wall_clock = wall_clock  # snapshot timestamps are epoch milliseconds
        self._markers = mk.MarkerCache()
        self._ratios: dict[str, float] = {}  # parquet/arrow bytes of each table's last compaction

    def maintain(self, table: Table) -> MaintenanceReport:
        """Compact, then expire (so the compaction's predecessors can go too). A step that
        meets a conflict or a transient failure is skipped (reported); other errors raise."""
        skipped: list[str] = []
        compaction = self._unless_conflict("compaction", self.compact, table, skipped)
        expired = self._unless_conflict("expiry", self.expire, table, skipped)
        return MaintenanceReport(".".join(table.name()), compaction, expired or 0, tuple(skipped))

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

    def expire(self, table: Table) -> int:
        """Remove expirable snapshots from the metadata (files stay); returns how many."""
        ids = expirable_snapshots(table.metadata, int(self._wall_clock() * 1000), self.policy)
        if ids:
            table.maintenance.expire_snapshots().by_ids(ids).commit()
            log.info("expired %d snapshots of %s, %d left", len(ids), ".".join(table.name()), len(table.metadata.snapshots))
        return len(ids)

    def compact(self, table: Table) -> CompactionResult | None:
        """Rewrite what ``plan_compaction`` picks in one snapshot; None when nothing was due.

        Memory: one input file's rows (deletes applied) plus one output file's rows, at most
        ``write.target-file-size-bytes`` of arrow memory (pyiceberg's own limit for one file).
        """
        snapshot = table.current_snapshot()
        if snapshot is None:
            return None
        started = time.monotonic()
        tasks = list(table.scan(snapshot_id=snapshot.snapshot_id).plan_files())
        plan = plan_compaction(tasks, _live_delete_files(table, snapshot), table.metadata.default_spec_id, self.policy)
        if plan is None:
            return None
        key = ".".join(table.name())
        tx = table.transaction()
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
        return {MAINTENANCE: "compact", **self._markers.read(key, table).offset_properties(None, {})}

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


@dataclass(frozen=True, slots=True)
class MaintenanceStats:
    rounds: int
    compactions: int
    expired_snapshots: int
    skipped: int
    failed: int


class MaintenanceSchedule:
    """When each table is due (every ``interval_s``, first one ``interval_s`` after it is first
    seen) and one round for a table. ``run`` never raises: conflicts are skipped steps, other
    errors are logged and reported; the stream goes on either way."""

    def __init__(
        self, catalog: Catalog, maintainer: TableMaintainer, interval_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.catalog = catalog
        self.maintainer = maintainer
        self.interval_s = interval_s
        self._clock = clock
        self._next: dict[TableRef, float] = {}
        self._counts = dict.fromkeys(("rounds", "compactions", "expired_snapshots", "skipped", "failed"), 0)

    def is_due(self, ref: TableRef) -> bool:
        now = self._clock()
        return now >= self._next.setdefault(ref, now + self.interval_s)

    def run(self, ref: TableRef) -> MaintenanceReport:
        """One round now (blocking)."""
        self._next[ref] = self._clock() + self.interval_s
        try:
            report = self.maintainer.maintain(self.catalog.load_table((ref.namespace, ref.name)))
        except Exception as exc:
            log.exception("maintenance of %s failed", ref)
            report = MaintenanceReport(str(ref), error=f"{type(exc).__name__}: {exc}")
        c = self._counts
        c["rounds"] += 1
        c["compactions"] += report.compaction is not None
        c["expired_snapshots"] += report.expired
        c["skipped"] += len(report.skipped)
        c["failed"] += report.error is not None
        return report

    def statistics(self) -> MaintenanceStats:
        return MaintenanceStats(**self._counts)
