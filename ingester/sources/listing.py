"""Listing discovery (``source.kind = "listing"``, ``ingester backfill``): each round lists the
prefixes (``objects.prefixes``), routes each object by its key (``KeyRouter``), drops what is
already loaded and what is in flight, and hands the rest on as envelopes.

"Already loaded" is what the routed table holds: the event ids of its snapshots' markers and of
its ledger, read the way the committer reads them (``MarkerCache``), refreshed once per round.
The event id is the object's identity (location, etag, size), so a file loaded by a notification,
by an earlier round or before a restart is not loaded again; the ledger is the durable record.
Objects acked by this process are remembered too (16 bytes each, ``EventIds``), so a file set
aside (a bad parquet) is not tried again each round; a restart tries it once more.

Positions: one partition per prefix, ``listing/<prefix>``; offsets are nanoseconds since the
epoch when the object was handed on, at least one above the last one and above what the routed
table's offset markers hold for the partition (a clock set back), so the committer's offset
markers never mistake a new object for a replayed one. One listing daemon per prefix: two
would both load a file the other has in flight (the event ids keep it once per table). ``commit`` only frees
in-flight slots: at most ``max_inflight_files`` are handed on and not acked at once. An object no
route matches is handed on as a message the engine dead-letters with the reason, once per
process. ``is_idle``: a finished round found nothing new, and nothing is in flight (or, with
``rounds``, that many rounds are done and nothing is in flight).
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import anyio
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError

from ingester.batch import TableRef
from ingester.event_ids import EventIds
from ingester.events import FileEvent, InvalidEvent, encode_event
from ingester.iceberg_layer.ledger import Ledger
from ingester.iceberg_layer.markers import MarkerCache, TableMarkers
from ingester.metrics import SKIP_REASONS, Metrics
from ingester.object_keys import KeyRouter, ObjectRef
from ingester.routing import Router
from ingester.sources.base import Message, Pausable, Position, RevokeCallback
from ingester.sources.listers import ListedObject, ObjectLister

log = logging.getLogger(__name__)

SOURCE_LABEL = "listing"
PARTITION_PREFIX = "listing/"
IDLE_SLEEP_S = 0.05


class CommittedIds:
    """What each table holds (snapshot markers + ledger), read once per round. Blocking (catalog calls)."""

    def __init__(self, catalog: Catalog) -> None:
        self._catalog = catalog
        self._markers = MarkerCache(Ledger(catalog).history)
        self._fresh: dict[TableRef, TableMarkers | None] = {}

    def new_round(self) -> None:
        self._fresh.clear()

    def known(self, table: TableRef, event_ids: Iterable[str]) -> set[str]:
        """The ones of ``event_ids`` committed to ``table``."""
        markers = self._read(table)
        return markers.event_ids.known(event_ids) if markers is not None else set()

    def offset(self, table: TableRef, group: str, partition: str) -> int:
        """The offset of ``partition`` the table's markers hold for ``group`` (-1: none)."""
        markers = self._read(table)
        return markers.committed_offset(group, partition) if markers is not None else -1

    def _read(self, table: TableRef) -> TableMarkers | None:
        if table not in self._fresh:
            try:
                loaded = self._catalog.load_table((table.namespace, table.name))
            except (NoSuchTableError, NoSuchNamespaceError):
                self._fresh[table] = None
            else:
                self._fresh[table] = self._markers.read(str(table), loaded)
        return self._fresh[table]


@dataclass(frozen=True, slots=True)
class _Found:
    """A listed object to hand on: its event, or why it cannot be one."""

    partition: str
    listed: ListedObject
    event: FileEvent | None
    unroutable: str | None = None

    @property
    def event_id(self) -> str:
        return self.listed.ref.event_id()


@dataclass(frozen=True, slots=True)
class ListingStats:
    rounds: int
    listing: bool
    inflight: int
    last_round_new: int


class ListingSource(Pausable):
    """``Source`` over listings of ``prefixes`` every ``interval_s`` (the first round at once)."""

    def __init__(
        self,
        prefixes: Sequence[str],
        lister: ObjectLister,
        keys: KeyRouter,
        tables: Router,
        committed: CommittedIds,
        *,
        group: str | None,
        interval_s: float,
        max_inflight_files: int,
        rounds: int | None = None,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not prefixes:
            raise ValueError("a listing source needs at least one prefix (objects.prefixes)")
        self.group = group
        self._prefixes = tuple(prefixes)
        self._lister = lister
        self._keys = keys
        self._tables = tables
        self._committed = committed
        self._interval_s = interval_s
        self._max_inflight = max_inflight_files
        self._rounds_limit = rounds
        self._metrics = metrics or Metrics()
        self._clock = clock
        self._round: Iterator[tuple[str, list[ListedObject]]] | None = None
        self._round_seconds = 0.0
        self._round_new = 0
        self._rounds = 0
        self._last_round_new = 0
        self._next_round_at = -float("inf")
        self._ready: deque[_Found] = deque()
        self._inflight: dict[str, deque[tuple[int, str, float]]] = {}
        self._inflight_ids: set[str] = set()
        self._handled = EventIds()
        self._unroutable: set[str] = set()
        self._last_offset = 0

    # ------------------------------------------------------------ Source
    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        """Up to ``max_records`` objects not loaded, while in-flight room lasts; lists (in a thread)
        for at most about ``timeout_s`` per call. Raises ``ListingFailed`` / ``ConnectionError``."""
        out: list[Message] = []
        deadline = self._clock() + timeout_s
        while not self._paused and len(out) < max_records and len(self._inflight_ids) < self._max_inflight:
            if self._ready:
                out.append(self._hand_on(self._ready.popleft()))
            elif self._clock() >= deadline or not await self._next_page():
                break
        self._measure_age()
        if not out:
            await anyio.sleep(min(timeout_s, IDLE_SLEEP_S))
        return out

    async def commit(self, offsets: Mapping[str, int]) -> None:
        """Free the slots of everything below ``offsets`` (the ledger is the durable record)."""
        for partition, upto in offsets.items():
            slots = self._inflight.get(partition)
            while slots and slots[0][0] < upto:
                _, event_id, _ = slots.popleft()
                self._inflight_ids.discard(event_id)
                if event_id not in self._unroutable:
                    self._handled.add(event_id)
        self._measure_age()

    def on_revoke(self, callback: RevokeCallback) -> None:
        """Listing partitions are never taken away."""

    async def is_idle(self) -> bool:
        if self._round is not None or self._ready or self._inflight_ids or not self._rounds:
            return False
        return self._last_round_new == 0 or self._rounds_done()

    async def aclose(self) -> None:
        self._round = None

    def statistics(self) -> ListingStats:
        return ListingStats(self._rounds, self._round is not None, len(self._inflight_ids), self._last_round_new)

    # ------------------------------------------------------------ rounds
    def _rounds_done(self) -> bool:
        return self._rounds_limit is not None and self._rounds >= self._rounds_limit

    def _pages(self) -> Iterator[tuple[str, list[ListedObject]]]:
        for prefix in self._prefixes:
            for page in self._lister.pages(prefix):
                yield PARTITION_PREFIX + prefix, page

    async def _next_page(self) -> bool:
        """Take the next page of the round (starting one when due) into ``_ready``; False when
        there is nothing to list now. A failed listing ends the round (the next starts afresh)."""
        if self._round is None:
            if self._rounds_done() or self._clock() < self._next_round_at:
                return False
            self._round, self._round_seconds, self._round_new = self._pages(), 0.0, 0
            self._committed.new_round()
        started = self._clock()
        try:
            item = await anyio.to_thread.run_sync(next, self._round, None, abandon_on_cancel=True)
            if item is not None:
                await self._sort(*item)
        except BaseException:
            self._round = None
            self._next_round_at = self._clock() + min(self._interval_s, 1.0)
            raise
        finally:
            self._round_seconds += self._clock() - started
        if item is None:
            self._end_round()
            return False
        return True

    def _end_round(self) -> None:
        self._round = None
        self._rounds += 1
        self._last_round_new = self._round_new
        self._next_round_at = self._clock() + self._interval_s
        self._metrics.listing_seconds.labels(SOURCE_LABEL).observe(self._round_seconds)
        self._metrics.listing_last_round.labels(SOURCE_LABEL).set_to_current_time()
        log.info("listing round %d: %d new objects under %s in %.2f s", self._rounds, self._round_new,
                 ", ".join(self._prefixes), self._round_seconds)

    async def _sort(self, partition: str, page: list[ListedObject]) -> None:
        """Each object of ``page`` into ``_ready`` (new) or a skip reason."""
        skipped = dict.fromkeys(SKIP_REASONS, 0)
        fresh: list[_Found] = []
        candidates: dict[TableRef, list[_Found]] = {}
        for listed in page:
            ref = listed.ref
            event_id = ref.event_id()
            if not self._keys.watches(ref):
                skipped["unwatched"] += 1
            elif event_id in self._inflight_ids:
                skipped["in_flight"] += 1
            elif event_id in self._unroutable:
                skipped["unroutable"] += 1
            elif event_id in self._handled:
                skipped["already_loaded"] += 1
            else:
                found = self._route(partition, listed)
                if found is None:
                    skipped["suffix"] += 1
                elif isinstance(found, _Found):
                    fresh.append(found)  # unroutable: dead-lettered once
                else:
                    candidates.setdefault(found[0], []).append(found[1])
        if candidates:
            loaded, behind = await anyio.to_thread.run_sync(self._loaded, partition, candidates, abandon_on_cancel=True)
            self._last_offset = max(self._last_offset, behind)
            for items in candidates.values():
                new = [f for f in items if f.event_id not in loaded]
                skipped["already_loaded"] += len(items) - len(new)
                fresh.extend(new)
        self._ready.extend(fresh)
        self._round_new += len(fresh)
        self._metrics.objects_discovered.labels(SOURCE_LABEL).inc(sum(1 for f in fresh if f.event is not None))
        for reason, n in skipped.items():
            if n:
                self._metrics.objects_skipped.labels(SOURCE_LABEL, reason).inc(n)

    def _route(self, partition: str, listed: ListedObject) -> _Found | tuple[TableRef, _Found] | None:
        """``None``: its route skips it; a ``_Found`` alone: no route (to dead-letter); else its table."""
        try:
            event = self._keys.route(listed.ref)
            if event is None:
                return None
            return self._tables.route(event), _Found(partition, listed, event)
        except InvalidEvent as exc:  # Unroutable, or a {table} the routing settings make invalid
            self._metrics.objects_skipped.labels(SOURCE_LABEL, "unroutable").inc()
            return _Found(partition, listed, None, str(exc))

    def _loaded(self, partition: str, candidates: Mapping[TableRef, list[_Found]]) -> tuple[set[str], int]:
        """The candidates already committed, and the highest offset of ``partition`` the tables'
        markers hold (new offsets go above it whatever the clock says)."""
        loaded: set[str] = set()
        behind = -1
        for table, items in candidates.items():
            loaded |= self._committed.known(table, (f.event_id for f in items))
            if self.group is not None:  # beside SQS there are no offset markers
                behind = max(behind, self._committed.offset(table, self.group, partition))
        return loaded, behind

    def _hand_on(self, found: _Found) -> Message:
        self._last_offset = max(self._last_offset + 1, time.time_ns())
        event_id = found.event_id
        self._inflight.setdefault(found.partition, deque()).append((self._last_offset, event_id, found.listed.mtime_s))
        self._inflight_ids.add(event_id)
        position = Position(found.partition, self._last_offset)
        if found.event is None:
            self._unroutable.add(event_id)
            ref = found.listed.ref
            body = {"location": ref.location, "size": ref.size, "etag": ref.etag}
            return Message(json.dumps(body).encode(), position, invalid=found.unroutable)
        return Message(encode_event(found.event), position, timestamp=found.listed.mtime_s)  # a listed object's time is its mtime

    def _measure_age(self) -> None:
        oldest = min((m for slots in self._inflight.values() for _, _, m in slots), default=None)
        if self._ready:
            ready = min(f.listed.mtime_s for f in self._ready)
            oldest = ready if oldest is None else min(oldest, ready)
        age = max(0.0, time.time() - oldest) if oldest is not None else 0.0
        self._metrics.oldest_unloaded_age.labels(SOURCE_LABEL).set(age)
