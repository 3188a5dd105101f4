"""Both faces of the queue seam: ``Source`` (what the engine asks of a queue: positions,
messages, acks) and ``EventQueue`` (where producers publish)."""

from __future__ import annotations

from collections import deque
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True, slots=True, order=True)
class Position:
    """Where a message sits: a partition name (``topic/3``, ``spool-<id>``) and an offset."""

    partition: str
    offset: int


@dataclass(frozen=True, slots=True)
class Message:
    payload: bytes
    position: Position
    key: bytes | None = None
    """The queue's message key where it has one (Kafka: SeaweedFS filer events name the path there)."""
    invalid: str | None = None
    """Set by a source that knows the message cannot become an event (a listed object that no
    route matches): the engine dead-letters it with this reason."""
    timestamp: float | None = None
    """The queue's time of the message (Unix seconds: Kafka's record timestamp, SQS's sent time,
    a listed object's last-modified time); the time of its events that carry no ``event_time``."""


RevokeCallback = Callable[[Collection[str]], Awaitable[None]]


@runtime_checkable
class Source(Protocol):
    """A partitioned, replayable queue.

    Nothing is removed from the queue until ``commit`` says so: after a crash, every
    message after the last committed offset of its partition is delivered again.
    """

    @property
    def group(self) -> str | None:
        """Name of the consumer group; offsets in snapshot markers are kept per group. ``None``
        for a queue whose positions do not outlive the process (SQS): no offset markers, its
        events are deduplicated by their event ids."""

    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        """Next messages in partition order; ``[]`` after ``timeout_s`` or while paused."""

    def pause(self) -> None:
        """Stop delivering (backpressure); the source stays alive and in its group."""

    def resume(self) -> None: ...

    async def commit(self, offsets: Mapping[str, int]) -> None:
        """Mark everything below ``offsets[partition]`` as done. Idempotent."""

    def on_revoke(self, callback: RevokeCallback) -> None:
        """Register a callback run before partitions are taken away (flush + ack)."""

    async def is_idle(self) -> bool:
        """True when nothing is waiting to be delivered (for ``--exit-when-idle``)."""

    async def aclose(self) -> None: ...


class EventQueue(Protocol):
    """Where events are published (spool file, Kafka topic). Blocking calls."""

    def put_many(self, payloads: Sequence[bytes], keys: Sequence[bytes] | None = None) -> int: ...

    def close(self) -> None: ...


class OffsetTracker:
    """Which offsets per partition are still in flight; the committable watermark.

    Offsets are tracked in the order they are read; ``committable`` gives, per
    partition, the offset below which everything is done. Each offset costs O(1) to track and
    to mark done, however many are in flight. A message holding several events is tracked with
    their count: its offset is done when ``done`` was told it that many times.
    """

    def __init__(self) -> None:
        self._order: dict[str, deque[int]] = {}
        self._done: dict[str, set[int]] = {}
        self._next: dict[str, int] = {}
        self._acked: dict[str, int] = {}
        self._waiting: dict[Position, int] = {}
        """Positions of several events: how many of them are not done yet, beyond the last one."""
        self._pending = 0

    def track(self, position: Position, events: int = 1) -> None:
        """``events`` (at least 1) events come from the message at ``position``."""
        self._order.setdefault(position.partition, deque()).append(position.offset)
        self._done.setdefault(position.partition, set())
        if events > 1:
            self._waiting[position] = events - 1
        self._pending += 1

    def done(self, positions: Collection[Position]) -> None:
        for p in positions:
            if (left := self._waiting.get(p)) is not None:
                if left > 1:
                    self._waiting[p] = left - 1
                else:
                    del self._waiting[p]
                continue
            self._done.setdefault(p.partition, set()).add(p.offset)
        for partition in {p.partition for p in positions}:
            order, done = self._order.get(partition, deque()), self._done[partition]
            while order and order[0] in done:
                offset = order.popleft()
                done.discard(offset)
                self._next[partition] = offset + 1
                self._pending -= 1

    def committable(self) -> dict[str, int]:
        """Offsets that advanced since the last ``mark_acked``."""
        return {p: o for p, o in self._next.items() if self._acked.get(p) != o}

    def mark_acked(self, offsets: Mapping[str, int]) -> None:
        self._acked.update(offsets)

    def pending(self) -> int:
        return self._pending

    def forget(self, partitions: Collection[str]) -> None:
        for p in partitions:
            self._pending -= len(self._order.get(p, ()))
            for d in (self._order, self._done, self._next, self._acked):
                d.pop(p, None)
        self._waiting = {pos: n for pos, n in self._waiting.items() if pos.partition not in partitions}


class Pausable:
    """``pause`` / ``resume`` as a flag that the source's ``poll`` reads (for sources with nothing
    to tell their queue: the spool, SQS, a listing)."""

    _paused: bool = False

    def pause(self) -> None:
        self._paused = True

    def resume(self) -> None:
        self._paused = False
