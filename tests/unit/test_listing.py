"""Listing discovery on a local folder and the embedded SQLite catalog: what a round hands on,
what it drops (loaded, in flight, unroutable, other suffixes), the in-flight bound, idleness,
the metrics, and the merged source."""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pytest

from ingester.catalog import open_catalog
from ingester.events import decode_event
from ingester.metrics import Metrics
from ingester.object_keys import KeyRouter
from ingester.routing import Router
from ingester.settings import ObjectRoute, RoutingSettings, Settings
from ingester.sources.listers import ListingFailed, StoreLister
from ingester.sources.listing import CommittedIds, ListingSource
from ingester.sources.memory import MemorySource
from ingester.sources.merged import MergedSource
from ingester.wiring import build_engine
from tests.support import write_parquet

ROUTE = "**/drop/{table}/**"


def drop_files(root: Path, per_table: int = 3) -> Path:
    drop = root / "drop"
    for table in ("orders", "users"):
        for i in range(per_table):
            write_parquet(drop / table, {"id": pa.array([i, 100 + i], pa.int64())}, f"{table}-{i}.parquet")
    (drop / "orders" / "_SUCCESS").write_bytes(b"")
    write_parquet(drop, {"id": [1]}, "stray.parquet")
    return drop


def listing_settings(tmp_path: Path, drop: Path, **objects: Any) -> Settings:
    return Settings(home=tmp_path / "home", source={"kind": "listing"},
                    objects={"prefixes": [str(drop)], "routes": [{"pattern": ROUTE}], **objects})


def sample(metrics: Metrics, name: str, **labels: str) -> float:
    return metrics.registry.get_sample_value(name, {"source": "listing", **labels}) or 0.0


def make_source(tmp_path: Path, drop: Path, metrics: Metrics | None = None, **kw: Any) -> ListingSource:
    settings = Settings(home=tmp_path / "home")
    args: dict[str, Any] = {"interval_s": 0.0, "max_inflight_files": 100, **kw}
    return ListingSource([str(drop)], StoreLister(page_objects=2), KeyRouter([ObjectRoute(pattern=ROUTE)]),
                         Router(RoutingSettings()), CommittedIds(open_catalog(settings.catalog, settings.home_dir)),
                         group="g", metrics=metrics, **args)


def run(settings: Settings, metrics: Metrics | None = None, rounds: int | None = 1) -> Any:
    engine = build_engine(settings, metrics=metrics, listing_rounds=rounds)
    return anyio.run(lambda: engine.run(exit_when_idle=True)), engine


def test_a_round_loads_each_routed_file_and_dead_letters_the_unroutable_one(tmp_path: Path) -> None:
    drop = drop_files(tmp_path)
    settings = listing_settings(tmp_path, drop)
    metrics = Metrics()
    stats, _ = run(settings, metrics)
    assert (stats.events, stats.rows, stats.dead_letters) == (6, 12, 1)
    catalog = open_catalog(settings.catalog, settings.home_dir)
    for table in ("orders", "users"):
        assert sorted(catalog.load_table(("default", table)).scan().to_arrow().column("id").to_pylist()) == [0, 1, 2, 100, 101, 102]
    letters = [json.loads(line) for line in (settings.deadletter_folder / "deadletters.jsonl").read_text().splitlines()]
    assert [letter["reason"].split(": ", 1)[1] for letter in letters] == [
        f"no route matches key {str(drop / 'stray.parquet').lstrip('/')!r} (routes: {ROUTE!r})"]
    assert sample(metrics, "ingester_objects_discovered_total") == 6
    assert sample(metrics, "ingester_objects_skipped_total", reason="suffix") == 1  # _SUCCESS
    assert sample(metrics, "ingester_objects_skipped_total", reason="unroutable") == 1
    assert sample(metrics, "ingester_listing_duration_seconds_count") == 1
    assert sample(metrics, "ingester_objects_oldest_unloaded_age_seconds") == 0  # all committed


def test_a_new_process_skips_what_the_table_holds_and_loads_only_the_new_file(tmp_path: Path) -> None:
    drop = drop_files(tmp_path)
    settings = listing_settings(tmp_path, drop)
    run(settings)
    write_parquet(drop / "orders", {"id": pa.array([7], pa.int64())}, "late.parquet")
    metrics = Metrics()
    stats, _ = run(settings, metrics)
    assert (stats.events, stats.rows, stats.duplicates) == (1, 1, 0)
    assert sample(metrics, "ingester_objects_skipped_total", reason="already_loaded") == 6


def test_a_clock_set_back_after_a_restart_does_not_make_a_new_file_look_replayed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    drop = drop_files(tmp_path, per_table=1)
    settings = listing_settings(tmp_path, drop)
    run(settings)
    write_parquet(drop / "orders", {"id": pa.array([7, 8], pa.int64())}, "late.parquet")
    monkeypatch.setattr("ingester.sources.listing.time.time_ns", lambda: 1_000)  # before every committed offset
    stats, _ = run(settings)
    assert (stats.events, stats.rows, stats.duplicates) == (1, 2, 0)


def test_a_file_written_again_with_other_content_loads_again(tmp_path: Path) -> None:
    drop = drop_files(tmp_path, per_table=1)
    settings = listing_settings(tmp_path, drop)
    run(settings)
    write_parquet(drop / "orders", {"id": pa.array([5, 6, 7], pa.int64())}, "orders-0.parquet")  # same key, new size
    stats, _ = run(settings)
    assert (stats.events, stats.rows) == (1, 3)


def test_in_flight_files_are_bounded_and_freed_by_commit(tmp_path: Path) -> None:
    drop = drop_files(tmp_path)
    source = make_source(tmp_path, drop, max_inflight_files=2)

    async def go() -> None:
        first = await source.poll(100, 1.0)
        assert len(first) == 2 and await source.poll(100, 0.01) == []
        await source.commit({first[0].position.partition: first[0].position.offset + 1})
        second = await source.poll(100, 1.0)
        assert len(second) == 1 and second[0].position.offset > first[1].position.offset
        ids = {m.payload for m in first + second}
        assert len(ids) == 3

    anyio.run(go)


def test_idle_after_a_round_that_finds_nothing_new_and_unroutable_keys_dead_letter_once(tmp_path: Path) -> None:
    drop = drop_files(tmp_path, per_table=1)
    source = make_source(tmp_path, drop)

    async def drain() -> list[Any]:
        """One round's messages."""
        out, rounds = [], source.statistics().rounds
        while source.statistics().rounds == rounds:
            out += await source.poll(100, 0.5)
        return out

    async def go() -> None:
        assert not await source.is_idle()  # no round yet
        first = await drain()
        assert sorted(m.invalid is not None for m in first) == [False, False, True]
        assert not await source.is_idle()  # in flight
        await source.commit({m.position.partition: max(x.position.offset for x in first) + 1 for m in first})
        assert not await source.is_idle()  # the round found something: another must find nothing
        assert await drain() == []  # acked ones and the unroutable key are not handed on again
        assert await source.is_idle()

    anyio.run(go)


def test_events_name_the_route_table_and_the_object_identity(tmp_path: Path) -> None:
    drop = drop_files(tmp_path, per_table=1)
    source = make_source(tmp_path, drop)
    messages = anyio.run(source.poll, 100, 1.0)
    events = [decode_event(m.payload) for m in messages if m.invalid is None]
    assert sorted(e.table for e in events) == ["orders", "users"]
    for e in events:
        assert e.location is not None and e.event_id and e.event_id.startswith("obj:")
        assert e.byte_size == os.stat(e.location).st_size


def test_oldest_unloaded_age_follows_the_mtime_of_what_is_in_flight(tmp_path: Path) -> None:
    drop = drop_files(tmp_path, per_table=1)
    old = time.time() - 3600
    for f in (drop / "orders").iterdir():
        os.utime(f, (old, old))
    metrics = Metrics()
    source = make_source(tmp_path, drop, metrics)
    messages = anyio.run(source.poll, 100, 1.0)
    assert 3590 < sample(metrics, "ingester_objects_oldest_unloaded_age_seconds") < 3700
    anyio.run(source.commit, {m.position.partition: m.position.offset + 1 for m in messages})
    assert sample(metrics, "ingester_objects_oldest_unloaded_age_seconds") == 0


def test_a_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    source = make_source(tmp_path, tmp_path / "nope")
    with pytest.raises(ListingFailed, match="cannot list .*nope: not a folder"):
        anyio.run(source.poll, 10, 0.1)


def test_listing_prefixes_are_readable_and_required() -> None:
    settings = Settings(source={"kind": "listing"}, objects={"prefixes": ["s3://lake/in/"]})
    assert "s3://lake/in/" in settings.allowed_prefixes
    with pytest.raises(ValueError, match="objects.prefixes is required"):
        Settings(source={"kind": "listing"})
    with pytest.raises(ValueError, match="objects.prefixes is required"):
        Settings(objects={"relist_interval_s": 60})


def test_merged_source_acks_each_partition_to_its_own_source() -> None:
    a, b = MemorySource("g"), MemorySource("g")
    a.add([b"a0", b"a1"], "topic/0")
    b.add([b"b0"], "listing/x")
    merged = MergedSource([a, b])

    async def go() -> None:
        got: list[Any] = []
        while len(got) < 3:
            got += await merged.poll(10, 0.01)
        assert sorted(m.payload for m in got) == [b"a0", b"a1", b"b0"]
        await merged.commit({"topic/0": 2, "listing/x": 1})
        assert (a.committed, b.committed) == ({"topic/0": 2}, {"listing/x": 1})
        assert await merged.is_idle()

    anyio.run(go)
    with pytest.raises(ValueError, match="share one consumer group"):
        MergedSource([MemorySource("g"), MemorySource("h")])


@pytest.fixture
def root_logging() -> Iterator[None]:
    """Commands replace the root handlers (stderr of the CliRunner): put the old ones back."""
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    yield
    root.handlers[:], root.level = handlers, level


def test_backfill_command_loads_once_and_says_what_it_did(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, root_logging: None
) -> None:
    from typer.testing import CliRunner

    from ingester.cli.commands import app

    drop = drop_files(tmp_path)
    monkeypatch.setenv("INGESTER_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    first = runner.invoke(app, ["backfill", str(drop), "--route", ROUTE])
    assert first.exit_code == 0, first.output
    assert ("backfill: 6 files loaded (12 rows in 2 snapshots), 0 skipped as already loaded, 1 dead-lettered "
            "(1 unroutable, 0 unreadable or refused), 1 skipped by their route's suffixes") in first.output
    again = runner.invoke(app, ["backfill", str(drop), "--route", ROUTE])
    assert "backfill: 0 files loaded (0 rows in 0 snapshots), 6 skipped as already loaded" in again.output
    no_route = runner.invoke(app, ["backfill", str(drop)])
    assert no_route.exit_code == 2 and "no route: give --route PATTERN" in no_route.output
    bad = runner.invoke(app, ["backfill", str(drop), "--route", "x/**"])
    assert bad.exit_code == 2 and "needs {table} in the pattern or a fixed 'table'" in bad.output
