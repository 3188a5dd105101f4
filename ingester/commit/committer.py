"""A closed batch -> exactly one Iceberg snapshot (append, replace or merge), idempotently.

``SnapshotCommitter.read`` opens the batch's files (footers only; per-file failures are set
aside as rejected, never failing the batch); ``apply`` refreshes the table, drops what the
markers say is already committed and the files without rows, evolves the schema and makes
the single commit, streaming the data in bounded chunks. A batch without rows commits
nothing, except a replace (its load still empties the table) and a merge with keys to
delete. ``apply`` is safe to call again after any failure: it re-reads the markers first and
re-reads the (replayable) files. Both block: run them in threads.
``apply_many`` does the same for batches of several tables (``prepare`` stages each one's
snapshot, then ``iceberg_layer.multi_commit`` commits them all at once where the catalog can).
``commit_with_retries`` is the async path that does read and apply under a retry policy (the
engine's workers use it); ``commit_many_with_retries`` the same for ``apply_many`` (the dlt
destination: one commit per load).
"""

from __future__ import annotations

import functools
import json
import logging
import threading
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass, field, replace

import anyio
import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.io.pyarrow import UnsupportedPyArrowTypeException
from pyiceberg.schema import Schema
from pyiceberg.table import Table, TableProperties, Transaction

from ingester.batch import Batch, Pending, TableRef
from ingester.branches import MAIN, ensure_branch, head
from ingester.commit.dispositions import append, merge_into, replace_all
from ingester.commit.layout import apply_properties, evolve_partitioning, evolve_sort_order
from ingester.commit.ledger_writes import LedgerLag, LedgerWrites
from ingester.commit.options import WriteOptions
from ingester.commit.source_files import BadFile, SourceFile, null_columns
from ingester.errors import SchemaConflict, TerminalError
from ingester.events import FileEvent, WriteDisposition
from ingester.iceberg_layer import markers as mk
from ingester.iceberg_layer.dictionaries import dictionary_encoded
from ingester.iceberg_layer.ledger import Ledger, LedgerEntry
from ingester.iceberg_layer.multi_commit import MultiTableCommit
from ingester.iceberg_layer.transactions import transaction
from ingester.partitioning import spec_for
from ingester.retry import RetryPolicy
from ingester.schema import evolution, evolved, interned, normalize_schema, table_arrow_schema, to_iceberg
from ingester.sources.base import Position
from ingester.storage import FileReader, file_map, file_threads, is_remote

log = logging.getLogger(__name__)

TABLE_PROPERTIES = {"format-version": "2", "write.parquet.compression-codec": "zstd"}
PREPARE_THREADS = 4
"""Tables of one ``apply_many`` staged at once (each writes its own data files)."""
_LOCAL_WORK = threading.RLock()
"""Held by the per-file work on local files and tables (``storage.file_threads``): the workers
of one process then take turns with it rather than contend for the interpreter."""


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event set aside with the reason; goes to the dead letters."""

    event: FileEvent
    position: Position | None
    reason: str


@dataclass(frozen=True, slots=True)
class LoadedBatch:
    """A batch with its readable files identified: replayable input for ``apply``."""

    batch: Batch
    files: tuple[SourceFile, ...]
    rejected: tuple[Rejected, ...] = ()


@dataclass(frozen=True, slots=True)
class CommitResult:
    table: TableRef
    snapshot_id: int | None
    rows: int = 0
    files: int = 0
    duplicates: int = 0
    rejected: tuple[Rejected, ...] = field(default=())
    zero_copy: bool = False
    snapshots: int = 0
    """Snapshots the table holds after the commit (0 when nothing was committed)."""
    watermark_ms: int = -1
    """The table's watermark as the snapshot records it (``ingester.watermark-ms``; -1: none)."""


@dataclass(frozen=True, slots=True)
class PreparedCommit:
    """A batch staged for its commit: ``transaction`` holds its one snapshot (None: nothing to
    commit, ``result`` is final); ``files`` are the ones it writes (for the ledger)."""

    result: CommitResult
    table: Table | None = None
    transaction: Transaction | None = None
    files: Sequence[SourceFile] = ()
    branch: str = MAIN


def _makes_table(f: SourceFile) -> bool:
    """A file with rows can make its missing table; a keys-only one only when it carries more
    than its keys (the dlt queue destination writes a load's parent keys with the schema of
    its nested files); without them it has nothing to delete either."""
    ev = f.item.event
    return f.rows > 0 and (not ev.keys_only or bool(set(f.schema.names) - {*ev.merge_key, *ev.primary_key}))


def _commits_without_rows(
    batch: Batch, new: Sequence[SourceFile], state: mk.TableMarkers, extra_delete_keys: pa.Table | None
) -> bool:
    """A snapshot is due even with no row to write: a merge with extra keys still deletes, and
    a replace load whose new files are all empty still empties the table (once per load). Not
    when every file is committed already: its snapshot did that (a resumed load)."""
    if not new:
        return False
    if extra_delete_keys is not None and extra_delete_keys.num_rows:
        return True
    load_id = batch.items[0].event.load_id
    return (batch.disposition is WriteDisposition.REPLACE and not any(f.rows for f in new)
            and load_id not in state.replace_load_ids)


@functools.lru_cache(maxsize=256)
def _checked_schema(schema: pa.Schema) -> Schema:
    """``to_iceberg`` once per distinct schema (a stream's files mostly share one); read only."""
    return to_iceberg(schema)


def _check_file(schema: pa.Schema, event: FileEvent) -> None:
    """A file must be able to make its table on its own: Iceberg types (else
    ``UnsupportedPyArrowTypeException``), partition hints that fit its columns and its key
    columns present (else ``SchemaConflict``). Checked per file, so no batch fails on one."""
    spec_for(_checked_schema(schema), event.columns, event.describe())
    for key in (*event.primary_key, *event.merge_key):
        if key not in schema.names:
            raise SchemaConflict(event.describe(), key, "key column is not in the file")


class SnapshotCommitter:
    """Commits batches to tables of one catalog. Thread-safe across tables; callers keep
    commits of one table in order (one at a time)."""

    def __init__(
        self,
        catalog: Catalog,
        reader: FileReader,
        *,
        group: str | None = None,
        options: WriteOptions = WriteOptions(),
        fail_on_reject: bool = False,
        table_location: Callable[[TableRef], str | None] | None = None,
        ledger: Ledger | None = None,
        ledger_lag: LedgerLag = LedgerLag(),
        multi_commit: MultiTableCommit | None = None,
    ) -> None:
        """``fail_on_reject``: raise ``TerminalError`` instead of committing the rest when a file
        is set aside (all-or-nothing per batch, as a dlt load job needs). ``table_location``:
        where a table this committer creates goes (None: the catalog decides). ``ledger``: where
        committed event ids are kept for good, beside each table (the daemon's; None: the
        snapshots' markers alone, as a dlt load needs, whose replays come within the load);
        ``ledger_lag``: how far it may fall behind the commits (``commit.ledger_writes``).
        ``multi_commit``: how ``apply_many`` commits several tables (default: atomically where
        the catalog can)."""
        self.catalog = catalog
        self.reader = reader
        self.group = group
        self.options = options
        self.fail_on_reject = fail_on_reject
        self.ledger = ledger
        self.ledger_writes = LedgerWrites(ledger, ledger_lag) if ledger is not None else None
        self.multi = multi_commit or MultiTableCommit(catalog)
        self._markers = mk.MarkerCache(ledger.history if ledger is not None else None)
        self._lock = threading.Lock()
        self.table_location = table_location
        self._remote_tables = True
        """Whether the last table staged lives in an object store (then tables stage side by side)."""

    def read(self, batch: Batch) -> LoadedBatch:
        """Read every file's footer (``reader.read_concurrency`` at once when one is remote, else
        one after another: ``storage.file_threads``; one read of each file's end: schema,
        statistics and the raw footer come from it);
        unreadable or refused files become ``rejected``. Raises transient errors."""
        threads = file_threads((item.event.location for item in batch.items), self.reader.read_concurrency)
        with _LOCAL_WORK if threads == 1 else nullcontext():
            opened = file_map(self._open, batch.items, threads, "ingester-read")
        files = tuple(f for f in opened if isinstance(f, SourceFile))
        return LoadedBatch(batch, files, tuple(f for f in opened if isinstance(f, Rejected)))

    def _open(self, item: Pending) -> SourceFile | Rejected:
        ev = item.event
        try:
            allowed = self.reader.allowed(ev)  # a local path is resolved once, here
            footer, metadata = self.reader.footer(ev, allowed)
            raw = interned(metadata.schema.to_arrow_schema())
            schema = interned(normalize_schema(raw, ev.columns))
            _check_file(schema, ev)
            return SourceFile(
                item, schema, raw, metadata.num_rows,
                open=lambda read_dictionary=(), metadata=None: self.reader.open_from(ev, footer, read_dictionary, metadata, allowed),
                open_raw=lambda: self.reader.open_raw_from(ev, footer, allowed),
                location=allowed,
                dictionary=dictionary_encoded(metadata),
                footer=footer,
                null_columns=null_columns(metadata, raw),
            )
        except TerminalError as exc:
            return Rejected(ev, item.position, str(exc))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, UnsupportedPyArrowTypeException) as exc:
            return Rejected(ev, item.position, f"{ev.describe()}: {exc}")

    def commit(self, batch: Batch, extra_delete_keys: pa.Table | None = None) -> CommitResult:
        """``read`` then ``apply`` (no retries)."""
        return self.apply(self.read(batch), extra_delete_keys)

    def apply(self, loaded: LoadedBatch, extra_delete_keys: pa.Table | None = None) -> CommitResult:
        """Make the one snapshot for ``loaded``; returns what landed. Idempotent.

        ``extra_delete_keys`` (merge only): more merge-key values whose rows are deleted, e.g.
        the parents of a dlt load for a nested table; with them a batch without files still
        deletes (``loaded.batch`` then names the table and its merge key, not files)."""
        return self.apply_many([(loaded, extra_delete_keys)])[0]

    def apply_many(self, items: Sequence[tuple[LoadedBatch, pa.Table | None]]) -> list[CommitResult]:
        """``apply`` for batches of different tables, committed together: atomically across
        the tables where the catalog can (``multi_commit``), else one after another. Every
        table's change is staged from its fresh markers first; a ``CommitFailedException``
        (nothing landed when atomic) goes to the caller's retry, which calls this again.
        Idempotent as ``apply``."""
        locations = [f.location for loaded, _ in items for f in loaded.files]
        threads = PREPARE_THREADS if self._remote_tables else file_threads(locations, PREPARE_THREADS)
        # tables are independent until the commit: remote ones stage side by side
        with _LOCAL_WORK if threads == 1 else nullcontext():
            prepared = file_map(lambda item: self.prepare(*item), items, threads, "ingester-stage")
        self.multi.commit([p.transaction for p in prepared if p.transaction is not None])
        return [self._finish(p) for p in prepared]

    def prepare(self, loaded: LoadedBatch, extra_delete_keys: pa.Table | None = None) -> PreparedCommit:
        """Everything of ``apply`` but the commit: the table made or evolved, the files not
        committed yet written into one staged snapshot of a transaction (None: nothing to
        commit). Data and manifest files are written; no snapshot is visible."""
        ref = loaded.batch.table
        rejected = list(loaded.rejected)
        if not loaded.files:
            if extra_delete_keys is not None and extra_delete_keys.num_rows and not rejected:
                return self._delete_only(loaded.batch, extra_delete_keys)
            return PreparedCommit(CommitResult(ref, None, rejected=tuple(rejected)))
        table = self._table(ref, loaded.files)
        if table is None:  # no file with rows to make the table from
            return PreparedCommit(CommitResult(ref, None, rejected=tuple(rejected)))
        self._remote_tables = is_remote(table.location())
        branch = loaded.batch.branch
        ensure_branch(table, branch)
        state = self._markers.read(str(ref), table, branch)
        new = self._new_files(loaded.files, state)
        duplicates = len(loaded.files) - len(new)
        empty = [f for f in new if not f.rows]  # nothing to write; their markers go with the snapshot
        todo = self._evolve(table, [f for f in new if f.rows], rejected)
        evolve_partitioning(table, todo)
        evolve_sort_order(table, todo, self.options.sort_order_for(str(ref)))
        apply_properties(table, self.options.properties_for(str(ref)))
        bare = _commits_without_rows(loaded.batch, new, state, extra_delete_keys)
        while todo or bare:
            if rejected and self.fail_on_reject:
                raise TerminalError("; ".join(r.reason for r in rejected))
            props = self._properties(loaded.batch, [*todo, *empty], state)
            target = table_arrow_schema(table.schema())
            tx = transaction(table)
            try:
                rows, zero = self._write(tx, table, loaded.batch, todo, target, props, state, extra_delete_keys)
            except BadFile as bad:
                rejected.append(Rejected(bad.file.item.event, bad.file.item.position, str(bad)))
                todo = [f for f in todo if f is not bad.file]
                table.refresh()
                continue
            watermark = int(props.get(mk.WATERMARK, -1))
            return PreparedCommit(CommitResult(ref, None, rows, len(todo), duplicates, tuple(rejected), zero, watermark_ms=watermark),
                                  table, tx, todo, branch)
        return PreparedCommit(CommitResult(ref, None, duplicates=duplicates, rejected=tuple(rejected)))

    def _finish(self, prepared: PreparedCommit) -> CommitResult:
        """What landed, once ``prepared`` is committed; the ledger written."""
        table, result = prepared.table, prepared.result
        if table is None or prepared.transaction is None:
            return result
        branch = prepared.branch
        snap = head(table, branch)
        log.info("committed %s%s: %d rows from %d files, snapshot %s", result.table, "" if branch == MAIN else f"@{branch}",
                 result.rows, result.files, snap and snap.snapshot_id)
        if snap is not None and branch == MAIN:  # the ledger follows main; a branch's markers stay in its snapshots
            self._record(table, snap.snapshot_id, prepared.files)
        return replace(result, snapshot_id=snap.snapshot_id if snap else None, snapshots=len(table.metadata.snapshots))

    def _delete_only(self, batch: Batch, keys: pa.Table) -> PreparedCommit:
        ref = batch.table
        try:
            table = self.catalog.load_table((ref.namespace, ref.name))
        except NoSuchTableError:
            return PreparedCommit(CommitResult(ref, None))
        branch = batch.branch
        ensure_branch(table, branch)
        if head(table, branch) is None:
            return PreparedCommit(CommitResult(ref, None))
        state = self._markers.read(str(ref), table, branch)
        tx = transaction(table)
        self._write(tx, table, batch, [], table_arrow_schema(table.schema()), self._properties(batch, [], state), state, keys)
        return PreparedCommit(CommitResult(ref, None), table, tx, branch=branch)

    def _new_files(self, files: Sequence[SourceFile], state: mk.TableMarkers) -> list[SourceFile]:
        """Files not committed before (by event id, or by offset), each event id once (the first
        copy in the batch)."""
        seen = state.event_ids.known(f.item.event.event_id for f in files if f.item.event.event_id is not None)
        new = []
        for f in files:
            event_id = f.item.event.event_id
            if event_id in seen or self._behind_offsets(f, state):
                continue
            if event_id is not None:
                seen.add(event_id)
            new.append(f)
        return new

    def _behind_offsets(self, f: SourceFile, state: mk.TableMarkers) -> bool:
        pos = f.item.position
        if pos is None or self.group is None or f.item.shares_position:
            return False
        return state.committed_offset(self.group, pos.partition) >= pos.offset

    def _record(self, table: Table, snapshot_id: int, files: Sequence[SourceFile]) -> None:
        """Note the commit for the table's ledger, if any (written when due; never raises)."""
        if self.ledger_writes is not None:
            entries = [LedgerEntry(ev.event_id, ev.load_id, ev.location, ev.byte_size) for ev in (f.item.event for f in files)]
            self.ledger_writes.committed(table, snapshot_id, entries)

    def _table(self, ref: TableRef, files: Sequence[SourceFile]) -> Table | None:
        """The table, made from the first file that can make it when missing (None: none can)."""
        ident = (ref.namespace, ref.name)
        try:
            table = self.catalog.load_table(ident)
            return table
        except NoSuchTableError:
            pass
        maker = next((f for f in files if _makes_table(f)), None)
        if maker is None:
            return None
        # with its partition hints (``read`` checked they fit it)
        schema = to_iceberg(maker.schema)
        spec = spec_for(schema, maker.item.event.columns, str(ref))
        with self._lock:
            try:
                self.catalog.create_namespace(ref.namespace)
            except NamespaceAlreadyExistsError:
                pass
        location = self.table_location(ref) if self.table_location else None
        try:
            properties = {**TABLE_PROPERTIES, **self.options.properties_for(str(ref))}
            return self.catalog.create_table(ident, schema=schema, partition_spec=spec, properties=properties, location=location)
        except TableAlreadyExistsError:
            return self.catalog.load_table(ident)

    def _evolve(self, table: Table, files: list[SourceFile], rejected: list[Rejected]) -> list[SourceFile]:
        """Add new columns and nested fields / promote types for all files in one schema update.
        Each file is checked against the schema the files before it grew, so two files that
        disagree on a new column's type never both pass (the later one is rejected)."""
        before = table_arrow_schema(table.schema())
        planned, kept = before, []
        fitting: set[tuple[pa.Schema, frozenset[str]]] = set()  # (schema, null columns) that fit ``planned`` as it is
        for f in files:
            key = (f.schema, f.null_columns)
            if key in fitting:  # checked once per distinct schema
                kept.append(f)
                continue
            try:
                change = evolution(planned, f.schema, f.describe(), self.options.strict_casting, f.null_columns)
            except TerminalError as exc:
                rejected.append(Rejected(f.item.event, f.item.position, str(exc)))
                continue
            kept.append(f)
            if change is None:
                fitting.add(key)
            else:
                planned = evolved(planned, change)
                fitting.clear()
        changed = pa.schema([f for f in planned if f.name not in before.names or not f.equals(before.field(f.name))])
        if changed:
            with table.update_schema() as update:
                update.union_by_name(changed)
            log.info("evolved schema of %s: %s", table.name(), ", ".join(changed.names))
        return kept

    def _properties(self, batch: Batch, files: list[SourceFile], state: mk.TableMarkers) -> dict[str, str]:
        new_offsets: dict[str, int] = {}
        for f in files:
            if f.item.position is not None:
                p = f.item.position
                new_offsets[p.partition] = max(p.offset, new_offsets.get(p.partition, -1))
        newest = max((f.item.time_ms for f in files), default=-1)
        props = {mk.BATCH_ID: batch.batch_id, **state.carried_properties(self.group, new_offsets, newest)}
        event_ids = sorted({f.item.event.event_id for f in files if f.item.event.event_id})
        load_ids = sorted({f.item.event.load_id for f in files if f.item.event.load_id})
        if event_ids:
            props[mk.EVENT_IDS] = json.dumps(event_ids)
        if load_ids:
            props[mk.LOAD_IDS] = json.dumps(load_ids)
        return props

    def _write(
        self, tx: Transaction, table: Table, batch: Batch, files: list[SourceFile], target: pa.Schema,
        props: dict[str, str], state: mk.TableMarkers, extra_delete_keys: pa.Table | None = None,
    ) -> tuple[int, bool]:
        """Fill the transaction's one snapshot; returns (rows written, zero-copy used)."""
        disposition = batch.disposition
        load_id = batch.items[0].event.load_id
        if disposition is WriteDisposition.REPLACE and load_id in state.replace_load_ids:
            disposition = WriteDisposition.APPEND  # a later window of the same replace load
        branch = batch.branch
        if disposition is WriteDisposition.APPEND:
            return append(tx, table, files, target, props, self.options, batch.batch_id, branch)
        if disposition is WriteDisposition.REPLACE:
            if load_id:
                props[mk.REPLACE_LOAD_ID] = load_id
            return replace_all(tx, table, files, target, props, self.options, batch.batch_id, branch)
        return merge_into(tx, table, files, target, props, batch.items[0].event, self.options, batch.batch_id,
                          extra_delete_keys, branch)


async def commit_with_retries(
    committer: SnapshotCommitter,
    batch: Batch,
    retry: RetryPolicy,
    *,
    extra_delete_keys: pa.Table | None = None,
    on_retry: Callable[[BaseException], None] | None = None,
    before_apply: Callable[[LoadedBatch], None] | None = None,
) -> CommitResult:
    """``read`` then ``apply`` in worker threads, each retried under ``retry`` (transient errors;
    ``apply`` is idempotent, so a retry after an unknown commit state commits at most once).
    ``before_apply`` sees the read batch first (and may raise to stop)."""
    loaded = await retry.run(
        lambda: anyio.to_thread.run_sync(committer.read, batch), what=f"read {batch.table}", on_retry=on_retry
    )
    if before_apply is not None:
        before_apply(loaded)
    return await retry.run(
        lambda: anyio.to_thread.run_sync(committer.apply, loaded, extra_delete_keys), what=f"commit {batch.table}",
        on_retry=on_retry,
    )


async def commit_many_with_retries(
    committer: SnapshotCommitter,
    batches: Sequence[tuple[Batch | LoadedBatch, pa.Table | None]],
    retry: RetryPolicy,
    *,
    on_retry: Callable[[BaseException], None] | None = None,
    before_apply: Callable[[LoadedBatch], None] | None = None,
) -> list[CommitResult]:
    """``commit_with_retries`` for batches of different tables committed together
    (``SnapshotCommitter.apply_many``; a ``LoadedBatch`` is taken as read). Each retry of the
    commit refreshes every table and re-reads its markers, so what landed never lands twice."""
    loaded: list[tuple[LoadedBatch, pa.Table | None]] = []
    for item, extra in batches:
        if isinstance(item, Batch):
            batch = item
            item = await retry.run(lambda: anyio.to_thread.run_sync(committer.read, batch), what=f"read {batch.table}",
                                   on_retry=on_retry)
        if before_apply is not None:
            before_apply(item)
        loaded.append((item, extra))
    what = "commit " + ", ".join(str(b.batch.table) for b, _ in loaded)
    return await retry.run(lambda: anyio.to_thread.run_sync(committer.apply_many, loaded), what=what, on_retry=on_retry)
