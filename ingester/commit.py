"""A closed batch -> exactly one Iceberg snapshot (append, replace or merge), idempotently.

``SnapshotCommitter.read`` loads the batch's files (per-file failures are set aside as
rejected, never failing the batch); ``apply`` refreshes the table, drops what the markers
say is already committed, evolves the schema and makes the single commit. ``apply`` is
safe to call again after any failure: it re-reads the markers first. Both block: run them
in worker threads.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import pyarrow as pa
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NamespaceAlreadyExistsError, NoSuchTableError, TableAlreadyExistsError
from pyiceberg.table import Table, Transaction

from ingester import markers as mk
from ingester.errors import TerminalError
from ingester.events import FileEvent, WriteDisposition
from ingester.merge import merge_into, replace_all
from ingester.partitioning import spec_for
from ingester.schema import cast_to, evolution, normalize_schema, table_arrow_schema, to_iceberg
from ingester.sources.base import Position
from ingester.storage import FileReader
from ingester.window import Batch, Pending, TableRef

log = logging.getLogger(__name__)

TABLE_PROPERTIES = {"format-version": "2", "write.parquet.compression-codec": "zstd"}


@dataclass(frozen=True, slots=True)
class Rejected:
    """An event set aside with the reason; goes to the dead letters."""

    event: FileEvent
    position: Position | None
    reason: str


@dataclass(frozen=True, slots=True)
class LoadedFile:
    item: Pending
    data: pa.Table


@dataclass(frozen=True, slots=True)
class LoadedBatch:
    """A batch with its files read into memory: replayable input for ``apply``."""

    batch: Batch
    files: tuple[LoadedFile, ...]
    rejected: tuple[Rejected, ...] = ()


@dataclass(frozen=True, slots=True)
class CommitResult:
    table: TableRef
    snapshot_id: int | None
    rows: int = 0
    files: int = 0
    duplicates: int = 0
    rejected: tuple[Rejected, ...] = field(default=())


class SnapshotCommitter:
    """Commits batches to tables of one catalog. Thread-safe across tables; callers keep
    commits of one table in order (one at a time)."""

    def __init__(
        self,
        catalog: Catalog,
        reader: FileReader,
        *,
        group: str | None = None,
        strict_casting: bool = False,
        merge_batch_size: int = 500_000,
    ) -> None:
        self.catalog = catalog
        self.reader = reader
        self.group = group
        self.strict = strict_casting
        self.merge_batch_size = merge_batch_size
        self._markers = mk.MarkerCache()
        self._lock = threading.Lock()

    def read(self, batch: Batch) -> LoadedBatch:
        """Read every file of the batch; unreadable or refused files become ``rejected``."""
        files, rejected = [], []
        for item in batch.items:
            try:
                data = self.reader.read(item.event)
                data = data.cast(normalize_schema(data.schema, item.event.columns))
                files.append(LoadedFile(item, data))
            except TerminalError as exc:
                rejected.append(Rejected(item.event, item.position, str(exc)))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                rejected.append(Rejected(item.event, item.position, f"{item.event.describe()}: {exc}"))
        return LoadedBatch(batch, tuple(files), tuple(rejected))

    def commit(self, batch: Batch) -> CommitResult:
        """``read`` then ``apply`` (no retries)."""
        return self.apply(self.read(batch))

    def apply(self, loaded: LoadedBatch) -> CommitResult:
        """Make the one snapshot for ``loaded``; returns what landed. Idempotent."""
        batch = loaded.batch
        rejected = list(loaded.rejected)
        if not loaded.files:
            return CommitResult(batch.table, None, rejected=tuple(rejected))
        table = self._table(batch.table, loaded.files)
        key = str(batch.table)
        state = self._markers.read(key, table)
        todo = [f for f in loaded.files if not self._is_duplicate(f.item, state)]
        duplicates = len(loaded.files) - len(todo)
        if not todo:
            return CommitResult(batch.table, None, duplicates=duplicates, rejected=tuple(rejected))
        todo = self._evolve(table, todo, rejected)
        if not todo:
            return CommitResult(batch.table, None, duplicates=duplicates, rejected=tuple(rejected))
        target = table_arrow_schema(table.schema())
        kept, tables = [], []
        for f in todo:
            try:
                tables.append(cast_to(f.data, target, f.item.event.describe(), self.strict))
                kept.append(f)
            except TerminalError as exc:
                rejected.append(Rejected(f.item.event, f.item.position, str(exc)))
        if not tables:
            return CommitResult(batch.table, None, duplicates=duplicates, rejected=tuple(rejected))
        data = pa.concat_tables(tables)
        props = self._properties(batch, kept, state)
        with table.transaction() as tx:
            self._write(tx, table, batch, data, props, state)
        snap = table.current_snapshot()
        log.info("committed %s: %d rows, %d files, snapshot %s", key, data.num_rows, len(kept), snap and snap.snapshot_id)
        return CommitResult(
            batch.table,
            snap.snapshot_id if snap else None,
            rows=data.num_rows,
            files=len(kept),
            duplicates=duplicates,
            rejected=tuple(rejected),
        )

    def _is_duplicate(self, item: Pending, state: mk.TableMarkers) -> bool:
        ev, pos = item.event, item.position
        if ev.event_id is not None and ev.event_id in state.event_ids:
            return True
        return pos is not None and self.group is not None and state.committed_offset(self.group, pos.partition) >= pos.offset

    def _table(self, ref: TableRef, files: Sequence[LoadedFile]) -> Table:
        ident = (ref.namespace, ref.name)
        try:
            table = self.catalog.load_table(ident)
            table.refresh()
            return table
        except NoSuchTableError:
            pass
        first = files[0]
        schema = to_iceberg(first.data.schema)
        columns = {k: v for f in files for k, v in f.item.event.columns.items()}
        spec = spec_for(schema, columns, str(ref))
        with self._lock:
            try:
                self.catalog.create_namespace(ref.namespace)
            except NamespaceAlreadyExistsError:
                pass
        try:
            return self.catalog.create_table(ident, schema=schema, partition_spec=spec, properties=TABLE_PROPERTIES)
        except TableAlreadyExistsError:
            return self.catalog.load_table(ident)

    def _evolve(self, table: Table, files: list[LoadedFile], rejected: list[Rejected]) -> list[LoadedFile]:
        """Add new columns / promote types for all files in one schema update."""
        kept, changes = [], []
        for f in files:
            try:
                change = evolution(table.schema(), f.data.schema, f.item.event.describe(), self.strict)
            except TerminalError as exc:
                rejected.append(Rejected(f.item.event, f.item.position, str(exc)))
                continue
            kept.append(f)
            if change is not None:
                changes.append(change)
        if changes:
            merged = pa.unify_schemas(changes, promote_options="permissive")
            with table.update_schema() as update:
                update.union_by_name(merged)
            log.info("evolved schema of %s: %s", table.name(), ", ".join(merged.names))
        return kept

    def _properties(self, batch: Batch, files: list[LoadedFile], state: mk.TableMarkers) -> dict[str, str]:
        new_offsets: dict[str, int] = {}
        for f in files:
            if f.item.position is not None:
                p = f.item.position
                new_offsets[p.partition] = max(p.offset, new_offsets.get(p.partition, -1))
        props = {mk.BATCH_ID: batch.batch_id, **state.offset_properties(self.group, new_offsets)}
        event_ids = sorted({f.item.event.event_id for f in files if f.item.event.event_id})
        load_ids = sorted({f.item.event.load_id for f in files if f.item.event.load_id})
        if event_ids:
            props[mk.EVENT_IDS] = json.dumps(event_ids)
        if load_ids:
            props[mk.LOAD_IDS] = json.dumps(load_ids)
        return props

    def _write(
        self, tx: Transaction, table: Table, batch: Batch, data: pa.Table, props: dict[str, str], state: mk.TableMarkers
    ) -> None:
        disposition = batch.disposition
        load_id = batch.items[0].event.load_id
        if disposition is WriteDisposition.REPLACE and load_id in state.replace_load_ids:
            disposition = WriteDisposition.APPEND  # a later window of the same replace load
        if disposition is WriteDisposition.APPEND:
            tx.append(data, snapshot_properties=props)
        elif disposition is WriteDisposition.REPLACE:
            if load_id:
                props[mk.REPLACE_LOAD_ID] = load_id
            replace_all(tx, table, data, props)
        else:
            first = batch.items[0].event
            merge_into(tx, table, data, props, first, self.merge_batch_size)
