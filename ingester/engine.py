"""The streaming engine: source -> decode -> window -> commit -> ack, in one anyio task group.

Backpressure: admission is refused when in-flight bytes would pass the budget; then the
source is paused, the largest open window is flushed, and the loop keeps polling (a Kafka
consumer stays in its group) until commits free room. Acks follow commits, never precede: the
consume loop acks once per poll whatever was committed meanwhile (one spool transaction or one
offset commit per poll, not per batch). Per event the loop does O(1) work; metrics are counted
once per poll.
Table maintenance (``ingester.maintenance``) runs in a table's worker between its batches when due.
A ``CommitHook`` (the wiring injects the crash tests' one) is told each batch's two moments:
``before-commit`` (read, not yet applied) and ``after-commit`` (committed, not yet acked).

Stopping: ``stop()`` cancels whatever the consume loop waits on (a poll, the source's
connection or group join, a retry's backoff sleep), then the open windows are committed and
acked. With a timeout, commits still running at the deadline are cancelled: their events stay
unacked and are delivered again (the snapshot markers drop what did land), and the log says so.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Collection
from dataclasses import dataclass
from typing import Protocol, TypeVar

import anyio
from anyio.abc import TaskGroup
from anyio.lowlevel import EventLoopToken, current_token
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ingester.batch import Batch, Pending, TableRef
from ingester.commit.committer import CommitResult, SnapshotCommitter, commit_many_with_retries, commit_with_retries
from ingester.deadletter import DeadLetter, DeadLetterSink
from ingester.decoding import ALREADY_LOADED, Decoded, EnvelopeDecoder, MessageDecoder
from ingester.events import InvalidEvent, encode_event
from ingester.maintenance.schedule import MaintenanceSchedule
from ingester.metrics import Heartbeat, Metrics, ReportsLag
from ingester.retry import RetryPolicy
from ingester.routing import Router
from ingester.sources.base import Message, OffsetTracker, Source
from ingester.window import BatchLimits, InflightBudget, WindowSet

log = logging.getLogger(__name__)
T = TypeVar("T")

WORKER_QUEUE_BATCHES = 4
MAX_GROUP_BATCHES = WORKER_QUEUE_BATCHES + 1
"""Batches of different tables one worker commits together at most (its queue and one held)."""
FINAL_ACK_TIMEOUT_S = 5.0
"""After a stop with a timeout: how long the last offset commit may take (a broker that is away)."""


class CommitHook(Protocol):
    def __call__(self, point: str, snapshots: int) -> None:
        """At ``point`` (``before-commit`` / ``after-commit``) of a batch, ``snapshots`` committed so far."""


@dataclass(frozen=True, slots=True)
class EngineStats:
    events: int
    rows: int
    snapshots: int
    duplicates: int
    dead_letters: int
    retries: int
    inflight_bytes: int
    peak_inflight_bytes: int
    max_inflight_bytes: int
    pauses: int
    paused: bool
    open_windows: int


class Engine:
    """Consumes ``source`` until ``stop()`` (drains, commits, acks) or, with
    ``exit_when_idle``, until the queue is empty and everything admitted is committed."""

    def __init__(
        self,
        source: Source,
        committer: SnapshotCommitter,
        deadletters: DeadLetterSink,
        *,
        limits: BatchLimits,
        max_inflight_bytes: int,
        router: Router,
        workers: int = 4,
        retry: RetryPolicy | None = None,
        poll_max_records: int = 500,
        poll_timeout_s: float = 0.2,
        revoke_timeout_s: float = 20.0,
        metrics: Metrics | None = None,
        maintenance: MaintenanceSchedule | None = None,
        commit_hook: CommitHook | None = None,
        clock: Callable[[], float] = time.monotonic,
        decoder: MessageDecoder | None = None,
    ) -> None:
        self.source = source
        self.decoder = decoder or EnvelopeDecoder()
        self.committer = committer
        self.deadletters = deadletters
        self.router = router
        self.windows = WindowSet(limits, clock)
        self.budget = InflightBudget(max_inflight_bytes)
        self.tracker = OffsetTracker()
        self.retry = retry or RetryPolicy(max_retries=None)
        self.metrics = metrics or Metrics()
        self.heartbeat = Heartbeat()
        self.maintenance = maintenance
        self._hook = commit_hook
        self._workers = workers
        self._poll_max = poll_max_records
        self._poll_timeout = poll_timeout_s
        self._revoke_timeout = revoke_timeout_s
        self._sends: list[MemoryObjectSendStream[Batch]] = []
        self._outbox: deque[Batch] = deque()
        self._held: deque[tuple[Message, Pending, TableRef]] = deque()
        self._stop = anyio.Event()
        self._stop_by = math.inf
        self._stop_within = math.inf
        self._waiting: anyio.CancelScope | None = None
        self._group: TaskGroup | None = None
        self._loop: tuple[EventLoopToken, int] | None = None
        self._progress = anyio.Event()
        self._ack_lock = anyio.Lock()
        self._paused = False
        self._running = False
        self._revocations = 0
        self._revoked_at: dict[str, int] = {}
        self._lag_of = source.lag if isinstance(source, ReportsLag) else None
        self._counts = {"events": 0, "rows": 0, "snapshots": 0, "duplicates": 0, "dead_letters": 0, "retries": 0, "pauses": 0}

    # ----------------------------------------------------------------- public
    def stop(self, timeout_s: float | None = None) -> None:
        """Ask for a graceful stop: cancel what the consume loop waits on (poll, connect, group
        join, backoff sleep), drain the open windows, commit, ack. With ``timeout_s``, what is
        still committing that long after is abandoned (left unacked) and ``run`` returns.
        Idempotent (a later timeout only shortens the bound); safe from any thread."""
        if self._loop is not None and threading.get_ident() != self._loop[1]:
            anyio.from_thread.run_sync(self._stop_now, timeout_s, token=self._loop[0])
        else:
            self._stop_now(timeout_s)

    def _stop_now(self, timeout_s: float | None) -> None:
        self._stop.set()
        if self._waiting is not None:
            self._waiting.cancel()
        if timeout_s is None:
            return
        if self._loop is None:  # before run(): the bound starts when it does
            self._stop_within = min(self._stop_within, timeout_s)
        else:
            self._stop_by = min(self._stop_by, anyio.current_time() + timeout_s)
        if self._group is not None:
            self._group.cancel_scope.deadline = self._stop_by

    @property
    def ready(self) -> bool:
        return self._running

    def statistics(self) -> EngineStats:
        c = self._counts
        return EngineStats(
            events=c["events"], rows=c["rows"], snapshots=c["snapshots"], duplicates=c["duplicates"],
            dead_letters=c["dead_letters"], retries=c["retries"], inflight_bytes=self.budget.used,
            peak_inflight_bytes=self.budget.peak, max_inflight_bytes=self.budget.max_bytes,
            pauses=c["pauses"], paused=self._paused, open_windows=len(self.windows),
        )

    async def run(self, *, exit_when_idle: bool = False) -> EngineStats:
        self.source.on_revoke(self._on_revoke)
        self._loop = (current_token(), threading.get_ident())
        async with anyio.create_task_group() as tg:
            self._group = tg
            self._stop_by = min(self._stop_by, anyio.current_time() + self._stop_within)
            tg.cancel_scope.deadline = self._stop_by
            for _ in range(self._workers):
                send, receive = anyio.create_memory_object_stream[Batch](WORKER_QUEUE_BATCHES)
                self._sends.append(send)
                tg.start_soon(self._worker, receive)
            self._running = True
            await self._consume(exit_when_idle)
            await self._flush_all()
            for send in self._sends:
                send.close()
        self._running = False
        self._group = self._loop = None
        if tg.cancel_scope.cancelled_caught:
            self._log_abandoned()
        with anyio.move_on_after(FINAL_ACK_TIMEOUT_S if self._stop_by < math.inf else math.inf) as ack:
            await self._ack()
        if ack.cancelled_caught:
            log.warning("stop: the last offset commit did not finish in %.0f s: %s (the snapshot markers "
                        "keep those events once when they come again)", FINAL_ACK_TIMEOUT_S, self.tracker.committable())
        return self.statistics()

    def _log_abandoned(self) -> None:
        held = len({m.position for m, _, _ in self._held})
        log.warning(
            "stop: abandoned after the shutdown timeout: %d admitted events (%d bytes) not committed and %d read but "
            "not admitted; none of them is acked, the queue delivers them again", self.tracker.pending() - held,
            self.budget.used, held,
        )

    async def _unless_stopped(self, wait: Callable[[], Awaitable[T]], stopped: T, what: str) -> T:
        """``wait()``, or ``stopped`` once ``stop()`` is (or was) called: the wait is cancelled."""
        if self._stop.is_set():
            return stopped
        with anyio.CancelScope() as scope:
            self._waiting = scope
            try:
                return await wait()
            finally:
                self._waiting = None
        log.info("stop: abandoned waiting to %s", what)
        return stopped

    # ------------------------------------------------------------ consuming
    async def _consume(self, exit_when_idle: bool) -> None:
        while not self._stop.is_set():
            self.heartbeat.beat()
            polled = 0
            if exit_when_idle and len(self.windows) and not self._held and await self._is_idle():
                pass  # nothing more is queued: drain now rather than wait out a poll
            elif not self._held:
                polled = await self._poll(self._poll_timeout)
            await self._admit_held()
            if self.tracker.committable():  # dead letters move the watermark without a commit
                await self._ack()
            self._outbox.extend(self.windows.due())
            self._dispatch_nowait()
            if self._held or self._outbox:
                await self._wait_for_room()
            elif self._paused:
                self.source.resume()
                self._paused = False
                self.metrics.paused.set(0)
            if exit_when_idle and not polled and not self._held and not self._outbox:
                if len(self.windows):
                    self._outbox.extend(self.windows.drain())
                    self._dispatch_nowait()
                if await self._drained():
                    return

    async def _drained(self) -> bool:
        """For ``exit_when_idle``: wait for the commits in flight (still polling briefly, so a
        new message ends the wait), then say whether the queue is empty and all is acked."""
        while self.budget.used and not (self._held or self._outbox or self._stop.is_set()):  # the loop dispatches the outbox
            await self._await_progress(self._poll_timeout)
            if self.budget.used:
                await self._poll(0.001)
        if self._held or self._outbox or self.budget.used or self.tracker.pending():
            return False
        return await self._is_idle()

    async def _is_idle(self) -> bool:
        return await self._unless_stopped(self.source.is_idle, False, "learn whether the queue is empty")

    async def _poll(self, timeout_s: float) -> int:
        """Poll and decode into ``_held``; returns the number of messages polled.

        A revoke callback can run while a dead letter is written here: the rest of the
        messages of the revoked partitions are dropped (not tracked), their new owner reads
        them again. Admitting them would commit past the held ones the revoke dropped.
        """
        none: list[Message] = []
        messages = await self._unless_stopped(lambda: self.retry.run(
            lambda: self.source.poll(self._poll_max, timeout_s), what="poll the source", on_retry=self._retried
        ), none, "poll the source")
        revocations = self._revocations
        for m in messages:
            if self._revoked_at.get(m.position.partition, 0) <= revocations:
                self._held.extend((m, pending, table) for pending, table in await self._decode(m))
        if self._lag_of is not None:
            self.metrics.set_lag(self._lag_of())
        return len(messages)

    async def _decode(self, m: Message) -> list[tuple[Pending, TableRef]]:
        """Track (in read order), decode and route; invalid messages, and objects no route takes,
        go to the dead letters. The position is done once every event of the message is committed
        (at once when it holds none)."""
        where = f"{m.position.partition}@{m.position.offset}"
        try:
            if m.invalid is not None:  # a listed object no route takes
                raise InvalidEvent(m.invalid)
            decoded = self.decoder.decode(m)
        except InvalidEvent as bad:
            decoded = Decoded(unroutable=(bad,))
        routed: list[tuple[Pending, TableRef]] = []
        invalid = list(decoded.unroutable)
        for event in decoded.events:
            try:
                table = self.router.route(event)
                routed.append((Pending(self.router.branched(event, table), m.position, len(decoded.events) > 1, m.timestamp),
                               table))
            except InvalidEvent as exc:
                invalid.append(exc)
        self.tracker.track(m.position, max(1, len(routed)))
        self._count_objects(decoded)
        for problem in invalid:
            await self._dead_letter(DeadLetter(f"invalid event at {where}: {problem}", m.payload, m.position), kind="invalid_event")
        if not routed:
            self.tracker.done([m.position])
        return routed

    def _count_objects(self, decoded: Decoded) -> None:
        source = self.decoder.source
        if source is None:
            return
        if decoded.discovered:
            self.metrics.objects_discovered.labels(source).inc(decoded.discovered)
        for reason, n in decoded.skipped.items():
            self.metrics.objects_skipped.labels(source, reason).inc(n)

    async def _admit_held(self) -> None:
        """Admit held events while the budget allows, into their windows; metrics once per call."""
        admitted: dict[TableRef, int] = {}
        while self._held:
            _, pending, table = self._held[0]
            if not self.budget.try_acquire(pending.event.byte_size):
                break
            self._held.popleft()
            admitted[table] = admitted.get(table, 0) + 1
            self._outbox.extend(self.windows.add(table, pending))
        if admitted:
            self._counts["events"] += sum(admitted.values())
            for table, n in admitted.items():
                self.metrics.events.labels(str(table)).inc(n)
                self.metrics.last_admitted.labels(str(table)).set_to_current_time()
            self.metrics.inflight_bytes.set(self.budget.used)

    async def _wait_for_room(self) -> None:
        """Pause, flush the biggest window, wait for a commit while still polling."""
        if not self._paused:
            self.source.pause()
            self._paused = True
            self._counts["pauses"] += 1
            self.metrics.paused.set(1)
        if self._held and not self._outbox:
            biggest = self.windows.largest()
            if biggest is not None:
                self._outbox.append(biggest)
                self._dispatch_nowait()
        await self._await_progress(self._poll_timeout)
        await self._poll(0.001)  # keeps a consumer in its group; nothing comes while paused

    async def _await_progress(self, timeout_s: float) -> None:
        """Until a commit finishes, or ``timeout_s``."""
        with anyio.move_on_after(timeout_s):
            await self._progress.wait()
        self._progress = anyio.Event()

    def _dispatch_nowait(self) -> None:
        while self._outbox:
            batch = self._outbox[0]
            try:
                self._sends[self._worker_of(batch.table)].send_nowait(batch)
            except anyio.WouldBlock:
                return
            self._outbox.popleft()

    def _worker_of(self, table: TableRef) -> int:
        return hash(table) % len(self._sends)

    async def _flush_all(self) -> None:
        """Close every open window and hand all batches to the workers (may wait)."""
        self._outbox.extend(self.windows.drain())
        while self._outbox:
            batch = self._outbox.popleft()
            await self._sends[self._worker_of(batch.table)].send(batch)

    async def _on_revoke(self, partitions: Collection[str]) -> None:
        """Before partitions go to another member: commit everything admitted and ack it, for
        at most ``revoke_timeout_s`` (the whole group waits meanwhile). What is still being
        committed then goes on; the new owner reads it again from the last ack, and the
        offsets in the snapshot markers (checked again when a commit conflicts) keep it once."""
        self._revocations += 1
        self._revoked_at.update(dict.fromkeys(partitions, self._revocations))
        self._held = deque(h for h in self._held if h[0].position.partition not in partitions)
        if self._running:  # after run() the workers are gone and everything is committed
            self._outbox.extend(self.windows.drain())
        with anyio.move_on_after(self._revoke_timeout):
            while self.budget.used:  # the consume loop may sit in a poll until the group settles
                self._dispatch_nowait()
                await self._await_progress(self._poll_timeout)
        if self.budget.used:
            log.warning("partitions revoked while %d bytes were still committing after %.0f s: the group goes "
                        "on, their new owner reads them again", self.budget.used, self._revoke_timeout)
        await self._ack()
        self.tracker.forget(partitions)

    # ------------------------------------------------------------ committing
    async def _worker(self, batches: MemoryObjectReceiveStream[Batch]) -> None:
        held: deque[Batch] = deque()
        async with batches:
            while (first := held.popleft() if held else await _receive(batches)) is not None:
                group = self._group_of(first, batches, held)
                results = await self._commit(group)
                for batch, result in zip(group, results):
                    if self.maintenance is not None and self.maintenance.is_due(batch.table, result.snapshots):
                        # the table's own worker, between its batches: never races our commits to it; a stop's
                        # deadline abandons a long round (its files are orphans at worst)
                        await anyio.to_thread.run_sync(self.maintenance.run, batch.table, abandon_on_cancel=True)

    def _group_of(self, first: Batch, batches: MemoryObjectReceiveStream[Batch], held: deque[Batch]) -> list[Batch]:
        """``first`` and the batches of other tables waiting behind it in this worker's queue,
        committed together (atomically where the catalog can: ``commit.atomic_multi_table``).
        Stops at a second batch of a table already in the group (held for the next group):
        each table's batches stay in order. Alone with ``atomic_multi_table = off``."""
        group = [first]
        if self.committer.multi.setting == "off":
            return group
        tables = {first.table}
        while len(group) < MAX_GROUP_BATCHES:
            if held:
                nxt = held.popleft()
            else:
                try:
                    nxt = batches.receive_nowait()
                except (anyio.WouldBlock, anyio.EndOfStream):
                    break
            if nxt.table in tables:
                held.appendleft(nxt)
                break
            group.append(nxt)
            tables.add(nxt.table)
        return group

    def _retried(self, exc: BaseException) -> None:
        self._counts["retries"] += 1
        self.metrics.retries.labels(type(exc).__name__).inc()

    async def _commit(self, group: list[Batch]) -> list[CommitResult]:
        """Commit ``group`` (batches of different tables) in one commit, then dead-letter,
        count, release and mark done what each batch covered."""
        started = time.monotonic()
        before = lambda _: self._at("before-commit")  # noqa: E731
        if len(group) == 1:
            results = [await commit_with_retries(self.committer, group[0], self.retry, on_retry=self._retried, before_apply=before)]
        else:
            results = await commit_many_with_retries(self.committer, [(b, None) for b in group], self.retry,
                                                     on_retry=self._retried, before_apply=before)
        for batch, result in zip(group, results):
            for r in result.rejected:
                await self._dead_letter(DeadLetter(r.reason, encode_event(r.event), r.position, str(batch.table)), kind="rejected_file")
            self._record(batch, result, time.monotonic() - started)
            self._at("after-commit")
            self.budget.release(batch.byte_size)
            self.tracker.done(batch.positions)
        self.metrics.inflight_bytes.set(self.budget.used)
        self._progress.set()  # the consume loop acks, once per poll for all the batches committed meanwhile
        return results

    def _at(self, point: str) -> None:
        if self._hook is not None:
            self._hook(point, self._counts["snapshots"])

    def _record(self, batch: Batch, result: CommitResult, seconds: float) -> None:
        name = str(batch.table)
        if (source := self.decoder.source) is not None:
            self.metrics.objects_skipped.labels(source, ALREADY_LOADED).inc(result.duplicates)
            self.metrics.objects_loaded.labels(source).inc(len(batch.items) - result.duplicates - len(result.rejected))
        self._counts["duplicates"] += result.duplicates
        self.metrics.duplicates.labels(name).inc(result.duplicates)
        self.metrics.last_commit.labels(name).set_to_current_time()
        if result.snapshot_id is not None:
            self._counts["rows"] += result.rows
            self._counts["snapshots"] += 1
            self.metrics.rows.labels(name).inc(result.rows)
            self.metrics.snapshots.labels(name).inc()
            self.metrics.bytes.labels(name).inc(batch.byte_size)
            self.metrics.commit_seconds.labels(name).observe(seconds)
            self.metrics.freshness.committed(name, result.watermark_ms)

    async def _dead_letter(self, letter: DeadLetter, kind: str) -> None:
        log.warning("dead letter (%s): %s", kind, letter.reason)
        self._counts["dead_letters"] += 1
        self.metrics.dead_letters.labels(kind).inc()
        await self.deadletters.put(letter)

    async def _ack(self) -> None:
        async with self._ack_lock:
            offsets = self.tracker.committable()
            if not offsets:
                return
            try:
                await self.source.commit(offsets)
            except Exception as exc:  # an ack lost here is recovered from the table markers
                log.warning("offset commit failed, will retry with the next batch: %s", exc)
                return
            self.tracker.mark_acked(offsets)




async def _receive(batches: MemoryObjectReceiveStream[Batch]) -> Batch | None:
    """The next batch, None once the stream is closed and empty."""
    try:
        return await batches.receive()
    except anyio.EndOfStream:
        return None
