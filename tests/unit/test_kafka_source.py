"""KafkaSource, KafkaEventQueue options and the engine's revoke path, on a fake aiokafka
consumer (no broker). The real broker runs in tests/integration/test_kafka_daemon.py."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiokafka import ConsumerRebalanceListener, TopicPartition
from aiokafka.errors import IllegalStateError

from ingester.batch import Batch, Pending, TableRef
from ingester.deadletter import DeadLetter, MemoryDeadLetters
from ingester.engine import Engine
from ingester.events import FileEvent
from ingester.iceberg_layer.markers import MarkerCache
from ingester.metrics import Metrics
from ingester.retry import RetryPolicy
from ingester.routing import Router
from ingester.settings import RoutingSettings, Settings, SourceSettings
from ingester.sources.base import Position
from ingester.sources.kafka import (
    UNASSIGNED_WARNING_S,
    KafkaSource,
    consumer_options,
    partition_name,
    producer_options,
    topic_partition,
)
from ingester.window import BatchLimits
from ingester.wiring import build_committer
from tests.support import event_for, write_parquet


class Record:
    def __init__(self, offset: int, value: bytes | None) -> None:
        self.offset, self.value, self.key = offset, value, None
        self.timestamp = 1_760_000_000_000 + offset  # aiokafka's ConsumerRecord: epoch ms


class FakeConsumer:
    """The part of ``AIOKafkaConsumer`` that ``KafkaSource`` uses, over in-memory logs."""

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.logs: dict[TopicPartition, list[bytes | None]] = {}
        self.assigned: set[TopicPartition] = set()
        self.paused_tps: set[TopicPartition] = set()
        self.positions: dict[TopicPartition, int] = {}
        self.fetched: set[TopicPartition] = set()
        self.committed: dict[TopicPartition, int] = {}
        self.commits: list[dict[TopicPartition, int]] = []
        self.listener: ConsumerRebalanceListener | None = None
        self.subscription: tuple[tuple[str, ...], str | None] | None = None
        self.started = self.stopped = False

    def subscribe(self, topics: Sequence[str] = (), pattern: str | None = None,
                  listener: ConsumerRebalanceListener | None = None) -> None:
        self.subscription, self.listener = (tuple(topics), pattern), listener

    async def start(self) -> None:
        self.started = True

    async def stop(self) -> None:
        self.stopped = True

    async def rebalance(self, assignment: Collection[TopicPartition]) -> None:
        """Eager rebalance: revoke all, then assign ``assignment`` from the committed offsets."""
        assert self.listener is not None
        await self.listener.on_partitions_revoked(frozenset(self.assigned))
        self.assigned, self.paused_tps, self.fetched = set(assignment), set(), set()
        self.positions = {tp: self.committed.get(tp, 0) for tp in self.assigned}
        await self.listener.on_partitions_assigned(frozenset(self.assigned))

    async def getmany(self, timeout_ms: int = 0, max_records: int | None = None) -> dict[TopicPartition, list[Record]]:
        out: dict[TopicPartition, list[Record]] = {}
        budget = max_records or 10**9
        for tp in sorted(self.assigned - self.paused_tps):
            self.fetched.add(tp)
            log, pos = self.logs.get(tp, []), self.positions[tp]
            take = log[pos:pos + budget]
            if take:
                out[tp] = [Record(pos + i, v) for i, v in enumerate(take)]
                self.positions[tp] = pos + len(take)
                budget -= len(take)
        if not out:
            await anyio.sleep(min(timeout_ms, 5) / 1000)
        return out

    def assignment(self) -> frozenset[TopicPartition]:
        return frozenset(self.assigned)

    def pause(self, *tps: TopicPartition) -> None:
        self.paused_tps.update(tps)

    def resume(self, *tps: TopicPartition) -> None:
        self.paused_tps.difference_update(tps)

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not set(offsets) <= self.assigned:
            raise IllegalStateError("partition not assigned")
        self.commits.append(dict(offsets))
        self.committed.update(offsets)

    def highwater(self, tp: TopicPartition) -> int | None:
        return len(self.logs.get(tp, [])) if tp in self.fetched else None

    async def position(self, tp: TopicPartition) -> int:
        if tp not in self.assigned:
            raise IllegalStateError("partition not assigned")
        return self.positions[tp]

    async def end_offsets(self, tps: Sequence[TopicPartition]) -> dict[TopicPartition, int]:
        return {tp: len(self.logs.get(tp, [])) for tp in tps}


TP0, TP1 = TopicPartition("events", 0), TopicPartition("events", 1)


def make_source(clock: Callable[[], float] = time.monotonic, **settings: Any) -> tuple[KafkaSource, list[FakeConsumer]]:
    made: list[FakeConsumer] = []

    def factory(**options: Any) -> FakeConsumer:
        made.append(FakeConsumer(**options))
        return made[-1]

    cfg = SourceSettings(kind="kafka", topics=["events"], **settings)
    return KafkaSource(consumer_options(cfg), topics=cfg.topics, consumer_factory=factory, clock=clock), made


async def joined(source: KafkaSource, made: list[FakeConsumer], *tps: TopicPartition) -> FakeConsumer:
    await source.poll(10, 0.001)  # starts the consumer
    await made[0].rebalance(tps)
    return made[0]


def test_partition_names_round_trip() -> None:
    assert partition_name(TopicPartition("orders.v1", 7)) == "orders.v1/7"
    assert topic_partition("orders.v1/7") == TopicPartition("orders.v1", 7)


def test_consumer_options_commit_manually_and_pass_raw_options_through() -> None:
    cfg = SourceSettings(kind="kafka", bootstrap_servers="k:1", group_id="g1", session_timeout_ms=6000,
                         kafka_options={"fetch_max_bytes": 1024, "auto_offset_reset": "latest"})
    source = KafkaSource.from_settings(cfg)
    opts = source._options
    assert opts["enable_auto_commit"] is False and opts["group_id"] == "g1" == source.group
    assert opts["session_timeout_ms"] == 6000 and opts["heartbeat_interval_ms"] == 2000
    assert opts["fetch_max_bytes"] == 1024 and opts["auto_offset_reset"] == "latest"
    assert opts["bootstrap_servers"] == "k:1"
    with pytest.raises(ValueError, match="enable_auto_commit cannot be on"):
        KafkaSource.from_settings(cfg.model_copy(update={"kafka_options": {"enable_auto_commit": True}}))
    with pytest.raises(ValueError, match="topics or a topic pattern"):
        KafkaSource(consumer_options(cfg), topics=())


def test_topic_pattern_wins_over_topics() -> None:
    source = KafkaSource.from_settings(SourceSettings(kind="kafka", topics=["x"], topic_pattern="^events-.*"))
    assert source._pattern == "^events-.*" and source._topics == ()


def test_producer_options_keep_shared_options_only_and_acks_all_without_idempotence() -> None:
    cfg = SourceSettings(kind="kafka", bootstrap_servers="k:1", kafka_options={
        "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN", "session_timeout_ms": 6000,
        "acks": 1, "enable_idempotence": True})
    opts = producer_options(cfg)
    assert opts == {"bootstrap_servers": "k:1", "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                    "acks": "all", "enable_idempotence": False}


@pytest.mark.parametrize("empty", [False, True], ids=["partitions", "an empty assignment"])
def test_a_member_never_assigned_is_warned_about_once_and_an_assigned_one_never(
        caplog: pytest.LogCaptureFixture, empty: bool) -> None:
    now = [100.0]

    async def main() -> None:
        source, _ = make_source(clock=lambda: now[0], group_id="g7")
        await source.poll(10, 0.001)  # started, no join completed
        now[0] += UNASSIGNED_WARNING_S - 1
        await source.poll(10, 0.001)
        assert "no partition assignment" not in caplog.text
        now[0] += 1
        await source.poll(10, 0.001)
        await source.poll(10, 0.001)
        warned = [r for r in caplog.records if "no partition assignment" in r.getMessage()]
        assert len(warned) == 1 and warned[0].levelname == "WARNING" and "group g7" in warned[0].getMessage()

        caplog.clear()
        other, later = make_source(clock=lambda: now[0], group_id="g8")
        await other.poll(10, 0.001)
        await later[0].rebalance(() if empty else (TP0,))  # a member of more members than partitions gets none
        now[0] += 10 * UNASSIGNED_WARNING_S
        await other.poll(10, 0.001)
        assert "no partition assignment" not in caplog.text

    with caplog.at_level("WARNING", logger="ingester.sources.kafka"):
        anyio.run(main)


def test_poll_starts_the_member_and_names_positions() -> None:
    async def main() -> None:
        source, made = make_source()
        consumer = await joined(source, made, TP0, TP1)
        assert consumer.started and consumer.subscription == (("events",), None)
        assert consumer.options["enable_auto_commit"] is False
        consumer.logs = {TP0: [b"a", b"b"], TP1: [None]}
        messages = await source.poll(10, 0.01)
        assert [(m.position.partition, m.position.offset, m.payload) for m in messages] == [
            ("events/0", 0, b"a"), ("events/0", 1, b"b"), ("events/1", 0, b"")]
        assert [m.timestamp for m in messages] == [1_760_000_000.0, 1_760_000_000.001, 1_760_000_000.0]  # record time, s
        assert source.lag() == {"events/0": 0, "events/1": 0}
        consumer.logs[TP0].append(b"c")
        consumer.pause(TP0)
        await source.poll(10, 0.001)
        assert source.lag() == {"events/0": 1, "events/1": 0}

    anyio.run(main)


def test_pause_holds_every_partition_including_later_assignments() -> None:
    async def main() -> None:
        source, made = make_source()
        consumer = await joined(source, made, TP0)
        consumer.logs = {TP0: [b"a"], TP1: [b"b"]}
        source.pause()
        assert consumer.paused_tps == {TP0} and await source.poll(10, 0.001) == []
        await consumer.rebalance([TP0, TP1])
        assert consumer.paused_tps == {TP0, TP1} and await source.poll(10, 0.001) == []
        assert source.statistics().paused
        source.resume()
        assert consumer.paused_tps == set()
        assert sorted(m.payload for m in await source.poll(10, 0.001)) == [b"a", b"b"]

    anyio.run(main)


def test_commit_takes_next_offsets_of_assigned_partitions_only() -> None:
    async def main() -> None:
        source, made = make_source()
        await source.commit({"events/0": 5})  # before the first poll: nothing to commit to
        consumer = await joined(source, made, TP0)
        await source.commit({"events/0": 3, "events/1": 9})
        assert consumer.commits == [{TP0: 3}]
        await source.commit({"events/1": 9})
        assert consumer.commits == [{TP0: 3}]

    anyio.run(main)


def test_revoke_awaits_callbacks_with_partition_names_before_the_assignment_changes() -> None:
    async def main() -> None:
        source, made = make_source()
        consumer = await joined(source, made, TP0, TP1)
        seen: list[tuple[list[str], frozenset[TopicPartition]]] = []

        async def callback(partitions: Collection[str]) -> None:
            await anyio.sleep(0.01)
            seen.append((sorted(partitions), consumer.assignment()))
            await source.commit({p: 1 for p in partitions})

        source.on_revoke(callback)
        await consumer.rebalance([TP1])
        assert seen == [(["events/0", "events/1"], frozenset({TP0, TP1}))]
        assert consumer.committed == {TP0: 1, TP1: 1}
        stats = source.statistics()
        assert stats.assigned == ("events/1",) and stats.revocations == 1 and stats.assignments == 2

    anyio.run(main)


def test_is_idle_needs_an_assignment_and_no_lag() -> None:
    async def main() -> None:
        source, made = make_source()
        assert not await source.is_idle()  # not in the group yet
        consumer = await joined(source, made, TP0)
        consumer.logs = {TP0: [b"a", b"b"]}
        assert not await source.is_idle()
        await source.poll(10, 0.001)
        assert await source.is_idle()

    anyio.run(main)


def test_a_member_without_partitions_is_idle_once_the_group_settled() -> None:
    async def main() -> None:
        source, made = make_source()
        consumer = await joined(source, made)  # more members than partitions: nothing for us
        assert await source.is_idle()
        assert consumer.listener is not None
        await consumer.listener.on_partitions_revoked(frozenset())  # a rebalance starts
        assert not await source.is_idle()
        await consumer.listener.on_partitions_assigned(frozenset({TP0}))
        consumer.assigned, consumer.positions, consumer.logs = {TP0}, {TP0: 0}, {TP0: [b"a"]}
        await source.poll(10, 0.001)
        assert await source.is_idle()

    anyio.run(main)


def test_aclose_stops_the_consumer_once() -> None:
    async def main() -> None:
        source, made = make_source()
        await source.aclose()  # never started
        await joined(source, made, TP0)
        await source.aclose()
        await source.aclose()
        assert made[0].stopped and len(made) == 1

    anyio.run(main)


# ------------------------------------------------------------- the engine on this source
def engine_on(tmp_path: Path, source: KafkaSource, deadletters: Any, revoke_timeout_s: float = 20.0,
              **limits: Any) -> Engine:
    settings = Settings(home=tmp_path / "home")
    lim = {"max_files": 1000, "max_rows": 10**9, "max_bytes": 10**12, "max_age_s": 60.0, **limits}
    return Engine(source, build_committer(settings, source.group), deadletters, limits=BatchLimits(**lim),
                  max_inflight_bytes=10**9, router=Router(RoutingSettings()), workers=2,
                  retry=RetryPolicy(max_retries=2), poll_max_records=50, poll_timeout_s=0.01, metrics=Metrics(),
                  revoke_timeout_s=revoke_timeout_s)


def rows(engine: Engine, table: str) -> list[int]:
    return sorted(engine.committer.catalog.load_table(("default", table)).scan().to_arrow().column("id").to_pylist())


def test_revocation_commits_and_acks_what_was_read_before_the_partitions_go(tmp_path: Path) -> None:
    staging = tmp_path / "home" / "staging"
    events = [event_for(write_parquet(staging, {"id": [i]}), "t") for i in range(10)]

    async def main() -> None:
        source, made = make_source()
        consumer = await joined(source, made, TP0, TP1)
        consumer.logs = {TP0: list(events[:5]), TP1: list(events[5:])}
        engine = engine_on(tmp_path, source, MemoryDeadLetters())
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run)
            with anyio.fail_after(10):
                while engine.statistics().events < 10:  # all in the open window (max age 60 s)
                    await anyio.sleep(0.01)
            assert engine.statistics().snapshots == 0
            await consumer.rebalance([TP1])
            assert consumer.committed == {TP0: 5, TP1: 5}  # flushed, committed, acked in the callback
            assert engine.statistics().snapshots == 1 and rows(engine, "t") == list(range(10))
            assert engine.metrics.registry.get_sample_value("ingester_partition_lag", {"partition": "events/1"}) == 0
            with anyio.fail_after(5):  # the next poll drops the revoked partition from the gauge
                while engine.metrics.registry.get_sample_value("ingester_partition_lag", {"partition": "events/0"}) is not None:
                    await anyio.sleep(0.01)
            engine.stop()
        assert engine.metrics.registry.get_sample_value("ingester_partition_lag", {"partition": "events/0"}) is None

    anyio.run(main)


def test_a_slow_commit_holds_the_rebalance_no_longer_than_the_revoke_timeout(tmp_path: Path) -> None:
    """The group goes on after ``revoke_timeout_s``; the commit still lands, and what the
    member reads again from the last ack is dropped by the offsets in the snapshot markers."""
    staging = tmp_path / "home" / "staging"
    events = [event_for(write_parquet(staging, {"id": [i]}), "t") for i in range(10)]

    async def main() -> Engine:
        source, made = make_source()
        consumer = await joined(source, made, TP0, TP1)
        consumer.logs = {TP0: list(events[:5]), TP1: list(events[5:])}
        engine = engine_on(tmp_path, source, MemoryDeadLetters(), revoke_timeout_s=0.3)
        apply = engine.committer.apply

        def slow_apply(loaded: Any, extra_delete_keys: Any = None) -> Any:
            time.sleep(2.0)
            return apply(loaded, extra_delete_keys)

        engine.committer.apply = slow_apply  # type: ignore[method-assign]
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run)
            with anyio.fail_after(10):
                while engine.statistics().events < 10:
                    await anyio.sleep(0.01)
            started = time.monotonic()
            await consumer.rebalance([TP1])
            assert time.monotonic() - started < 1.5
            assert consumer.committed == {} and engine.statistics().snapshots == 0  # nothing acked before its commit
            with anyio.fail_after(10):
                while engine.statistics().snapshots < 1:
                    await anyio.sleep(0.01)
            engine.stop()
        return engine

    engine = anyio.run(main)
    stats = engine.statistics()
    assert rows(engine, "t") == list(range(10))
    assert stats.snapshots == 1 and stats.duplicates == 5  # events/1 read again after the rebalance


class RebalancingLetters(MemoryDeadLetters):
    """Writing the first dead letter takes a while, and a rebalance happens meanwhile."""

    def __init__(self, consumer: FakeConsumer, assignment: list[TopicPartition]) -> None:
        super().__init__()
        self.consumer, self.assignment = consumer, assignment

    async def put(self, letter: DeadLetter) -> None:
        if not self.letters:
            await self.consumer.rebalance(self.assignment)
        await super().put(letter)


def test_messages_of_a_partition_revoked_during_a_dead_letter_write_are_not_admitted(tmp_path: Path) -> None:
    """Offsets 0..2 are polled; the revoke runs while offset 1 (garbage) is dead-lettered. Offset 2
    must not be committed by this member: offset 0 was dropped by the revoke, so committing 2 would
    move the table's offset marker past 0 and its new owner would skip 0 as a duplicate."""
    staging = tmp_path / "home" / "staging"
    good = [event_for(write_parquet(staging, {"id": [i]}), "t") for i in range(2)]

    async def main() -> None:
        source, made = make_source()
        consumer = await joined(source, made, TP0)
        consumer.logs = {TP0: [good[0], b"garbage", good[1]]}
        letters = RebalancingLetters(consumer, [])  # TP0 goes to another member
        engine = engine_on(tmp_path, source, letters, max_files=1)
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run)
            with anyio.fail_after(10):
                while not letters.letters:
                    await anyio.sleep(0.01)
            await anyio.sleep(0.2)
            engine.stop()
        assert engine.statistics().events == 0 and engine.statistics().snapshots == 0
        assert consumer.commits == []  # the new owner starts at offset 0

    anyio.run(main)


def test_a_commit_racing_another_member_is_redone_from_fresh_markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two members of a group write one table from different partitions. When the other member
    commits between our marker read and our commit, our commit must be redone from fresh markers
    (pyiceberg's own retry would rebase it and keep offsets computed against the old parent:
    the table would forget the other member's offset, and replay it after a crash)."""
    settings = Settings(home=tmp_path / "home")
    staging = tmp_path / "home" / "staging"
    ref = TableRef("default", "t")

    def batch(partition: str, offset: int) -> Batch:
        path = write_parquet(staging, {"id": [offset + 100 * int(partition[-1])]})
        event = FileEvent(table="t", location=str(path), row_count=1, byte_size=path.stat().st_size)
        return Batch(ref, (Pending(event, Position(partition, offset)),))

    first, second = build_committer(settings, "g"), build_committer(settings, "g")
    first.commit(batch("events/0", 0))
    commit_table = first.catalog.commit_table
    raced: list[bool] = []

    def commit_after_the_other_member(*args: Any, **kwargs: Any) -> Any:
        if not raced:
            raced.append(True)
            second.commit(batch("events/1", 0))
        return commit_table(*args, **kwargs)

    monkeypatch.setattr(first.catalog, "commit_table", commit_after_the_other_member)
    loaded = first.read(batch("events/0", 1))
    retry = RetryPolicy(max_retries=3, min_wait_s=0.001, max_wait_s=0.001)
    result = anyio.run(retry.run, lambda: anyio.to_thread.run_sync(first.apply, loaded))
    assert raced and result.rows == 1
    table = first.catalog.load_table(("default", "t"))
    assert table.scan().to_arrow().num_rows == 3
    summary = table.current_snapshot().summary.additional_properties  # type: ignore[union-attr]
    assert json.loads(summary["ingester.offsets.g"]) == {"events/0": 1, "events/1": 0}
    assert MarkerCache().read("cold", table).offsets == {"g": {"events/0": 1, "events/1": 0}}


def test_exit_when_idle_drains_more_windows_than_the_workers_queues_hold(tmp_path: Path) -> None:
    """At idle every open window closes at once; batches the worker queues refuse wait in the
    outbox and must still be dispatched, or their bytes stay in flight and the engine never exits."""
    staging = tmp_path / "home" / "staging"
    events = [event_for(write_parquet(staging, {"id": [i]}), f"t{i}") for i in range(12)]

    async def main() -> None:
        source, made = make_source()
        consumer = await joined(source, made, TP0)
        consumer.logs = {TP0: list(events)}
        engine = engine_on(tmp_path, source, MemoryDeadLetters())
        with anyio.fail_after(30):
            stats = await engine.run(exit_when_idle=True)
        assert (stats.events, stats.snapshots) == (12, 12)
        assert consumer.committed == {TP0: 12}

    anyio.run(main)
