"""The dedupe ledger: an Iceberg table beside each data table recording what was committed to it.

``<namespace>.ingester_ledger__<table>`` holds one row per committed file (event id, load id,
location, size), per event id and per replace load id read back from a snapshot's markers, each
with the data snapshot (id, sequence number, epoch milliseconds: a long, so that writing it needs
no time zone data) that committed it and the data table's uuid.
Its table property ``ingester.ledger.covers.<uuid>`` is the sequence number up to which every
marker of the data table is in the ledger (the watermark).

One ledger per data table, not one per namespace: each is written and maintained by its table's
own commit worker, so ledger writes of different tables never conflict, and a table's history is
read without filtering the others out. The ``ingester_ledger__`` prefix starts with a letter
(SeaweedFS / S3 Tables refuse names like ``_dlt_loads``) and is not a dlt table name. A data table
dropped and created again has a new uuid: rows and watermark of the old one are not read.

Not atomic with the data commit: the data snapshot's markers stay the truth for the newest
commits. ``sync`` writes what the snapshots after the watermark hold (the committer calls it
once its lag is up, ``commit.ledger_writes``; maintenance before expiring, so a lag or what a crash
left is repaired), and maintenance expires a snapshot with dedupe markers only once the watermark
covers it.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.compute as pc
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError, TableAlreadyExistsError, ValidationException
from pyiceberg.expressions import EqualTo
from pyiceberg.schema import Schema
from pyiceberg.table import Table
from pyiceberg.table.snapshots import Snapshot
from pyiceberg.types import FixedType, LongType, NestedField, StringType

from ingester.event_ids import DIGEST_BYTES, Digests, EventIds, as_digests, digest
from ingester.iceberg_layer import markers as mk
from ingester.iceberg_layer.markers import LedgerHistory
from ingester.iceberg_layer.transactions import transaction

log = logging.getLogger(__name__)

PREFIX = "ingester_ledger__"
COVERS = "ingester.ledger.covers."
"""Table property prefix (+ data table uuid): the sequence number the ledger covers."""
FILE, EVENT, REPLACE_LOAD = "file", "event", "replace-load"
"""Row kinds: a file of our own commit; an event id or a replace load id from a snapshot's markers."""

SCHEMA = Schema(
    NestedField(1, "table_uuid", StringType(), required=False),
    NestedField(2, "snapshot_id", LongType(), required=False),
    NestedField(3, "sequence_number", LongType(), required=False),
    NestedField(4, "committed_at_ms", LongType(), required=False),
    NestedField(5, "kind", StringType(), required=False),
    NestedField(6, "event_id", StringType(), required=False),
    NestedField(7, "event_digest", FixedType(DIGEST_BYTES), required=False),
    NestedField(8, "load_id", StringType(), required=False),
    NestedField(9, "location", StringType(), required=False),
    NestedField(10, "byte_size", LongType(), required=False),
)
ARROW_SCHEMA = SCHEMA.as_arrow()
PROPERTIES = {"format-version": "2", "write.parquet.compression-codec": "zstd"}


def ledger_name(table_name: str) -> str:
    return PREFIX + table_name


def is_ledger(table_name: str) -> bool:
    return table_name.startswith(PREFIX)


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """A file of our own commit, as the ledger records it."""

    event_id: str | None
    load_id: str | None
    location: str | None
    byte_size: int


class Ledger:
    """The ledgers of one catalog's tables. Blocking. Thread-safe across tables; for one table,
    one writer at a time (as ``SnapshotCommitter``). Raises catalog and storage errors."""

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self._tables: dict[tuple[str, ...], Table] = {}
        self._lock = threading.Lock()

    def history(self, table: Table) -> LedgerHistory:
        """Everything the ledger of ``table`` holds (empty without a ledger)."""
        ledger = self.table_of(table)
        if ledger is None:
            return LedgerHistory()
        uuid = str(table.metadata.table_uuid)
        ids = EventIds()
        replace: set[str] = set()
        mine = EqualTo("table_uuid", uuid)  # type: ignore[call-arg, misc]  # pydantic plugin misreads __init__
        scan = ledger.scan(row_filter=mine, selected_fields=("kind", "event_digest", "load_id"))
        for batch in scan.to_arrow_batch_reader():
            for chunk in _chunks(pc.drop_null(batch.column("event_digest"))):
                ids.add_digests(_digests(chunk))
            kinds = batch.column("kind")
            replace.update(batch.column("load_id").filter(pc.equal(kinds, REPLACE_LOAD)).to_pylist())
        return LedgerHistory(ids, frozenset(replace), covers(ledger, uuid))

    def covered(self, table: Table) -> int:
        """The watermark of ``table``'s ledger, read fresh from the catalog (-1: none)."""
        ledger = self.table_of(table, refresh=True)
        return covers(ledger, str(table.metadata.table_uuid)) if ledger is not None else -1

    def sync(self, table: Table, own: Mapping[int, Sequence[LedgerEntry]] = {}) -> int:
        """Record what the snapshots of ``table`` after the watermark hold, and move the watermark
        to the current snapshot, in one ledger commit; ``own``: the files of our own snapshots
        (by snapshot id), recorded with their locations. Returns the rows written. A ledger
        changed meanwhile (another writer, maintenance) is read again and the sync redone once."""
        head = table.current_snapshot()
        if head is None:
            return 0
        try:
            return self._sync(table, head, self.table_of(table) or self._create(table), own)
        except (CommitFailedException, ValidationException):
            ledger = self.table_of(table, refresh=True)
            if ledger is None:
                raise
            return self._sync(table, head, ledger, own)
        except Exception:
            self._forget(table)  # read it fresh next time
            raise

    def _sync(self, table: Table, head: Snapshot, ledger: Table, own: Mapping[int, Sequence[LedgerEntry]]) -> int:
        uuid = str(table.metadata.table_uuid)
        watermark = covers(ledger, uuid)
        if sequence(head) <= watermark:
            return 0
        rows = list(_rows(table, uuid, watermark, own))
        with transaction(ledger) as tx:
            if rows:
                tx.append(pa.Table.from_pylist(rows, ARROW_SCHEMA))
            tx.set_properties({COVERS + uuid: str(sequence(head))})
        return len(rows)

    def table_of(self, table: Table, refresh: bool = False) -> Table | None:
        """The ledger table of ``table``, None while there is none."""
        key = _ident(table)
        cached = self._tables.get(key)
        if cached is not None and not refresh:
            return cached
        try:
            ledger = self.catalog.load_table(key)
        except NoSuchTableError:
            return None
        self._tables[key] = ledger
        return ledger

    def _create(self, table: Table) -> Table:
        key = _ident(table)
        with self._lock:
            try:
                ledger = self.catalog.create_table(key, schema=SCHEMA, properties=PROPERTIES)
            except TableAlreadyExistsError:
                ledger = self.catalog.load_table(key)
            self._tables[key] = ledger
            return ledger

    def _forget(self, table: Table) -> None:
        self._tables.pop(_ident(table), None)


def sequence(snap: Snapshot) -> int:
    """A snapshot's sequence number (format v1 has none: 0)."""
    return snap.sequence_number or 0


def covers(ledger: Table, uuid: str) -> int:
    return int(ledger.metadata.properties.get(COVERS + uuid, -1))


def _ident(table: Table) -> tuple[str, ...]:
    *namespace, name = table.name()
    return (*namespace, ledger_name(name))


def _chunks(column: pa.ChunkedArray | pa.Array) -> list[pa.Array]:
    return list(column.chunks) if isinstance(column, pa.ChunkedArray) else [column]


def _digests(chunk: pa.Array) -> Digests:
    """A fixed_size_binary(16) array without nulls as ``EventIds`` digests (no copy)."""
    raw = chunk.buffers()[1]
    start = chunk.offset * DIGEST_BYTES
    return as_digests(memoryview(raw)[start:start + len(chunk) * DIGEST_BYTES])


def _rows(table: Table, uuid: str, watermark: int, own: Mapping[int, Sequence[LedgerEntry]]) -> Iterator[dict[str, object]]:
    """Ledger rows for the snapshots of the current lineage after ``watermark``, newest first."""
    for snap in _after(table, watermark):
        base = {"table_uuid": uuid, "snapshot_id": snap.snapshot_id, "sequence_number": sequence(snap),
                "committed_at_ms": snap.timestamp_ms}
        summary = snap.summary.additional_properties if snap.summary else {}
        if snap.snapshot_id in own:
            for e in own[snap.snapshot_id]:
                yield {**base, "kind": FILE, "event_id": e.event_id, "event_digest": digest(e.event_id) if e.event_id else None,
                       "load_id": e.load_id, "location": e.location, "byte_size": e.byte_size}
        else:
            for event_id in json.loads(summary.get(mk.EVENT_IDS, "[]")):
                yield {**base, "kind": EVENT, "event_id": event_id, "event_digest": digest(event_id)}
        if mk.REPLACE_LOAD_ID in summary:
            yield {**base, "kind": REPLACE_LOAD, "load_id": summary[mk.REPLACE_LOAD_ID]}


def _after(table: Table, watermark: int) -> Iterator[Snapshot]:
    """The current lineage down to (not including) sequence number ``watermark``."""
    meta = table.metadata
    snap = table.current_snapshot()
    oldest = None
    while snap is not None and sequence(snap) > watermark:
        yield snap
        oldest = snap
        snap = meta.snapshot_by_id(snap.parent_snapshot_id) if snap.parent_snapshot_id is not None else None
    if oldest is not None and snap is None and watermark >= 0 and sequence(oldest) - 1 > watermark:
        log.warning("%s: snapshots after sequence number %d were expired before the ledger recorded their markers; "
                    "their event ids are not deduped", ".".join(table.name()), watermark)
