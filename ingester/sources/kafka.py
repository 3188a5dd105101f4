"""Kafka (aiokafka): the daemon's source, the producer side, and a dead-letter topic.

``KafkaSource`` is a consumer-group member with manual offset commits only: the engine
acks an offset after the snapshot that covers it is in Iceberg, so after a crash Kafka
redelivers from the last ack and the snapshot markers drop what was already committed.
Partitions are named ``"{topic}/{partition}"``; ``commit`` takes the next offset to read.
Backpressure pauses every assigned partition while ``poll`` keeps calling ``getmany``, so
the member never leaves its group. Before partitions are taken away the registered revoke
callbacks run (the engine commits and acks there).

Stopping never waits without a bound: a ``poll`` may be cancelled at any point, also while the
consumer connects or joins its group (aiokafka's ``start`` waits for the first assignment with
no limit); ``aclose`` then gives that consumer ``ABANDONED_START_WAIT_S`` to stop (it holds no
partition to hand over; a member the broker still counts is dropped after its session timeout),
and waits for a started one to leave the group for at most the session timeout.

``KafkaEventQueue`` is a blocking producer for sync code (``ingester publish``, the dlt
sink, the dead-letter topic of ``ingester.deadletter``). It uses acks=all and no
idempotent producer (Tansu and some other brokers lack InitProducerId); ordering per table
comes from the key. ``kafka_options`` from the settings go to the consumer as given, and to
producers for the options a producer accepts (connection, security, ...).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Callable, Collection, Coroutine, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from ingester.settings import SourceSettings
from ingester.sources.base import Message, Position, RevokeCallback

log = logging.getLogger(__name__)
T = TypeVar("T")
Client = TypeVar("Client", AIOKafkaConsumer, AIOKafkaProducer)

DEFAULT_REBALANCE_TIMEOUT_MS = 60_000
"""How long the group waits for members to rejoin; the revoke flush + ack must fit in it."""
HEARTBEATS_PER_SESSION = 3
DEFAULT_PRODUCE_TIMEOUT_S = 60.0
ABANDONED_START_WAIT_S = 1.0
UNASSIGNED_WARNING_S = 60.0
"""A started consumer with no assignment yet (no join completed, not even an empty one) after
this long is warned about once: it consumes nothing, and nothing else says so."""
_FORCED_PRODUCER_OPTIONS = {"acks": "all", "enable_idempotence": False}


def partition_name(tp: TopicPartition) -> str:
    return f"{tp.topic}/{tp.partition}"


def topic_partition(name: str) -> TopicPartition:
    """Inverse of ``partition_name`` (topic names cannot contain ``/``)."""
    topic, _, partition = name.rpartition("/")
    return TopicPartition(topic, int(partition))


def consumer_options(settings: SourceSettings) -> dict[str, Any]:
    """aiokafka consumer kwargs: our defaults, overridden by ``kafka_options``."""
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        "auto_offset_reset": "earliest",
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": max(100, settings.session_timeout_ms // HEARTBEATS_PER_SESSION),
        "rebalance_timeout_ms": DEFAULT_REBALANCE_TIMEOUT_MS,
        **settings.kafka_options,
        "group_id": settings.group_id,
    }


def producer_options(settings: SourceSettings) -> dict[str, Any]:
    """aiokafka producer kwargs: the ``kafka_options`` a producer accepts, acks=all, not idempotent."""
    accepted = inspect.signature(AIOKafkaProducer).parameters
    shared = {k: v for k, v in settings.kafka_options.items() if k in accepted}
    return {"bootstrap_servers": settings.bootstrap_servers, **shared, **_FORCED_PRODUCER_OPTIONS}


async def _start(client: Client) -> Client:
    """Start ``client``; one that fails to start is stopped again (no connection left open)."""
    try:
        await client.start()
    except BaseException:
        await client.stop()
        raise
    return client


@dataclass(frozen=True, slots=True)
class KafkaSourceStats:
    assigned: tuple[str, ...]
    paused: bool
    assignments: int
    revocations: int
    lag: Mapping[str, int]


class KafkaSource:
    """``Source`` over a Kafka consumer group (topics, or a topic pattern when given).

    The consumer (``consumer_factory(**options)``; tests pass a fake) is created and joins its
    group on the first ``poll``, inside the event loop that runs the engine. ``poll`` waits
    longer than ``timeout_s`` while the group is rebalancing: aiokafka returns no records
    until the new assignment is known.
    """

    def __init__(
        self,
        options: Mapping[str, Any],
        *,
        topics: Sequence[str] = (),
        topic_pattern: str | None = None,
        consumer_factory: Callable[..., AIOKafkaConsumer] = AIOKafkaConsumer,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not topics and not topic_pattern:
            raise ValueError("a Kafka source needs topics or a topic pattern")
        if options.get("enable_auto_commit"):
            raise ValueError("enable_auto_commit cannot be on: offsets are committed only after the "
                             "snapshot that covers them")
        self.group: str = options["group_id"]
        self._options = {**options, "enable_auto_commit": False}
        self._topics = tuple(topics)
        self._pattern = topic_pattern
        self._factory = consumer_factory
        self._consumer: AIOKafkaConsumer | None = None
        self._joining: AIOKafkaConsumer | None = None
        """A consumer whose ``start`` was cancelled (a stop during connect or join)."""
        self._starting = asyncio.Lock()
        self._callbacks: list[RevokeCallback] = []
        self._paused = False
        self._lag: dict[str, int] = {}
        self._assignments = 0
        self._revocations = 0
        self._rebalancing = False
        self._clock = clock
        self._started_at: float | None = None
        self._warned_unassigned = False

    @classmethod
    def from_settings(cls, settings: SourceSettings) -> KafkaSource:
        """``topic_pattern`` wins over ``topics`` when both are set."""
        pattern = settings.topic_pattern
        return cls(consumer_options(settings), topics=() if pattern else settings.topics, topic_pattern=pattern)

    async def _started(self) -> AIOKafkaConsumer:
        """The consumer, connected and a member of its group. Cancellable: a consumer whose start
        was cancelled is kept for ``aclose`` (stopping it there is bounded), or replaced here."""
        async with self._starting:
            if self._consumer is None:
                await self._stop_joining()
                consumer = self._factory(**self._options)
                consumer.subscribe(topics=self._topics, pattern=self._pattern, listener=_Rebalance(self))
                self._joining = consumer
                started = time.monotonic()
                try:
                    await consumer.start()
                except anyio.get_cancelled_exc_class():
                    log.info("kafka consumer start abandoned after %.1f s (connecting or joining group %s)",
                             time.monotonic() - started, self.group)
                    raise
                except BaseException:
                    self._joining = None
                    await consumer.stop()
                    raise
                self._consumer, self._joining = consumer, None
                self._started_at = self._clock()
                log.info("kafka consumer started: group %s, %s", self.group, self._pattern or ", ".join(self._topics))
        return self._consumer

    async def _stop_joining(self) -> None:
        if self._joining is not None:
            consumer, self._joining = self._joining, None
            await self._stop_within(consumer, ABANDONED_START_WAIT_S)

    async def _stop_within(self, consumer: AIOKafkaConsumer, timeout_s: float | None = None) -> None:
        """Stop ``consumer`` (leave the group), waiting at most ``timeout_s`` (default: the session timeout)."""
        timeout_s = timeout_s or self._options.get("session_timeout_ms", 10_000) / 1000
        with anyio.move_on_after(timeout_s) as scope:
            await consumer.stop()
        if scope.cancelled_caught:
            log.warning("kafka consumer of group %s not stopped after %.1f s (a join or request the broker does not "
                        "answer): abandoned, the broker drops the member after its session timeout", self.group, timeout_s)

    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        """Records of the assigned, unpaused partitions, in offset order per partition.

        A record without a value is delivered as an empty payload (it becomes a dead letter).
        """
        consumer = await self._started()
        fetched = await consumer.getmany(timeout_ms=int(timeout_s * 1000), max_records=max_records)
        messages = [
            Message(record.value or b"", Position(partition_name(tp), record.offset), record.key,
                    timestamp=record.timestamp / 1000 if record.timestamp is not None and record.timestamp >= 0 else None)
            for tp, records in fetched.items()
            for record in records
        ]
        await self._measure_lag(consumer)
        self._warn_if_unassigned()
        return messages

    def _warn_if_unassigned(self) -> None:
        if self._assignments or self._warned_unassigned or self._started_at is None:
            return
        waited = self._clock() - self._started_at
        if waited >= UNASSIGNED_WARNING_S:
            self._warned_unassigned = True
            log.warning("kafka consumer of group %s has had no partition assignment for %.0f s since it started (the "
                        "group's join has not completed: is the broker's group coordinator answering?); nothing is "
                        "consumed until it has", self.group, waited)

    async def _measure_lag(self, consumer: AIOKafkaConsumer) -> None:
        lag = {}
        for tp in consumer.assignment():
            highwater = consumer.highwater(tp)
            if highwater is not None:  # known from a fetch response, so the position is valid too
                lag[partition_name(tp)] = max(0, highwater - await consumer.position(tp))
        self._lag = lag

    def lag(self) -> dict[str, int]:
        """Messages behind the end, per assigned partition whose end is known (last fetch)."""
        return dict(self._lag)

    def pause(self) -> None:
        """Pause every assigned partition, and those assigned later, until ``resume``."""
        self._paused = True
        if self._consumer is not None:
            self._consumer.pause(*self._consumer.assignment())

    def resume(self) -> None:
        self._paused = False
        if self._consumer is not None:
            self._consumer.resume(*self._consumer.assignment())

    async def commit(self, offsets: Mapping[str, int]) -> None:
        """Commit the next offsets to read. Partitions no longer assigned are left to their new
        owner (what this member committed to Iceberg for them is in the markers). Raises
        aiokafka's ``CommitFailedError`` if the group rebalanced meanwhile."""
        if self._consumer is None:
            return
        assigned = self._consumer.assignment()
        mine = {tp: offset for name, offset in offsets.items() if (tp := topic_partition(name)) in assigned}
        if len(mine) < len(offsets):
            log.debug("not committing offsets of partitions no longer assigned: %s",
                      sorted(set(offsets) - {partition_name(tp) for tp in mine}))
        if mine:
            await self._consumer.commit(mine)

    def on_revoke(self, callback: RevokeCallback) -> None:
        self._callbacks.append(callback)

    async def is_idle(self) -> bool:
        """True when every assigned partition is read up to the end its last fetch reported.

        False until the member joined its group and while the group rebalances; a member
        that got no partition (more members than partitions) is idle. The ends come from
        fetch responses, not ListOffsets (which some Kafka-compatible brokers answer wrongly)
        and cost no round trip.
        """
        consumer = await self._started()
        if not self._assignments or self._rebalancing:
            return False
        await self._measure_lag(consumer)
        return all(self._lag.get(partition_name(tp)) == 0 for tp in consumer.assignment())

    async def aclose(self) -> None:
        """Stop the consumer and leave the group (no commit here: the engine acked), waiting at
        most the session timeout; also a consumer whose start was cancelled (briefly). Idempotent."""
        await self._stop_joining()
        if self._consumer is not None:
            consumer, self._consumer = self._consumer, None
            await self._stop_within(consumer)

    def statistics(self) -> KafkaSourceStats:
        assigned = self._consumer.assignment() if self._consumer is not None else frozenset()
        return KafkaSourceStats(
            assigned=tuple(sorted(partition_name(tp) for tp in assigned)),
            paused=self._paused,
            assignments=self._assignments,
            revocations=self._revocations,
            lag=self.lag(),
        )

    async def _revoked(self, revoked: Collection[TopicPartition]) -> None:
        self._rebalancing = True
        if not revoked:
            return
        self._revocations += 1
        self._lag = {}
        names = sorted(partition_name(tp) for tp in revoked)
        log.info("partitions revoked: %s", ", ".join(names))
        for callback in self._callbacks:  # aiokafka logs a failure; the new owner replays what was not acked
            await callback(names)

    def _assigned(self, assigned: Collection[TopicPartition]) -> None:
        self._assignments += 1
        self._rebalancing = False
        log.info("partitions assigned: %s", ", ".join(sorted(partition_name(tp) for tp in assigned)) or "none")
        if self._paused and self._consumer is not None:
            self._consumer.pause(*assigned)


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: Collection[TopicPartition]) -> None:
        await self._source._revoked(revoked)

    async def on_partitions_assigned(self, assigned: Collection[TopicPartition]) -> None:
        self._source._assigned(assigned)


class KafkaEventQueue:
    """Blocking producer of one topic, for sync code. Runs aiokafka on a private event loop
    in a daemon thread; ``put_many`` returns once every message is acked by all replicas.
    Thread-safe. Raises aiokafka's ``KafkaError`` (or ``TimeoutError``) on failure."""

    def __init__(self, options: Mapping[str, Any], topic: str, *, timeout_s: float = DEFAULT_PRODUCE_TIMEOUT_S) -> None:
        self.topic = topic
        self._timeout_s = timeout_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name=f"kafka-producer-{topic}", daemon=True)
        self._thread.start()
        try:
            self._producer = self._call(self._new_producer(dict(options)))
        except BaseException:
            self._stop_loop()
            raise

    @classmethod
    def from_settings(cls, settings: SourceSettings) -> KafkaEventQueue:
        """Produces to the first of ``settings.topics``."""
        return cls(producer_options(settings), settings.topics[0])

    @staticmethod
    async def _new_producer(options: dict[str, Any]) -> AIOKafkaProducer:
        return await _start(AIOKafkaProducer(**options))  # made inside the loop it runs on

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(self._timeout_s)

    def put_many(self, payloads: Sequence[bytes], keys: Sequence[bytes] | None = None) -> int:
        """Send ``payloads`` (with ``keys``: same key, same partition, in order); returns the count."""
        if keys is not None and len(keys) != len(payloads):
            raise ValueError(f"{len(payloads)} payloads but {len(keys)} keys")
        return self._call(self._send(payloads, keys or [None] * len(payloads)))

    async def _send(self, payloads: Sequence[bytes], keys: Sequence[bytes | None]) -> int:
        delivered = [await self._producer.send(self.topic, payload, key=key) for payload, key in zip(payloads, keys)]
        await asyncio.gather(*delivered)
        return len(delivered)

    def close(self) -> None:
        """Flush, stop the producer and its thread. Idempotent."""
        if self._loop.is_closed():
            return
        try:
            self._call(self._producer.stop())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
