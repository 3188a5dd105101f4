"""The table layout follows the hints, on each catalog: a table made with ``day(ts)`` and then
loaded with hints for ``bucket[8](id)`` evolves to spec 1; old files keep spec 0 and stay
readable, pyiceberg and DuckDB read the same rows, and a merge across both specs replaces rows
in files of each."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.table.sorting import SortDirection
from pyiceberg.transforms import BucketTransform

from ingester.catalog import open_catalog
from ingester.engine import EngineStats
from ingester.maintenance.maintainer import TableMaintainer
from ingester.maintenance.planning import MaintenancePolicy
from ingester.settings import Settings
from ingester.sources.spool import SpoolQueue
from ingester.wiring import build_engine
from tests.support import CatalogUnderTest, duckdb_rows, event_for, write_parquet

START = datetime(2026, 1, 1)
DAY = {"ts": {"x-partition": True, "x-partition-transform": "day"}}
BUCKET = {"id": {"x-partition": True, "x-partition-transform": "bucket[8]"}}


def run(settings: Settings) -> EngineStats:
    return anyio.run(lambda: build_engine(settings).run(exit_when_idle=True))


def rows(ids: range, value: str) -> pa.Table:
    return pa.table({"id": pa.array(ids, pa.int64()), "ts": pa.array([START + timedelta(hours=5 * i) for i in ids], pa.timestamp("us")),
                     "v": [value] * len(ids)})


def publish(settings: Settings, data: pa.Table, columns: dict[str, Any], **kw: Any) -> None:
    path = write_parquet(settings.home_dir / "staging", data)
    SpoolQueue(settings.spool_file).put_many([event_for(path, "events", columns=columns, **kw)])
    run(settings)


def test_new_partition_hints_evolve_the_spec_and_old_files_keep_theirs(any_catalog: CatalogUnderTest, tmp_path: Path) -> None:
    ns = f"p{uuid.uuid4().hex[:8]}"
    settings = Settings(home=tmp_path / "home", catalog=any_catalog.settings, routing={"namespace": ns})
    publish(settings, rows(range(0, 20), "old"), DAY)
    table = open_catalog(settings.catalog, settings.home_dir).load_table((ns, "events"))
    assert table.spec().spec_id == 0 and [str(f.transform) for f in table.spec().fields] == ["day"]

    publish(settings, rows(range(20, 40), "new"), BUCKET)
    table.refresh()
    spec = table.spec()
    assert spec.spec_id == 1 and [(f.name, f.transform) for f in spec.fields] == [("id_bucket_8", BucketTransform(8))]
    files = table.inspect.files().to_pylist()
    assert {f["spec_id"] for f in files} == {0, 1}
    assert sum(f["record_count"] for f in files if f["spec_id"] == 0) == 20
    assert sum(f["record_count"] for f in files if f["spec_id"] == 1) == 20

    publish(settings, rows(range(20, 40), "again"), BUCKET)  # the same hints: no new spec
    table.refresh()
    assert table.spec().spec_id == 1 and len(table.metadata.partition_specs) == 2

    # a merge replacing rows in files of both specs
    publish(settings, rows(range(15, 25), "merged"), BUCKET, write_disposition="merge", primary_key=["id"])
    table.refresh()
    got = sorted((r["id"], r["v"]) for r in table.scan().to_arrow().to_pylist())
    want = sorted([*((i, "old") for i in range(15)), *((i, "merged") for i in range(15, 25)),
                   *((i, "new") for i in range(20, 40)), *((i, "again") for i in range(20, 40))])
    want = [w for w in want if not (25 > w[0] >= 20 and w[1] in ("new", "again"))]
    assert got == want
    duck = duckdb_rows(table, "SELECT id, v FROM t ORDER BY id, v", any_catalog.s3)
    assert duck == got
    day_rows = table.scan(row_filter="ts < '2026-01-02T00:00:00'").to_arrow()  # prunes by the old spec
    assert sorted(day_rows.column("id").to_pylist()) == [i for i in range(40) if START + timedelta(hours=5 * i) < START + timedelta(days=1)]

    publish(settings, rows(range(40, 42), "plain"), {})  # no hints: the spec stays
    table.refresh()
    assert table.spec().spec_id == 1 and len(table.metadata.partition_specs) == 2
    assert len(table.scan().to_arrow()) == len(got) + 2


def _file_ids(table: Any, path: str) -> list[int]:
    with table.io.new_input(path).open() as f:
        return pq.read_table(f).column("id").to_pylist()


def test_sort_hints_set_the_sort_order_and_new_files_are_sorted_and_carry_its_id(
    any_catalog: CatalogUnderTest, tmp_path: Path
) -> None:
    ns = f"s{uuid.uuid4().hex[:8]}"
    settings = Settings(home=tmp_path / "home", catalog=any_catalog.settings, routing={"namespace": ns})
    shuffled = [(i * 37) % 100 for i in range(100)]
    publish(settings, pa.table({"id": pa.array(shuffled[:50], pa.int64()), "v": [f"a{i}" for i in shuffled[:50]]}), {})
    table = open_catalog(settings.catalog, settings.home_dir).load_table((ns, "events"))
    assert table.sort_order().is_unsorted
    unsorted_files = {f["file_path"] for f in table.inspect.files().to_pylist()}

    for part in (shuffled[50:75], shuffled[75:]):
        publish(settings, pa.table({"id": pa.array(part, pa.int64()), "v": [f"b{i}" for i in part]}), {"id": {"x-sort": "desc"}})
    table.refresh()
    order = table.sort_order()
    assert order.order_id == 1 and [(f.source_id, f.direction) for f in order.fields] == [
        (table.schema().find_field("id").field_id, SortDirection.DESC)]
    files = [f for f in table.inspect.files().to_pylist() if f["file_path"] not in unsorted_files]
    assert len(files) == 2
    for f in files:
        ids = _file_ids(table, f["file_path"])
        assert len(ids) == 25 and ids == sorted(ids, reverse=True) and f["sort_order_id"] == 1
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == list(range(100))

    # compaction writes in the sort order too, the old unsorted file with the rest
    maintainer = TableMaintainer(MaintenancePolicy(expire_older_than_s=0, retain_last=1, target_file_size_bytes=10**8,
                                                   min_input_files=2))
    assert maintainer.compact(table) is not None
    table.refresh()
    (compacted,) = table.inspect.files().to_pylist()
    assert compacted["sort_order_id"] == 1 and _file_ids(table, compacted["file_path"]) == list(range(99, -1, -1))
    assert duckdb_rows(table, "SELECT count(*), count(DISTINCT id) FROM t", any_catalog.s3) == [(100, 100)]


def test_a_sort_order_from_settings_acts_wins_over_hints_and_follows_a_change(
    any_catalog: CatalogUnderTest, tmp_path: Path
) -> None:
    ns = f"o{uuid.uuid4().hex[:8]}"

    def settings(order: dict[str, list[str]]) -> Settings:
        return Settings(home=tmp_path / "home", catalog=any_catalog.settings, routing={"namespace": ns},
                        commit={"sort_orders": order})

    shuffled = [(i * 37) % 60 for i in range(60)]
    data = lambda ids: pa.table({"id": pa.array(ids, pa.int64()), "v": [f"v{i % 3}" for i in ids]})  # noqa: E731
    first_settings = settings({"*": ["id desc"]})
    publish(first_settings, data(shuffled[:30]), {"v": {"x-sort": "asc"}})  # the setting wins over the hint
    table = open_catalog(first_settings.catalog, first_settings.home_dir).load_table((ns, "events"))
    id_field, v_field = (table.schema().find_field(n).field_id for n in ("id", "v"))
    assert [(f.source_id, f.direction) for f in table.sort_order().fields] == [(id_field, SortDirection.DESC)]
    (first,) = table.inspect.files().to_pylist()
    assert first["sort_order_id"] == 1 and _file_ids(table, first["file_path"]) == sorted(shuffled[:30], reverse=True)

    publish(settings({f"{ns}.events": ["v", "id asc"], "*": ["id desc"]}), data(shuffled[30:]), {})  # ns.table wins over *
    table.refresh()
    assert [(f.source_id, f.direction) for f in table.sort_order().fields] == [(v_field, SortDirection.ASC), (id_field, SortDirection.ASC)]
    (second,) = [f for f in table.inspect.files().to_pylist() if f["file_path"] != first["file_path"]]
    assert second["sort_order_id"] == table.sort_order().order_id == 2
    with table.io.new_input(second["file_path"]).open() as f:
        got = [(r["v"], r["id"]) for r in pq.read_table(f).to_pylist()]
    assert got == sorted((f"v{i % 3}", i) for i in shuffled[30:])
    assert duckdb_rows(table, "SELECT count(*), count(DISTINCT id) FROM t", any_catalog.s3) == [(60, 60)]


def _codecs(table: Any, path: str) -> set[str]:
    with table.io.new_input(path).open() as f:
        meta = pq.ParquetFile(f).metadata
        return {meta.row_group(g).column(c).compression for g in range(meta.num_row_groups) for c in range(meta.num_columns)}


def test_table_properties_from_settings_act_on_create_and_when_changed(any_catalog: CatalogUnderTest, tmp_path: Path) -> None:
    ns = f"t{uuid.uuid4().hex[:8]}"
    props = {"write.parquet.compression-codec": "gzip", "write.target-file-size-bytes": "2000",
             "write.metadata.previous-versions-max": "2", "write.metadata.delete-after-commit.enabled": "true"}

    def settings(**table_properties: dict[str, str]) -> Settings:
        return Settings(home=tmp_path / "home", catalog=any_catalog.settings, routing={"namespace": ns},
                        commit={"zero_copy": False, "table_properties": table_properties})

    first = settings(**{f"{ns}.events": props, "*": {"write.parquet.compression-codec": "snappy"}})
    part = {"v": {"x-partition": True, "x-partition-transform": "identity"}}
    data = pa.table({"id": pa.array(range(2000), pa.int64()), "v": ["same"] * 2000})
    publish(first, data, part)
    table = open_catalog(first.catalog, first.home_dir).load_table((ns, "events"))
    assert {k: table.properties.get(k) for k in props} == props  # ns.table wins over *
    files = table.inspect.files().to_pylist()
    assert len(files) > 2  # one partition, split at the 2000-byte target file size
    assert all(_codecs(table, f["file_path"]) == {"GZIP"} for f in files)
    for i in range(4):
        publish(first, pa.table({"id": pa.array([i], pa.int64()), "v": ["same"]}), part)
    table.refresh()
    assert len(table.metadata.metadata_log) <= 2  # previous-versions-max
    if any_catalog.kind == "sql":  # delete-after-commit: the metadata files left out of the log are gone
        folder = Path(table.metadata_location.removeprefix("file://")).parent
        assert len(list(folder.glob("*.metadata.json"))) <= 3

    changed = settings(**{"events": {"write.parquet.compression-codec": "zstd"}})
    publish(changed, pa.table({"id": pa.array([99], pa.int64()), "v": ["same"]}), part)
    table.refresh()
    assert table.properties["write.parquet.compression-codec"] == "zstd"
    newest_file = [f for f in table.inspect.files().to_pylist() if f["lower_bounds"] and 99 in
                   [int.from_bytes(v, "little") for v in dict(f["lower_bounds"]).values() if len(v) == 8]]
    assert len(newest_file) == 1 and _codecs(table, newest_file[0]["file_path"]) == {"ZSTD"}
