"""Real dlt pipelines into the embedded catalog and into the real REST catalog (SeaweedFS),
read back with pyiceberg, DuckDB (offline ``iceberg_scan``) and ``pipeline.dataset()``.

Every scenario runs against both catalogs through the ``target`` fixture.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import dlt
import duckdb
import pytest
from dlt.common.destination import Destination
from dlt.destinations.impl.filesystem.iceberg_adapter import iceberg_partition
from pyiceberg.catalog import Catalog, load_catalog
from pyiceberg.table import Table
from pyiceberg.transforms import (
    BucketTransform,
    DayTransform,
    HourTransform,
    IdentityTransform,
    MonthTransform,
    TruncateTransform,
    YearTransform,
)

from ingester import iceberg, iceberg_adapter, iceberg_rest
from ingester.dlt.configuration import IcebergRestClientConfiguration
from ingester.dlt.package import load_package_events
from ingester.dlt.queue import ingester_queue
from ingester.dlt.sql_client import extension_directory, s3_secret_sql
from ingester.iceberg_layer import markers as mk
from ingester.publish import publish
from ingester.settings import RoutingSettings, Settings, StorageSettings
from ingester.wiring import build_engine, build_queue, build_stager
from tests.support import CatalogUnderTest

REPO = Path(__file__).resolve().parents[2]
DLT_COLUMNS = {"_dlt_load_id", "_dlt_id", "_dlt_parent_id", "_dlt_root_id", "_dlt_list_idx"}


@dataclass
class Target:
    """Where a test loads: the embedded catalog under ``home``, or the REST catalog."""

    kind: str
    namespace: str
    workdir: Path
    server: Any = None
    catalog_name: str = "ingester"
    """The SQL catalog's name: the daemon's (``iceberg()``), ``dlt_catalog`` for ``iceberg_rest``."""

    @property
    def home(self) -> Path:
        return self.workdir / "home"

    def rest_params(self) -> dict[str, Any]:
        s = self.server
        return {
            "catalog_uri": s.iceberg_uri, "warehouse": s.warehouse, "credential": f"{s.access_key}:{s.secret_key}",
            "s3_endpoint": s.s3_endpoint, "s3_access_key_id": s.access_key, "s3_secret_access_key": s.secret_key,
            "s3_region": s.region, "internal_table_prefix": "dlt",  # S3 Tables naming: no leading "_"
        }

    def destination(self, namespace: str | None = None, **kwargs: Any) -> Destination[Any, Any]:
        ns = namespace or self.namespace
        if self.kind == "sql":
            return iceberg(ingester_home=str(self.home), namespace=ns, **kwargs)
        return iceberg_rest(namespace=ns, **self.rest_params(), **kwargs)

    def pipeline(self, name: str, namespace: str | None = None, pipelines_dir: Path | None = None, **kwargs: Any) -> dlt.Pipeline:
        return dlt.pipeline(
            name, destination=self.destination(namespace, **kwargs),
            pipelines_dir=str(pipelines_dir or self.workdir / "pipelines"), dataset_name="ds",
        )

    def settings(self, namespace: str) -> Settings:
        """Daemon settings on the same catalog (queue-fed loads): staging in a local folder for
        the embedded catalog, on S3 for the REST catalog."""
        routing = RoutingSettings(namespace=namespace)
        if self.kind == "sql":
            return Settings(home=self.home, routing=routing)
        catalog = IcebergRestClientConfiguration(**self.rest_params()).catalog_settings()
        staging = StorageSettings.model_validate({"staging": f"s3://warehouse/staging-{namespace}"})
        return Settings(home=self.home, catalog=catalog, routing=routing, storage=staging)

    def catalog(self) -> Catalog:
        if self.kind == "sql":
            return load_catalog(self.catalog_name, type="sql", uri=f"sqlite:///{self.home / 'catalog.db'}",
                                warehouse=(self.home / "warehouse").as_uri())
        return self.server.catalog()

    def table(self, name: str, namespace: str | None = None) -> Table:
        return self.catalog().load_table((namespace or self.namespace, name))

    def rows(self, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """pyiceberg's reading."""
        return self.table(name, namespace).scan().to_arrow().to_pylist()

    def duck_rows(self, name: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """DuckDB's reading (offline extensions, ``iceberg_scan`` of the current metadata)."""
        table = self.table(name, namespace)
        ext = extension_directory()
        con = duckdb.connect(config={"extension_directory": ext, "autoinstall_known_extensions": False} if ext else {})
        con.execute("LOAD httpfs; LOAD avro; LOAD iceberg")
        if self.kind == "rest":
            con.execute(s3_secret_sql("s", self.server.warehouse, {k: str(v) for k, v in table.io.properties.items()}) or "")
        location = table.metadata_location.removeprefix("file://")
        return con.execute(f"SELECT * FROM iceberg_scan('{location}')").fetch_arrow_table().to_pylist()


@pytest.fixture
def target(any_catalog: CatalogUnderTest, tmp_path: Path) -> Target:
    return Target(any_catalog.kind, f"t_{uuid.uuid4().hex[:10]}", tmp_path, any_catalog.server)


@pytest.fixture
def small_files(monkeypatch: pytest.MonkeyPatch) -> None:
    """Several parquet files per table per load."""
    monkeypatch.setenv("NORMALIZE__DATA_WRITER__FILE_MAX_ITEMS", "25")


def data_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Rows without dlt's bookkeeping columns, sorted: comparable across loads and readers."""
    clean = [{k: v for k, v in r.items() if k not in DLT_COLUMNS} for r in rows]
    return sorted(clean, key=lambda r: json.dumps(r, sort_keys=True, default=str))


def summary(table: Table, index: int) -> dict[str, str]:
    snap = table.metadata.snapshots[index]
    assert snap.summary is not None
    return snap.summary.additional_properties


def snapshot_load_ids(table: Table) -> list[list[str]]:
    return [json.loads(summary(table, i)[mk.LOAD_IDS]) for i in range(len(table.metadata.snapshots))]


def relation_rows(relation: Any) -> list[dict[str, Any]]:
    return list(relation.arrow().to_pylist())


# ---------------------------------------------------------------------- loads
@dlt.resource(name="events", write_disposition="append")
def events(start: int, n: int) -> Iterator[dict[str, Any]]:
    for i in range(start, start + n):
        yield {"id": i, "kind": ["view", "click", "buy"][i % 3], "amount": i * 1.5}


@dlt.resource(
    name="customers", write_disposition="merge", primary_key="id",
    columns={"deleted": {"data_type": "bool", "hard_delete": True}},
)
def customers(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from rows


@dlt.resource(name="snapshot", write_disposition="replace")
def snapshot(n: int, tag: str) -> Iterator[dict[str, Any]]:
    yield from ({"k": k, "tag": tag} for k in range(n))


def test_append_replace_merge_exact_rows(target: Target, small_files: None) -> None:
    p = target.pipeline("dispositions")
    first = p.run([
        events(0, 100),
        customers([{"id": i, "name": f"c{i}", "tier": "basic"} for i in range(1, 6)]),
        snapshot(30, "first"),
    ])
    second = p.run([
        events(100, 60),
        customers([
            {"id": 2, "name": "c2", "tier": "gold"},      # update
            {"id": 3, "deleted": True},                    # hard delete
            {"id": 5, "name": "c5 renamed", "tier": "basic"},
            {"id": 6, "name": "c6", "tier": "new"},        # inserts
            {"id": 7, "name": "c7", "tier": "new"},
        ]),
        snapshot(10, "second"),
    ])
    loads = [first.loads_ids[0], second.loads_ids[0]]

    expected_events = [{"id": i, "kind": ["view", "click", "buy"][i % 3], "amount": i * 1.5} for i in range(160)]
    expected_customers = [
        {"id": 1, "name": "c1", "tier": "basic", "deleted": None},
        {"id": 2, "name": "c2", "tier": "gold", "deleted": None},
        {"id": 4, "name": "c4", "tier": "basic", "deleted": None},
        {"id": 5, "name": "c5 renamed", "tier": "basic", "deleted": None},
        {"id": 6, "name": "c6", "tier": "new", "deleted": None},
        {"id": 7, "name": "c7", "tier": "new", "deleted": None},
    ]
    expected_snapshot = [{"k": k, "tag": "second"} for k in range(10)]
    dataset = p.dataset()
    for name, expected in (("events", expected_events), ("customers", expected_customers), ("snapshot", expected_snapshot)):
        assert data_rows(target.rows(name)) == data_rows(expected), f"pyiceberg: {name}"
        assert data_rows(target.duck_rows(name)) == data_rows(expected), f"duckdb: {name}"
        assert data_rows(relation_rows(dataset.table(name))) == data_rows(expected), f"dataset: {name}"
        table = target.table(name)
        assert snapshot_load_ids(table) == [[loads[0]], [loads[1]]], f"one snapshot per load: {name}"
    # several files per table per load went into that one snapshot
    assert len(json.loads(summary(target.table("events"), 0)[mk.EVENT_IDS])) == 4
    # replace kept the table's history: the first load is still readable
    replaced = target.table("snapshot")
    old = replaced.scan(snapshot_id=replaced.metadata.snapshots[0].snapshot_id).to_arrow().to_pylist()
    assert data_rows(old) == data_rows([{"k": k, "tag": "first"} for k in range(30)])
    # dlt's own tables, under names every catalog accepts
    names = {ident[-1] for ident in target.catalog().list_tables(target.namespace)}
    assert {"dlt_loads", "dlt_version", "dlt_pipeline_state", "events", "customers", "snapshot"} <= names
    assert not any(n.startswith("_") for n in names)
    assert sorted(r["load_id"] for r in relation_rows(dataset._dlt_loads)) == sorted(loads)
    open_table = dataset.open_table_client.load_open_table("iceberg", "events")
    assert open_table.metadata_location == target.table("events").metadata_location


def test_partition_specs_per_transform(target: Target) -> None:
    base = datetime(2024, 1, 1, tzinfo=timezone.utc)

    @dlt.resource(name="clicks")
    def clicks() -> Iterator[dict[str, Any]]:
        for i in range(40):
            yield {"id": i, "ts": base + timedelta(hours=13 * i), "region": f"r{i % 3}", "user_id": i,
                   "path": f"/p/{i}", "seen": base + timedelta(minutes=37 * i)}

    day_hints: Any = {
        "day": {"data_type": "date", "partition": True, "x-partition-transform": "year"},
        "at": {"data_type": "timestamp", "partition": True},  # no transform: month
    }

    @dlt.resource(name="days", columns=day_hints)
    def days() -> Iterator[dict[str, Any]]:
        for i in range(30):
            yield {"id": i, "day": date(2020, 1, 1) + timedelta(days=50 * i), "at": base + timedelta(days=11 * i)}

    resource = iceberg_adapter(
        clicks(),
        partition=[("ts", "day"), "region", ("user_id", "bucket[4]"), ("path", "truncate[3]"), iceberg_partition.hour("seen")],
    )
    p = target.pipeline("partitions")
    p.run([resource, days()])

    def transforms(name: str) -> dict[str, Any]:
        table = target.table(name)
        schema = table.schema()
        return {str(schema.find_column_name(f.source_id)): f.transform for f in table.spec().fields}

    assert transforms("clicks") == {
        "ts": DayTransform(), "region": IdentityTransform(), "user_id": BucketTransform(4),
        "path": TruncateTransform(3), "seen": HourTransform(),
    }
    assert transforms("days") == {"day": YearTransform(), "at": MonthTransform()}
    assert sorted(r["id"] for r in target.rows("clicks")) == list(range(40))
    assert sorted(r["id"] for r in target.duck_rows("clicks")) == list(range(40))
    assert sorted(r["id"] for r in target.duck_rows("days")) == list(range(30))


def test_column_added_in_a_later_run(target: Target) -> None:
    @dlt.resource(name="things", write_disposition="append")
    def things(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        yield from rows

    p = target.pipeline("evolution")
    p.run(things([{"id": 1, "a": "x"}, {"id": 2, "a": "y"}]))
    p.run(things([{"id": 3, "a": "z", "b": 3.5, "c": {"deep": True}}]))
    expected = [
        {"id": 1, "a": "x", "b": None, "c__deep": None},
        {"id": 2, "a": "y", "b": None, "c__deep": None},
        {"id": 3, "a": "z", "b": 3.5, "c__deep": True},
    ]
    assert {"b", "c__deep"} <= set(target.table("things").schema().column_names)
    assert data_rows(target.rows("things")) == expected
    assert data_rows(target.duck_rows("things")) == expected
    assert data_rows(relation_rows(p.dataset().things)) == expected


def test_nested_tables(target: Target) -> None:
    @dlt.resource(name="orders", write_disposition="merge", primary_key="order_id")
    def orders(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        yield from rows

    p = target.pipeline("nested")
    p.run(orders([
        {"order_id": 1, "items": [{"sku": "a", "qty": 1}], "tags": ["x"]},
        {"order_id": 2, "items": [{"sku": "b", "qty": 2}, {"sku": "c", "qty": 3}], "tags": ["y", "z"]},
        {"order_id": 3, "items": [{"sku": "d", "qty": 4}], "tags": []},
    ]))
    p.run(orders([
        {"order_id": 1, "items": [{"sku": "a", "qty": 10}], "tags": ["x"]},
        {"order_id": 2, "items": [{"sku": "b", "qty": 20}], "tags": ["y"]},
        {"order_id": 3, "items": [{"sku": "d", "qty": 4}, {"sku": "e", "qty": 5}], "tags": ["new"]},
    ]))
    by_id = {r["_dlt_id"]: r["order_id"] for r in target.rows("orders")}
    assert sorted(by_id.values()) == [1, 2, 3]
    for read in (target.rows, target.duck_rows):
        items = sorted((by_id[r["_dlt_parent_id"]], r["sku"], r["qty"]) for r in read("orders__items"))
        assert items == [(1, "a", 10), (2, "b", 20), (3, "d", 4), (3, "e", 5)]
        tags = sorted((by_id[r["_dlt_root_id"]], r["value"]) for r in read("orders__tags"))
        assert tags == [(1, "x"), (2, "y"), (3, "new")]
    for name in ("orders", "orders__items", "orders__tags"):
        assert len(target.table(name).metadata.snapshots) == 2
    # a parent updated without children, and a load with no nested rows at all: old children go
    p.run(orders([{"order_id": 2, "items": [], "tags": ["y2"]}]))
    p.run(orders([{"order_id": 3, "items": [], "tags": []}]))
    by_id = {r["_dlt_id"]: r["order_id"] for r in target.rows("orders")}  # row ids are per load (delete-insert)
    for read in (target.rows, target.duck_rows):
        items = sorted((by_id[r["_dlt_parent_id"]], r["sku"], r["qty"]) for r in read("orders__items"))
        assert items == [(1, "a", 10)]
        tags = sorted((by_id[r["_dlt_root_id"]], r["value"]) for r in read("orders__tags"))
        assert tags == [(1, "x"), (2, "y2")]
    assert len(target.table("orders__items").metadata.snapshots) == 4


@dlt.resource(name="ticks", write_disposition="append")
def ticks(upto: int, cursor: Any = dlt.sources.incremental("t")) -> Iterator[list[dict[str, Any]]]:
    yield [{"t": t, "v": f"tick {t}"} for t in range(upto)]


def test_state_restored_by_sync_destination_and_incremental_across_runs(target: Target) -> None:
    p = target.pipeline("incremental")
    p.run(ticks(10))
    # a fresh machine: an empty pipelines folder
    fresh = target.pipeline("incremental", pipelines_dir=target.workdir / "fresh")
    fresh.sync_destination()
    assert "ticks" in fresh.default_schema.tables
    assert fresh.state["sources"] == p.state["sources"]
    fresh.run(ticks(15))
    assert sorted(r["t"] for r in target.rows("ticks")) == list(range(15))
    assert sorted(r["t"] for r in relation_rows(fresh.dataset().ticks)) == list(range(15))


def test_two_pipelines_concurrently_get_their_own_rows(target: Target, small_files: None) -> None:
    errors: list[BaseException] = []

    def run(name: str, start: int) -> None:
        try:
            target.pipeline(name, namespace=f"{target.namespace}_{name}").run(events(start, 300))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("a", 0), ("b", 10_000))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for name, start in (("a", 0), ("b", 10_000)):
        ids = [r["id"] for r in target.rows("events", f"{target.namespace}_{name}")]
        assert sorted(ids) == list(range(start, start + 300))
        assert len(target.table("events", f"{target.namespace}_{name}").metadata.snapshots) == 1


# ----------------------------------------------------------- queue-fed loads
@dlt.source(name="shop")
def shop() -> Any:
    @dlt.resource(name="orders", write_disposition="append")
    def order_rows() -> Iterator[dict[str, Any]]:
        for i in range(120):
            yield {"order_id": i, "total": i * 2.5, "items": [{"sku": f"s{i % 7}", "qty": i % 4 + 1}]}

    @dlt.resource(name="visits", write_disposition="append")
    def visit_rows() -> Iterator[dict[str, Any]]:
        yield from ({"visit_id": i, "path": f"/v/{i}"} for i in range(80))

    return order_rows, visit_rows


def _run_daemon(settings: Settings) -> Any:
    async def main() -> Any:
        engine = build_engine(settings)
        try:
            return await engine.run(exit_when_idle=True)
        finally:
            await engine.source.aclose()

    return anyio.run(main)


def test_queue_fed_load_lands_the_same_rows_and_publishing_twice_adds_nothing(target: Target, small_files: None) -> None:
    direct_ns, queued_ns = f"{target.namespace}_direct", f"{target.namespace}_queued"
    target.pipeline("direct", namespace=direct_ns).run(shop())
    settings = target.settings(queued_ns)
    queued = dlt.pipeline("queued", destination=ingester_queue(settings), pipelines_dir=str(target.workdir / "pipelines"), dataset_name="ds")
    info = queued.run(shop())
    assert _run_daemon(settings).events > 0
    tables = ("orders", "orders__items", "visits")
    for name in tables:
        assert data_rows(target.rows(name, queued_ns)) == data_rows(target.rows(name, direct_ns)), name
    before = {name: len(target.table(name, queued_ns).metadata.snapshots) for name in tables}

    package = Path(info.load_packages[0].package_path)
    queue = build_queue(settings)
    try:
        assert publish(load_package_events(package), build_stager(settings), queue) > 0
    finally:
        queue.close()
    stats = _run_daemon(settings)
    assert stats.duplicates == stats.events > 0 and stats.snapshots == 0
    for name in tables:
        assert len(target.table(name, queued_ns).metadata.snapshots) == before[name]
        assert data_rows(target.rows(name, queued_ns)) == data_rows(target.rows(name, direct_ns)), name


# ------------------------------------------------------------------ examples
def test_examples_run_unchanged_apart_from_the_import_line(target: Target) -> None:
    target = replace(target, catalog_name="dlt_catalog")  # the examples use iceberg_rest
    env = {**os.environ, "INGESTER_HOME": str(target.home), "DLT_DATA_DIR": str(target.workdir / "dlt"),
           "EXAMPLE_NAMESPACE": target.namespace}
    if target.kind == "rest":
        params = target.rest_params()
        env |= {"CATALOG_URI": params["catalog_uri"], "CATALOG_WAREHOUSE": params["warehouse"],
                "CATALOG_CREDENTIAL": params["credential"], "S3_ENDPOINT": params["s3_endpoint"],
                "S3_ACCESS_KEY_ID": params["s3_access_key_id"], "S3_SECRET_ACCESS_KEY": params["s3_secret_access_key"],
                "S3_REGION": params["s3_region"],
                # the examples' code stays as it is: dlt config sets what S3 Tables naming needs
                "DESTINATION__ICEBERG_REST__INTERNAL_TABLE_PREFIX": params["internal_table_prefix"]}
    outputs = {}
    for example in ("incremental_load.py", "merge_load.py"):
        source = (REPO / "examples" / example).read_text()
        assert "from ingester import iceberg_rest\n" in source and "dlt_iceberg" not in source
        proc = subprocess.run([sys.executable, str(REPO / "examples" / example)], env=env, cwd=target.workdir,
                              capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        outputs[example] = proc.stdout
    assert "Event IDs: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]" in outputs["incremental_load.py"]
    assert "After merge: 7 customers" in outputs["merge_load.py"]
    assert sorted(r["event_id"] for r in target.rows("events")) == list(range(1, 11))
    customers_rows = {r["customer_id"]: (r["email"], r["status"]) for r in target.rows("customers")}
    assert customers_rows[2] == ("ben.ortiz@example.com", "inactive") and customers_rows[3][1] == "active"
    assert sorted(customers_rows) == [1, 2, 3, 4, 5, 6, 7]
    for name in ("events", "customers"):
        assert len(target.table(name).metadata.snapshots) == 2
    if target.kind == "sql":  # `ingester tables` on dlt-iceberg's catalog name lists what the examples loaded
        cli = str(Path(sys.executable).parent / "ingester")
        tables = subprocess.run([cli, "tables", "--json"], env={**env, "INGESTER_CATALOG__NAME": "dlt_catalog"},
                                cwd=target.workdir, capture_output=True, text=True, timeout=120)
        listed = {t["name"]: t["rows"] for t in json.loads(tables.stdout)}
        assert listed[f"{target.namespace}.events"] == 10 and listed[f"{target.namespace}.customers"] == 7
