"""Messages of 0..n objects through the engine: routing, skips, dead letters, acks after all commits."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import anyio
import pyarrow.parquet as pq
import pytest

from ingester.commit import LoadedBatch, SnapshotCommitter
from ingester.deadletter import MemoryDeadLetters
from ingester.decoding import ObjectEventDecoder, build_decoder
from ingester.engine import Engine
from ingester.metrics import Metrics
from ingester.object_keys import KeyRouter, ObjectRef
from ingester.retry import RetryPolicy
from ingester.routing import Router
from ingester.settings import ObjectRoute, RoutingSettings, Settings
from ingester.sources.base import Message, OffsetTracker, Position
from ingester.sources.memory import MemorySource
from ingester.window import BatchLimits
from ingester.wiring import build_committer
from tests.support import write_parquet


def listed(m: Message) -> list[ObjectRef]:
    """A test codec: the payload is a JSON list of local paths (size from the file)."""
    return [ObjectRef(p, Path(p).stat().st_size if Path(p).exists() else 1, "e") for p in json.loads(m.payload)]


def run(tmp_path: Path, source: MemorySource, decoder: ObjectEventDecoder, metrics: Metrics,
        max_files: int = 1000) -> tuple[Engine, MemoryDeadLetters]:
    settings = Settings(home=tmp_path / "home", storage={"allowed_prefixes": [str(tmp_path)]})
    letters = MemoryDeadLetters()
    engine = Engine(source, build_committer(settings, source.group), letters,
                    limits=BatchLimits(max_files, 10**9, 10**12, 60.0), max_inflight_bytes=10**9,
                    router=Router(RoutingSettings()), retry=RetryPolicy(max_retries=1), poll_timeout_s=0.01,
                    metrics=metrics, decoder=decoder)
    anyio.run(lambda: engine.run(exit_when_idle=True))
    return engine, letters


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, labels) or 0.0


def test_tracker_marks_a_message_done_after_all_its_events() -> None:
    t = OffsetTracker()
    t.track(Position("p", 0), events=3)
    t.track(Position("p", 1))
    t.done([Position("p", 1), Position("p", 0)])
    assert t.committable() == {}
    t.done([Position("p", 0)])
    assert t.committable() == {}
    t.done([Position("p", 0)])
    assert t.committable() == {"p": 2} and t.pending() == 0


def test_one_message_many_objects_some_unroutable(tmp_path: Path) -> None:
    """Three objects of one table in one message, split over batches of one file each (the offset
    markers must not drop the later ones), one key no route takes, one ``_SUCCESS`` marker."""
    files = [write_parquet(tmp_path / "in" / "orders", {"id": [i, i + 10]}) for i in range(3)]
    stray = write_parquet(tmp_path / "elsewhere", {"id": [99]})
    router = KeyRouter([ObjectRoute(pattern="**/in/{table}/*")])
    decoder = ObjectEventDecoder(listed, router, "test")
    source = MemorySource()
    success = tmp_path / "in" / "orders" / "_SUCCESS"
    source.add([json.dumps([*map(str, files), str(stray), str(success)]).encode(), b"[]"])
    metrics = Metrics()
    engine, letters = run(tmp_path, source, decoder, metrics, max_files=1)
    table = engine.committer.catalog.load_table(("default", "orders"))
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == [0, 1, 2, 10, 11, 12]
    assert len(table.metadata.snapshots) == 3
    assert source.committed == {"p0": 2}
    assert len(letters.letters) == 1 and f"no route matches key {str(stray).lstrip('/')!r}" in letters.letters[0].reason
    assert sample(metrics, "ingester_objects_discovered_total", source="test") == 5
    assert sample(metrics, "ingester_objects_loaded_total", source="test") == 3
    assert sample(metrics, "ingester_objects_skipped_total", source="test", reason="not_a_data_file") == 1
    assert sample(metrics, "ingester_objects_skipped_total", source="test", reason="not_finished") == 1


def test_an_object_announced_twice_loads_once(tmp_path: Path) -> None:
    f = write_parquet(tmp_path / "in" / "t", {"id": [1, 2]})
    decoder = ObjectEventDecoder(listed, KeyRouter([ObjectRoute(pattern="**/in/{table}/*")]), "test")
    source = MemorySource()
    source.add([json.dumps([str(f), str(f)]).encode(), json.dumps([str(f)]).encode()])
    metrics = Metrics()
    engine, letters = run(tmp_path, source, decoder, metrics)
    table = engine.committer.catalog.load_table(("default", "t"))
    assert table.scan().to_arrow().column("id").to_pylist() == [1, 2] and not letters.letters
    assert sample(metrics, "ingester_objects_loaded_total", source="test") == 1
    assert sample(metrics, "ingester_objects_skipped_total", source="test", reason="already_loaded") == 2
    source2 = MemorySource(group="again")  # a week later, by another path: the ledger remembers
    source2.add([json.dumps([str(f)]).encode()])
    engine2, _ = run(tmp_path, source2, decoder, Metrics())
    table.refresh()
    assert table.scan().to_arrow().num_rows == pq.read_metadata(f).num_rows


def test_other_buckets_are_skipped_and_bad_messages_dead_lettered(tmp_path: Path) -> None:
    settings = Settings(source={"format": "s3-events"}, objects={"routes": [{"pattern": "in/{table}/**"}], "buckets": ["lake"]})
    decoder = build_decoder(settings)
    record = {"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "other"}, "object": {"key": "in/t/a.parquet", "size": 3}}}
    source = MemorySource()
    source.add([json.dumps({"Records": [record]}).encode(), b"garbage"])
    metrics = Metrics()
    _, letters = run(tmp_path, source, decoder, metrics)  # type: ignore[arg-type]
    assert sample(metrics, "ingester_objects_skipped_total", source="s3-events", reason="other_bucket") == 1
    assert [letter.reason for letter in letters.letters] == ["invalid event at p0@1: S3 notification: not JSON: Expecting value: line 1 column 1 (char 0)"]
    assert source.committed == {"p0": 2}


def test_format_setting_picks_the_codec() -> None:
    assert build_decoder(Settings()).source is None
    routes = {"routes": [{"pattern": "in/{table}/**"}], "buckets": ["lake"]}
    assert build_decoder(Settings(source={"format": "seaweedfs-filer"}, objects=routes)).source == "seaweedfs-filer"
    with pytest.raises(ValueError, match="format"):
        Settings(source={"format": "csv"})
    with pytest.raises(ValueError, match="needs objects.routes"):
        Settings(source={"format": "s3-events"})
    with pytest.raises(ValueError, match="needs objects.buckets"):
        Settings(source={"format": "seaweedfs-filer"}, objects={"routes": routes["routes"]})


def test_sqs_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="sqs_queue_url is required"):
        Settings(source={"kind": "sqs", "format": "s3-events"})
    with pytest.raises(ValueError, match="set source.format = 's3-events'"):
        Settings(source={"kind": "sqs", "sqs_queue_url": "https://sqs.us-east-1.amazonaws.com/1/q"})


class GatedCommitter(SnapshotCommitter):
    """Commits of table ``slow`` wait, and note what the source had acked meanwhile."""

    source: MemorySource
    seen: list[dict[str, int]]

    def apply_many(self, items: Any) -> Any:  # the daemon's commits (one table or several at once)
        if any(loaded.batch.table.name == "slow" for loaded, _ in items):
            time.sleep(1.0)  # the other table's batch commits and is acked meanwhile, if it may be
            self.seen.append(dict(self.source.committed))
        return super().apply_many(items)


def test_a_message_is_acked_only_after_every_event_committed(tmp_path: Path) -> None:
    fast = write_parquet(tmp_path / "in" / "fast", {"id": [1]})
    slow = write_parquet(tmp_path / "in" / "slow", {"id": [2]})
    later = write_parquet(tmp_path / "in" / "fast", {"id": [3]})
    decoder = ObjectEventDecoder(listed, KeyRouter([ObjectRoute(pattern="**/in/{table}/*")]), "test")
    source = MemorySource()
    source.add([json.dumps([str(fast), str(slow)]).encode(), json.dumps([str(later)]).encode()])
    settings = Settings(home=tmp_path / "home", storage={"allowed_prefixes": [str(tmp_path)]})
    committer = build_committer(settings, source.group)
    committer.__class__ = GatedCommitter
    committer.source, committer.seen = source, []  # type: ignore[attr-defined]
    engine = Engine(source, committer, MemoryDeadLetters(), limits=BatchLimits(1, 10**9, 10**12, 60.0),
                    max_inflight_bytes=10**9, router=Router(RoutingSettings()), workers=1,  # fast's batches first
                    retry=RetryPolicy(max_retries=1), poll_timeout_s=0.01, decoder=decoder)

    async def until_acked() -> None:  # not exit_when_idle: that acks once, when all is drained
        async with anyio.create_task_group() as tg:
            tg.start_soon(engine.run)
            with anyio.fail_after(20):
                while source.committed != {"p0": 2}:
                    await anyio.sleep(0.05)
            engine.stop()

    anyio.run(until_acked)
    assert committer.seen == [{}]  # ``fast`` (both of its files) was committed, yet nothing acked
    assert len(committer.catalog.load_table(("default", "fast")).metadata.snapshots) == 2
    assert source.committed == {"p0": 2}


def test_beside_a_relisting_a_notification_decoder_reads_the_listings_own_messages_as_envelopes(tmp_path: Path) -> None:
    from ingester.events import FileEvent, encode_event

    settings = Settings(home=tmp_path, source={"kind": "kafka", "format": "s3-events"},
                        objects={"routes": [{"pattern": "in/{table}/**"}], "prefixes": ["s3://b/in/"], "relist_interval_s": 60})
    decoder = build_decoder(settings)
    ref = ObjectRef("s3://b/in/t/a.parquet", 10, etag="e")
    listed = FileEvent(table="t", location=ref.location, byte_size=10, event_id=ref.event_id())
    envelope = Message(encode_event(listed), Position("listing/s3://b/in/", 1))
    assert decoder.decode(envelope).events == (listed,)
    notice = json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {
        "bucket": {"name": "b"}, "object": {"key": "in/t/a.parquet", "size": 10, "eTag": "e"}}}]}).encode()
    (announced,) = decoder.decode(Message(notice, Position("events/0", 1))).events
    assert announced.event_id == listed.event_id  # both paths name the object alike: it loads once
