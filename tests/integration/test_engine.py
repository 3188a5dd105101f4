"""The engine end to end on each catalog (embedded SQLite + local warehouse, and the real
REST catalog on S3), reading back with pyiceberg and DuckDB."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.compute  # noqa: F401  (pa.compute)
import pyarrow.parquet as pq
import pytest
from pyiceberg.transforms import (
    BucketTransform,
    DayTransform,
    HourTransform,
    IdentityTransform,
    MonthTransform,
    TruncateTransform,
    YearTransform,
)

from ingester.catalog import open_catalog
from ingester.deadletter import FolderDeadLetters
from ingester.engine import EngineStats
from ingester.settings import Settings
from ingester.sources.spool import SpoolQueue, SpoolSource
from ingester.wiring import build_engine
from tests.support import CatalogUnderTest, duckdb_rows, event_for, snapshot_count, write_parquet


class Env:
    """One isolated ingester home on one catalog, with a unique namespace."""

    def __init__(
        self, home: Path, catalog: dict[str, Any], s3: dict[str, str] | None, commit: dict[str, Any] | None = None, **window: Any
    ) -> None:
        self.ns = f"t{uuid.uuid4().hex[:8]}"
        self.settings = Settings(
            home=home, catalog=catalog, routing={"namespace": self.ns},
            window={"max_batch_age_s": 60, **window},
            commit={"strict_casting": True, "max_retries": 3, **(commit or {})},
        )
        self.home = self.settings.home_dir
        self.staging = self.home / "staging"
        self.queue = SpoolQueue(self.settings.spool_file)
        self.catalog = open_catalog(self.settings.catalog, self.home)
        self.s3 = s3

    def file(self, data: dict[str, list[Any]] | pa.Table) -> Path:
        return write_parquet(self.staging, data)

    def publish(self, path: Path, table: str, **kw: Any) -> None:
        self.queue.put_many([event_for(path, table, **kw)])

    def run(self, source: Any = None) -> EngineStats:
        engine = build_engine(self.settings, source=source or SpoolSource(SpoolQueue(self.settings.spool_file)))
        return anyio.run(lambda: engine.run(exit_when_idle=True))

    def table(self, name: str) -> Any:
        return self.catalog.load_table((self.ns, name))

    def rows(self, name: str) -> list[dict[str, Any]]:
        return self.table(name).scan().to_arrow().sort_by("id").to_pylist()

    def duck(self, name: str, query: str = "SELECT count(*) FROM t") -> list[tuple[Any, ...]]:
        return duckdb_rows(self.table(name), query, self.s3)


@pytest.fixture
def env(any_catalog: CatalogUnderTest, tmp_path: Path) -> Callable[..., Env]:
    def make(commit: dict[str, Any] | None = None, **window: Any) -> Env:
        return Env(tmp_path / "home", any_catalog.settings, any_catalog.s3, commit, **window)

    return make


def ids(start: int, n: int) -> pa.Array:
    return pa.array(range(start, start + n), pa.int64())


def test_n_files_of_one_table_in_one_window_make_one_snapshot(env: Callable[..., Env]) -> None:
    e = env()
    for i in range(20):
        e.publish(e.file({"id": ids(i * 100, 100), "v": [f"r{i}"] * 100}), "events")
    stats = e.run()
    assert (stats.events, stats.rows, stats.snapshots) == (20, 2000, 1)
    assert snapshot_count(e.table("events")) == 1
    assert len(e.rows("events")) == 2000
    assert e.duck("events", "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM t") == [(2000, 2000, 0, 1999)]
    assert e.queue.depth() == 0


def test_a_rewrite_writes_repetitive_strings_as_dictionaries_and_reads_back_exactly(env: Callable[..., Env]) -> None:
    e = env(commit={"zero_copy": False})
    n = 20_000
    for i in range(3):
        rows = range(i * n, (i + 1) * n)
        e.publish(e.file({"id": ids(i * n, n), "country": [("DE", "FR", "US")[r % 3] for r in rows],
                          "uid": [f"user-{r:08d}" for r in rows]}), "d")
    e.publish(e.file({"id": ids(3 * n, 10), "uid": [f"late-{r}" for r in range(10)]}), "d")  # no country
    stats = e.run()
    assert (stats.rows, stats.snapshots) == (3 * n + 10, 1)
    assert e.duck("d", "SELECT country, count(*), count(DISTINCT uid), min(id), max(id) FROM t GROUP BY 1 ORDER BY 1") == [
        ("DE", n, n, 0, 3 * n - 3), ("FR", n, n, 1, 3 * n - 2), ("US", n, n, 2, 3 * n - 1), (None, 10, 10, 3 * n, 3 * n + 9)]
    got = e.table("d").scan().to_arrow()
    assert not any(pa.types.is_dictionary(f.type) for f in got.schema)
    assert got.filter(pa.compute.equal(got["id"], 40_004)).to_pylist() == [{"id": 40_004, "country": "US", "uid": "user-00040004"}]
    data_file = next(iter(e.table("d").scan().plan_files())).file
    meta = pq.ParquetFile(e.table("d").io.new_input(data_file.file_path).open()).metadata
    country = next(meta.row_group(0).column(c) for c in range(meta.num_columns) if meta.row_group(0).column(c).path_in_schema == "country")
    assert country.has_dictionary_page and b"ARROW:schema" not in (meta.metadata or {})


def test_three_interleaved_tables_get_one_snapshot_each(env: Callable[..., Env]) -> None:
    e = env()
    for i in range(10):
        for name in ("a", "b", "c"):
            e.publish(e.file({"id": ids(i * 10, 10), "t": [name] * 10}), name)
    stats = e.run()
    assert stats.snapshots == 3
    for name in ("a", "b", "c"):
        assert snapshot_count(e.table(name)) == 1
        assert e.duck(name, "SELECT count(*), min(t), max(t) FROM t") == [(100, name, name)]


def test_windows_close_on_max_files(env: Callable[..., Env]) -> None:
    e = env(max_batch_files=4)
    for i in range(10):
        e.publish(e.file({"id": ids(i, 1)}), "w")
    assert e.run().snapshots == 3
    assert snapshot_count(e.table("w")) == 3 and len(e.rows("w")) == 10


def test_replace_is_one_atomic_overwrite_keeping_history(env: Callable[..., Env]) -> None:
    e = env()
    e.publish(e.file({"id": ids(0, 100)}), "r")
    e.run()
    first = e.table("r").current_snapshot().snapshot_id
    e.publish(e.file({"id": ids(1000, 5)}), "r", write_disposition="replace", load_id="L2")
    e.publish(e.file({"id": ids(2000, 5)}), "r", write_disposition="replace", load_id="L2")
    e.run()
    t = e.table("r")
    assert [r["id"] for r in e.rows("r")] == list(range(1000, 1005)) + list(range(2000, 2005))
    assert snapshot_count(t) == 2 and t.current_snapshot().summary.operation.value == "overwrite"
    assert t.scan(snapshot_id=first).to_arrow().num_rows == 100
    assert e.duck("r") == [(10,)]


def test_merge_updates_and_inserts_value_by_value(env: Callable[..., Env]) -> None:
    e = env()
    e.publish(e.file({"id": ids(0, 100), "v": [f"old{i}" for i in range(100)]}), "m",
              write_disposition="merge", primary_key=("id",))
    e.run()
    e.publish(e.file({"id": ids(90, 20), "v": [f"new{i}" for i in range(90, 110)]}), "m",
              write_disposition="merge", primary_key=("id",))
    e.publish(e.file({"id": pa.array([5, 95], pa.int64()), "v": ["again5", "again95"]}), "m",
              write_disposition="merge", primary_key=("id",))
    assert e.run().snapshots == 1
    got = {r["id"]: r["v"] for r in e.rows("m")}
    assert len(got) == 110
    assert got[10] == "old10" and got[5] == "again5" and got[95] == "again95" and got[92] == "new92" and got[105] == "new105"
    assert e.duck("m", "SELECT count(*), count(DISTINCT id) FROM t") == [(110, 110)]
    assert e.duck("m", "SELECT v FROM t WHERE id IN (5, 95, 105) ORDER BY id") == [("again5",), ("again95",), ("new105",)]
    assert snapshot_count(e.table("m")) == 2


def test_merge_with_hard_deletes(env: Callable[..., Env]) -> None:
    e = env()
    cols = {"deleted": {"data_type": "bool", "hard_delete": True}}
    e.publish(e.file({"id": ids(0, 10), "deleted": [False] * 10}), "h", write_disposition="merge", primary_key=("id",), columns=cols)
    e.run()
    e.publish(e.file({"id": pa.array([1, 2, 20], pa.int64()), "deleted": [True, False, False]}), "h",
              write_disposition="merge", primary_key=("id",), columns=cols)
    e.run()
    assert [r["id"] for r in e.rows("h")] == [0, 2, 3, 4, 5, 6, 7, 8, 9, 20]
    assert e.duck("h") == [(10,)]


def test_schema_evolves_mid_stream(env: Callable[..., Env]) -> None:
    e = env(max_batch_files=1)
    e.publish(e.file({"id": pa.array([1, 2], pa.int32()), "a": ["x", "y"]}), "s")
    e.publish(e.file({"id": ids(3, 1), "a": ["z"], "b": [1.5]}), "s")
    e.publish(e.file({"id": ids(4, 1), "c": pa.array([7], pa.int32())}), "s")
    assert e.run().snapshots == 3
    rows = e.rows("s")
    assert rows == [
        {"id": 1, "a": "x", "b": None, "c": None},
        {"id": 2, "a": "y", "b": None, "c": None},
        {"id": 3, "a": "z", "b": 1.5, "c": None},
        {"id": 4, "a": None, "b": None, "c": 7},
    ]
    assert str(e.table("s").schema().find_field("id").field_type) == "long"
    assert e.duck("s", "SELECT sum(b), sum(c) FROM t") == [(1.5, 7)]


TRANSFORMS = [
    ("identity", "region", IdentityTransform()),
    ("year", "ts", YearTransform()),
    ("month", "ts", MonthTransform()),
    ("day", "ts", DayTransform()),
    ("hour", "ts", HourTransform()),
    ("bucket[4]", "id", BucketTransform(4)),
    ("truncate[2]", "region", TruncateTransform(2)),
]


def test_every_partition_transform(env: Callable[..., Env]) -> None:
    e = env()
    start = datetime(2025, 12, 30, 22, tzinfo=timezone.utc)
    data = pa.table({
        "id": ids(0, 48),
        "region": [f"{r}-{i % 3}" for i, r in zip(range(48), ["eu", "us", "ap"] * 16)],
        "ts": pa.array([start + timedelta(hours=i * 7) for i in range(48)], pa.timestamp("us", tz="UTC")),
    })
    for hint, column, _ in TRANSFORMS:
        name = "p_" + hint.replace("[", "").replace("]", "")
        e.publish(e.file(data), name, columns={column: {"partition": True, "x-partition-transform": hint}})
    e.run()
    for hint, column, transform in TRANSFORMS:
        t = e.table("p_" + hint.replace("[", "").replace("]", ""))
        (field,) = t.spec().fields
        assert field.transform == transform and t.schema().find_field(field.source_id).name == column
        files = list(t.scan().plan_files())
        assert len(files) > 1  # data really split by partition
        assert t.scan().to_arrow().num_rows == 48
        assert e.duck(t.name()[-1], "SELECT count(*), sum(id) FROM t") == [(48, sum(range(48)))]


class LostAcks(SpoolSource):
    """Commits to Iceberg happen, offset acks are lost: a crash between commit and ack."""

    async def commit(self, offsets: Any) -> None:
        return None


def test_replay_after_crash_between_commit_and_ack_adds_nothing(env: Callable[..., Env]) -> None:
    e = env(max_batch_files=3)
    for i in range(7):
        e.publish(e.file({"id": ids(i * 10, 10)}), "x")
    for i in range(2):
        e.publish(e.file({"id": ids(500 + i, 1)}), "y", event_id=f"y{i}")
    first = e.run(LostAcks(SpoolQueue(e.settings.spool_file)))
    assert first.rows == 72 and e.queue.depth() == 9  # nothing acked
    again = e.run()
    assert (again.rows, again.snapshots, again.duplicates) == (0, 0, 9)
    assert e.queue.depth() == 0
    assert len(e.rows("x")) == 70 and len(e.rows("y")) == 2
    assert snapshot_count(e.table("x")) == 3


def test_bad_input_is_set_aside_with_reasons_and_the_rest_commits(env: Callable[..., Env]) -> None:
    e = env()
    good_a = e.file({"id": ids(0, 5)})
    e.publish(good_a, "a")
    e.queue.put_many([b"{not json", b'{"location": "x.parquet"}', b'{"table": "a", "location": "y", "rows": "many"}'])
    e.queue.put_many([b'{"table": "a", "location": "' + str(e.staging / "missing.parquet").encode() + b'"}'])
    trunc = e.staging / "trunc.parquet"
    trunc.write_bytes(good_a.read_bytes()[:50])
    e.queue.put_many([b'{"table": "a", "location": "' + str(trunc).encode() + b'"}'])
    e.publish(e.file({"id": ["not-a-number"]}), "a")
    e.queue.put_many([b'{"table": "a", "location": "file:///etc/passwd"}'])
    e.publish(e.file({"id": ids(100, 3)}), "b")
    e.publish(e.file({"id": ids(5, 5)}), "a")
    stats = e.run()
    assert stats.dead_letters == 7
    assert len(e.rows("a")) == 10 and len(e.rows("b")) == 3
    reasons = [d.reason for d in FolderDeadLetters(e.settings.deadletter_folder).read()]
    assert len(reasons) == 7
    expected = ["not JSON", "field 'table'", "field 'rows'", "missing.parquet: file not found",
                "trunc.parquet: not a readable parquet", "column 'id'", "outside the allowed prefixes"]
    for needle in expected:
        assert sum(needle in r for r in reasons) == 1, (needle, reasons)
    assert e.queue.depth() == 0
