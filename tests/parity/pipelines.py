"""The parity cases: dlt pipeline code run unchanged on both destinations.

    python tests/parity/pipelines.py ingester|dlt_iceberg REQUEST.json OUT.json [CASE ...]

The only difference between the two runs is the import line below (``SIDE``): the same file
runs in ingester's venv and in dlt-iceberg 0.6.4's own venv (``reference_venv``). Each case
runs its pipelines and returns what a user would look at: every table of its namespace as
this side's pyiceberg reads it (name, schema, partition spec, rows, snapshots, delete files,
location), dlt's state restored into a fresh pipelines folder, and the case's own findings.
A case that raises is recorded (error type and message), not fatal. Standard library, dlt,
pyarrow and pyiceberg only (they exist on both sides, in different versions).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
import sys
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import date, datetime, timedelta, timezone
from datetime import time as dtime
from decimal import Decimal
from pathlib import Path
from typing import Any

SIDE = sys.argv[1] if len(sys.argv) > 1 else "ingester"
os.environ.setdefault("RUNTIME__LOG_LEVEL", "ERROR")
import dlt  # noqa: E402

if SIDE == "dlt_iceberg":
    from dlt_iceberg import PartitionTransform, iceberg_adapter, iceberg_partition, iceberg_rest  # noqa: F401
else:
    from ingester import PartitionTransform, iceberg_adapter, iceberg_partition, iceberg_rest  # noqa: F401

from pyiceberg.catalog import load_catalog  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from compare import jsonable  # noqa: E402  # standard library only: importable on both sides

BASE = datetime(2024, 1, 1, tzinfo=timezone.utc)


# ------------------------------------------------------------------ harness
class Case:
    """One case's context: where it loads (its own SQLite catalog, or its own namespace on
    the REST catalog) and how to look at the result."""

    def __init__(self, name: str, request: dict[str, Any]) -> None:
        self.name = name
        self.kind = request["kind"]
        self.work = Path(request["workdir"]) / name
        if not request.get("keep"):
            shutil.rmtree(self.work, ignore_errors=True)
        self.work.mkdir(parents=True, exist_ok=True)
        self.runs: list[int] = request.get("runs", [1])
        self.rest = request.get("rest") or {}
        self.namespace = "default" if self.kind == "sql" else f"c_{name}"
        self.findings: dict[str, Any] = {}

    # where: the same arguments a dlt-iceberg user passes
    def params(self, **overrides: Any) -> dict[str, Any]:
        """The destination's arguments: where this case loads, then ``overrides`` (None in
        ``overrides`` passes None; a base value that is None is left out)."""
        if self.kind == "sql":
            (self.work / "warehouse").mkdir(exist_ok=True)
            base: dict[str, Any] = {"catalog_uri": f"sqlite:///{self.work / 'catalog.db'}",
                                    "warehouse": (self.work / "warehouse").as_uri()}
        else:
            r = self.rest
            base = {"catalog_uri": r["uri"], "warehouse": r["warehouse"], "namespace": self.namespace,
                    "credential": f"{r['key']}:{r['secret']}", "oauth2_server_uri": r["token_endpoint"],
                    "s3_endpoint": r["s3_endpoint"], "s3_access_key_id": r["key"], "s3_secret_access_key": r["secret"],
                    "s3_region": r["region"], "internal_table_prefix": "dlt"}  # S3 Tables: no leading "_"
        return {**{k: v for k, v in base.items() if v is not None}, **overrides}

    def pipeline(self, name: str = "p", folder: str = "pipelines", dataset_name: str | None = None, **params: Any) -> Any:
        return dlt.pipeline(pipeline_name=f"{self.name}_{name}", destination=iceberg_rest(**self.params(**params)),
                            pipelines_dir=str(self.work / folder), dataset_name=dataset_name)

    @property
    def prefix(self) -> str:
        return "_dlt" if self.kind == "sql" else "dlt"

    # how to look: this side's pyiceberg
    def catalog(self) -> Any:
        if self.kind == "sql":
            return load_catalog("dlt_catalog", type="sql", uri=f"sqlite:///{self.work / 'catalog.db'}",
                                warehouse=(self.work / "warehouse").as_uri())
        r = self.rest
        return load_catalog("reader", type="rest", uri=r["uri"], warehouse=r["warehouse"],
                            credential=f"{r['key']}:{r['secret']}", **{
                                "oauth2-server-uri": r["token_endpoint"], "s3.endpoint": r["s3_endpoint"],
                                "s3.access-key-id": r["key"], "s3.secret-access-key": r["secret"],
                                "s3.region": r["region"], "s3.path-style-access": "true"})

    def observe(self, namespace: str | None = None, key: str = "tables", prefix: str | None = None) -> None:
        self.findings[key] = observe_namespace(self.catalog(), namespace or self.namespace, prefix or self.prefix)
        if self.kind == "sql" and (self.work / "catalog.db").exists():
            with sqlite3.connect(self.work / "catalog.db") as db:
                self.findings["sql_catalog_entries"] = sorted(
                    db.execute("SELECT catalog_name, table_namespace, table_name FROM iceberg_tables").fetchall())

    def restored_state(self, name: str = "p", key: str = "restored", arguments: dict[str, Any] | None = None, **params: Any) -> None:
        """What a fresh machine gets from the destination (``sync_destination``); the
        destination takes ``arguments`` when given, else ``params()`` with ``params``."""
        fresh = dlt.pipeline(pipeline_name=f"{self.name}_{name}", destination=iceberg_rest(**(arguments or self.params(**params))),
                             pipelines_dir=str(self.work / f"fresh-{key}"))
        fresh.sync_destination()
        self.findings[key] = {"sources": jsonable(fresh.state.get("sources", {})),
                              "tables": sorted(t for t in fresh.default_schema.tables if not t.startswith("_dlt"))}


def _delete_files(table: Any) -> dict[str, int]:
    """Live files of the current snapshot by content: data, position deletes, equality deletes."""
    counts = {"data": 0, "position_deletes": 0, "equality_deletes": 0}
    snap = table.current_snapshot()
    if snap is None:
        return counts
    for manifest in snap.manifests(table.io):
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True):
            kind = int(entry.data_file.content)
            counts[("data", "position_deletes", "equality_deletes")[kind]] += 1
    return counts


def observe_table(table: Any, system: str | None) -> dict[str, Any]:
    schema = table.schema()
    out: dict[str, Any] = {
        "system": system,
        "schema": [[f.name, str(f.field_type), bool(f.required), f.doc] for f in schema.fields],
        "partition": [[schema.find_column_name(f.source_id), str(f.transform), f.name] for f in table.spec().fields],
        "snapshots": len(table.metadata.snapshots),
        "files": _delete_files(table),
        "location": table.location(),
        "metadata_location": table.metadata_location,
        "uuid": str(table.metadata.table_uuid),
    }
    try:
        out["rows"] = jsonable(table.scan().to_arrow().to_pylist())
    except Exception as exc:  # noqa: BLE001 - upstream pyiceberg and equality deletes
        out["rows"], out["rows_error"] = None, f"{type(exc).__name__}: {exc}"
    return out


def observe_namespace(catalog: Any, namespace: str, prefix: str) -> dict[str, Any]:
    try:
        idents = catalog.list_tables(namespace)
    except Exception as exc:  # noqa: BLE001 - no namespace
        return {"_error": f"{type(exc).__name__}: {exc}"}
    system = {f"{prefix.rstrip('_')}_{kind}": kind for kind in ("loads", "version", "pipeline_state")}
    return {ident[-1]: observe_table(catalog.load_table(ident), system.get(ident[-1])) for ident in sorted(idents)}


@contextmanager
def env(**values: str) -> Iterator[None]:
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def error_of(fn: Callable[[], Any]) -> str | None:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - the case records it
        return step_error(exc)
    return None


def step_error(exc: BaseException) -> str:
    """A pipeline error as the user sees it: dlt's step wrapper dropped, then the chain of
    causes, outermost first."""
    chain: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(chain) < 6:
        inner = getattr(current, "exception", None)
        if isinstance(inner, BaseException):  # PipelineStepFailed
            current = inner
            continue
        chain.append(f"{type(current).__name__}: {current}".split("\n")[0][:600])
        current = current.__cause__ or current.__context__
    return " <- ".join(chain)


# -------------------------------------------------------------------- cases
CASES: dict[str, Callable[[Case], None]] = {}
ONLY: dict[str, tuple[str, ...]] = {}
NAMED_ONLY: set[str] = set()  # cases that run only when named


def case(*kinds: str, named_only: bool = False) -> Callable[[Callable[[Case], None]], Callable[[Case], None]]:
    """Register a case for the catalog kinds ``kinds`` (default: both)."""
    def register(fn: Callable[[Case], None]) -> Callable[[Case], None]:
        CASES[fn.__name__] = fn
        ONLY[fn.__name__] = kinds or ("sql", "rest")
        if named_only:
            NAMED_ONLY.add(fn.__name__)
        return fn
    return register


@dlt.resource(name="events", write_disposition="append")
def events(start: int, n: int) -> Iterator[dict[str, Any]]:
    for i in range(start, start + n):
        yield {"id": i, "kind": ["view", "click", "buy"][i % 3], "amount": i * 1.5, "at": BASE + timedelta(hours=i)}


@case()
def defaults(c: Case) -> None:
    """No namespace, a dataset name: where do the tables go, under which catalog name."""
    params = {k: v for k, v in c.params().items() if k != "namespace"}
    p = dlt.pipeline(pipeline_name=f"{c.name}_p", destination=iceberg_rest(**params),
                     pipelines_dir=str(c.work / "pipelines"), dataset_name="my_dataset")
    p.run(events(0, 5))
    c.observe("default")
    c.restored_state(arguments=params)


@case("sql")
def resolved_configuration(c: Case) -> None:
    """Every option's resolved default, and both config sections."""
    dest = iceberg_rest(catalog_uri="sqlite:///x.db")
    config = dest.configuration(dest.spec())
    fields = ["catalog_uri", "warehouse", "namespace", "credential", "oauth2_server_uri", "scope", "token",
              "sigv4_enabled", "signing_region", "signing_name", "s3_endpoint", "s3_access_key_id",
              "s3_secret_access_key", "s3_region", "py_io_impl", "max_retries", "retry_backoff_base",
              "strict_casting", "merge_batch_size", "table_location_layout", "register_new_tables",
              "hard_delete_column", "internal_table_prefix"]
    c.findings["defaults"] = {f: jsonable(getattr(config, f)) for f in fields}
    for section in ("ICEBERG_REST_CLASS_BASED", "ICEBERG_REST"):
        with env(**{f"DESTINATION__{section}__{k.upper()}": str(v) for k, v in c.params(namespace="from_env").items()}):
            p = dlt.pipeline(pipeline_name=f"{c.name}_{section.lower()}", destination=iceberg_rest(),
                             pipelines_dir=str(c.work / "pipelines"))
            try:
                p.run(events(0, 2))
                c.findings[f"section_{section.lower()}"] = "loaded"
            except Exception as exc:  # noqa: BLE001
                c.findings[f"section_{section.lower()}"] = step_error(exc)
    c.observe("from_env")


@case()
def append_types(c: Case) -> None:
    """dlt types, nullability and column descriptions."""
    columns: Any = {
        "c_text": {"data_type": "text", "description": "a text column"},
        "c_bigint": {"data_type": "bigint", "nullable": False, "description": "required"},
        "c_int32": {"data_type": "bigint", "precision": 32},
        "c_double": {"data_type": "double"}, "c_bool": {"data_type": "bool"},
        "c_ts": {"data_type": "timestamp"}, "c_ts_naive": {"data_type": "timestamp", "timezone": False},
        "c_date": {"data_type": "date"}, "c_time": {"data_type": "time"},
        "c_dec": {"data_type": "decimal"}, "c_dec52": {"data_type": "decimal", "precision": 5, "scale": 2},
        "c_wei": {"data_type": "wei"}, "c_json": {"data_type": "json"}, "c_bin": {"data_type": "binary"},
    }

    @dlt.resource(name="types", columns=columns)
    def types() -> Iterator[dict[str, Any]]:
        for i in range(3):
            yield {"c_text": f"x{i}", "c_bigint": i, "c_int32": i * 2, "c_double": i / 4, "c_bool": i % 2 == 0,
                   "c_ts": BASE + timedelta(seconds=i), "c_ts_naive": datetime(2024, 1, 2, 3, 4, 5 + i),
                   "c_date": date(2024, 1, 2 + i), "c_time": dtime(3, 4, 5 + i), "c_dec": Decimal("1.23") + i,
                   "c_dec52": Decimal("1.25"), "c_wei": Decimal(10**20 + i), "c_json": {"a": [i]}, "c_bin": bytes([i])}

    c.pipeline().run(types())
    c.observe()


@case()
def replace(c: Case) -> None:
    @dlt.resource(name="snapshot", write_disposition="replace")
    def snapshot(n: int, tag: str) -> Iterator[dict[str, Any]]:
        yield from ({"k": k, "tag": tag} for k in range(n))

    p = c.pipeline()
    p.run(snapshot(5, "first"))
    p.run(snapshot(3, "second"))
    c.observe()


def _customers(disposition: Any) -> Any:
    @dlt.resource(name="customers", write_disposition=disposition, primary_key="id")
    def customers(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        yield from rows

    return customers


FIRST = [{"id": i, "name": f"c{i}", "tier": "basic"} for i in range(1, 6)]
SECOND = [{"id": 2, "name": "c2", "tier": "gold"}, {"id": 5, "name": "c5 renamed", "tier": "basic"},
          {"id": 6, "name": "c6", "tier": "new"}]


@case()
def merge_upsert(c: Case) -> None:
    p = c.pipeline()
    p.run(_customers("merge")(FIRST))
    p.run(_customers("merge")(SECOND))
    c.observe()


@case()
def merge_delete_insert(c: Case) -> None:
    p = c.pipeline()
    strategy = {"disposition": "merge", "strategy": "delete-insert"}
    p.run(_customers(strategy)(FIRST))
    p.run(_customers(strategy)(SECOND))
    c.observe()


@case()
def merge_hard_delete(c: Case) -> None:
    """dlt-iceberg's ``hard_delete_column`` (``_dlt_deleted_at``), with both strategies, then
    a load that deletes every remaining row of one table."""
    deleted = [{"id": 3, "name": "c3", "tier": "basic", "_dlt_deleted_at": BASE}, *SECOND]
    p = c.pipeline()
    for name, disposition in (("upsert", "merge"), ("delete_insert", {"disposition": "merge", "strategy": "delete-insert"})):
        res = _customers(disposition).with_name(f"customers_{name}")
        p.run(res(FIRST))
        p.run(res(deleted))
    gone = [{**r, "_dlt_deleted_at": BASE} for r in FIRST if r["id"] not in (1,)]
    p.run(_customers("merge").with_name("customers_upsert")(gone))
    c.observe()


@case()
def merge_duplicate_keys(c: Case) -> None:
    """One load with two rows for one key."""
    p = c.pipeline()
    p.run(_customers("merge")(FIRST))
    c.findings["run"] = error_of(lambda: p.run(_customers("merge")([{"id": 2, "name": "first", "tier": "x"},
                                                                    {"id": 2, "name": "second", "tier": "y"},
                                                                    {"id": 7, "name": "c7", "tier": "new"}])))
    if c.findings["run"]:  # what dlt tells the user to do: load the pending package again
        c.findings["retry"] = error_of(p.load)
    c.observe()


@case()
def merge_no_key(c: Case) -> None:
    @dlt.resource(name="keyless", write_disposition="merge")
    def keyless(tag: str) -> Iterator[dict[str, Any]]:
        yield from ({"id": i, "tag": tag} for i in range(3))

    p = c.pipeline()
    p.run(keyless("a"))
    p.run(keyless("b"))
    c.observe()


@case()
def nested(c: Case) -> None:
    @dlt.resource(name="orders", write_disposition="merge", primary_key="order_id")
    def orders(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        yield from rows

    @dlt.resource(name="baskets", write_disposition="append")
    def baskets() -> Iterator[dict[str, Any]]:
        yield {"basket": 1, "items": [{"sku": "a"}, {"sku": "b"}]}

    p = c.pipeline()
    p.run([orders([{"order_id": 1, "items": [{"sku": "a", "qty": 1}]},
                   {"order_id": 2, "items": [{"sku": "b", "qty": 2}, {"sku": "c", "qty": 3}]}]), baskets()])
    p.run(orders([{"order_id": 1, "items": [{"sku": "a", "qty": 10}]}, {"order_id": 2, "items": [{"sku": "b", "qty": 20}]}]))
    c.observe()


@case()
def schema_evolution(c: Case) -> None:
    @dlt.resource(name="things", columns={"b": {"description": "added later"}})
    def things(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        yield from rows

    p = c.pipeline()
    p.run(things([{"id": 1, "a": "x"}, {"id": 2, "a": "y"}]))
    p.run(things([{"id": 3, "a": "z", "b": 3.5, "c": {"deep": True}}]))
    c.observe()


@case()
def drop_resources(c: Case) -> None:
    p = c.pipeline()
    p.run(events(0, 5))
    old = c.catalog().load_table((c.namespace, "events"))
    old_files = [t.file.file_path for t in old.scan().plan_files()]
    p.run(events(100, 2), refresh="drop_resources")
    c.findings["old_files_left"] = sum(1 for f in old_files if _exists(c, f))
    c.observe()


def _exists(c: Case, location: str) -> bool:
    if location.startswith("file://"):
        return Path(location[len("file://"):]).exists()
    return bool(c.catalog().load_table((c.namespace, "events")).io.new_input(location).exists())


@case()
def dataset(c: Case) -> None:
    p = c.pipeline()
    p.run(events(0, 4))
    try:
        c.findings["dataset_rows"] = jsonable(sorted(p.dataset().events.arrow().select(["id", "kind"]).to_pylist(),
                                                     key=lambda r: r["id"]))
    except Exception as exc:  # noqa: BLE001 - dlt-iceberg on dlt >= 1.25
        c.findings["dataset_rows"] = f"{type(exc).__name__}: {exc}"


@case()
def adapter_forms(c: Case) -> None:
    @dlt.resource(name="clicks")
    def clicks() -> Iterator[dict[str, Any]]:
        for i in range(8):
            yield {"id": i, "ts": BASE + timedelta(days=40 * i), "region": f"r{i % 3}", "user_id": i, "path": f"/p/{i}"}

    forms: dict[str, Any] = {
        "a_str": "region",
        "a_list_str": ["region", "id"],
        "a_single_spec": iceberg_partition.month("ts", "event_month"),
        "a_mixed": [iceberg_partition.day("ts"), "region", iceberg_partition.bucket(4, "user_id"),
                    iceberg_partition.truncate(2, "path", "path_prefix")],
        "a_year_hour": [iceberg_partition.year("ts", "y"), iceberg_partition.identity("region")],
        "a_identity_ts": iceberg_partition.identity("ts"),
        "a_none": None,
        "a_empty": [],
    }
    resources = []
    for name, partition in forms.items():
        res = clicks().with_name(name)
        adapted = iceberg_adapter(res, partition)
        c.findings[f"{name}_same_resource"] = adapted is res
        resources.append(adapted)
    raw = iceberg_adapter([{"id": 1, "region": "x"}], partition="region")
    c.findings["raw_name"] = raw.name

    @dlt.source
    def two() -> Any:
        return clicks().with_name("s1"), clicks().with_name("s2")

    @dlt.source
    def one() -> Any:
        return clicks().with_name("a_one_source")

    c.findings["two_resources"] = error_of(lambda: iceberg_adapter(two(), "region"))
    resources.append(iceberg_adapter(one(), "region"))
    c.findings["bad_bucket"] = error_of(lambda: iceberg_partition.bucket(0, "id"))
    month = iceberg_partition.month("ts", "m")
    c.findings["spec_values"] = [iceberg_partition.bucket(10, "user_id").to_hint_value(), type(month).__name__,
                                 jsonable(dataclasses.asdict(month)), month == PartitionTransform("ts", "month", None, "m")]
    c.pipeline().run([*resources, raw])
    c.observe()


@case()
def column_hints(c: Case) -> None:
    hints: Any = {
        "ts": {"data_type": "timestamp", "x-partition": True, "x-partition-transform": "day", "x-partition-name": "event_day"},
        "region": {"data_type": "text", "x-partition": True},
        "user_id": {"data_type": "bigint", "partition": True, "x-partition-transform": "bucket[3]"},
    }

    @dlt.resource(name="hinted", columns=hints)
    def hinted() -> Iterator[dict[str, Any]]:
        for i in range(6):
            yield {"ts": BASE + timedelta(days=i), "region": f"r{i % 2}", "user_id": i}

    seed_readme: Any = {"d": {"data_type": "date", "partition": True, "partition_transform": "year"}}

    @dlt.resource(name="seed_readme", columns=seed_readme)
    def seed() -> Iterator[dict[str, Any]]:
        yield from ({"d": date(2020 + i, 1, 1), "v": i} for i in range(3))

    c.findings["seed_readme_hint"] = error_of(lambda: c.pipeline("seed").run(seed()))
    c.pipeline().run(hinted())
    c.observe()


@case()
def incremental_state(c: Case) -> None:
    @dlt.resource(name="ticks", write_disposition="append")
    def ticks(upto: int, cursor: Any = dlt.sources.incremental("t")) -> Iterator[list[dict[str, Any]]]:
        yield [{"t": t, "v": f"tick {t}"} for t in range(upto)]

    p = c.pipeline()
    p.run(ticks(10))
    p.run(ticks(12))
    c.observe()
    c.restored_state()


@case()
def opt_table_location_layout(c: Case) -> None:
    # relative to the warehouse; a REST catalog's warehouse is a name, so there it is absolute
    layout = "custom_path/{namespace}/{table_name}" if c.kind == "sql" else f"s3://{c.rest['warehouse']}/custom_path/{{namespace}}/{{table_name}}"
    c.findings["run"] = error_of(lambda: c.pipeline(table_location_layout=layout).run(events(0, 3)))
    c.observe()
    c.findings["bad_layout"] = error_of(lambda: c.pipeline("bad", table_location_layout="{nope}/{table_name}").run(events(0, 1)))


@case("sql")
def opt_register_new_tables(c: Case) -> None:
    """The catalog is lost; the table folders are still in the warehouse."""
    c.pipeline().run(events(0, 3))
    (c.work / "catalog.db").unlink()
    p = c.pipeline("again", register_new_tables=True)
    p.run(events(3, 2))
    c.observe()


@case()
def opt_hard_delete_column(c: Case) -> None:
    rows = [{**r, "gone_at": None} for r in FIRST]
    second = [{"id": 3, "name": "c3", "tier": "basic", "gone_at": BASE}, {"id": 4, "name": "c4", "tier": "basic", "_dlt_deleted_at": BASE}]
    p = c.pipeline(hard_delete_column="gone_at")
    p.run(_customers("merge")(rows))
    p.run(_customers("merge")(second))
    flags = c.pipeline("flags", hard_delete_column="deleted")
    flags.run(_customers("merge").with_name("flagged")([{**r, "deleted": False} for r in FIRST]))
    flags.run(_customers("merge").with_name("flagged")([{"id": 1, "name": "c1", "tier": "x", "deleted": False},
                                                        {"id": 2, "name": "c2", "tier": "x", "deleted": True}]))
    off = c.pipeline("off", hard_delete_column=None)
    off.run(_customers("merge").with_name("kept")(FIRST))
    off.run(_customers("merge").with_name("kept")([{"id": 3, "name": "c3", "tier": "x", "_dlt_deleted_at": BASE}]))
    c.observe()


@case()
def opt_internal_table_prefix(c: Case) -> None:
    ns = {} if c.kind == "sql" else {"namespace": c.namespace}
    c.pipeline(internal_table_prefix="meta_", **ns).run(events(0, 2))
    c.observe(prefix="meta")
    c.restored_state(internal_table_prefix="meta_", **ns)
    c.findings["empty_prefix"] = error_of(lambda: c.pipeline("bad", internal_table_prefix="_").run(events(0, 1)))


@case("sql")
def opt_py_io_impl(c: Case) -> None:
    p = c.pipeline(py_io_impl="pyiceberg.io.fsspec.FsspecFileIO")
    p.run(events(0, 3))
    with p.destination_client() as client:  # dlt's open-table interface, on both sides
        c.findings["io"] = type(client.load_open_table("iceberg", "events").io).__name__
    c.observe()


@case()
def opt_merge_batch_size(c: Case) -> None:
    keys = [{"id": i, "name": f"n{i}", "tier": "t"} for i in range(300)]
    p = c.pipeline(merge_batch_size=1)
    p.run(_customers("merge")(keys))
    started = time.perf_counter()
    p.run(_customers("merge")([{**k, "tier": "u"} for k in keys[::2]]))
    c.findings["second_load_s"] = round(time.perf_counter() - started, 2)
    c.observe()


@case()
def opt_strict_casting(c: Case) -> None:
    @dlt.resource(name="vals", columns={"v": {"data_type": "double"}})
    def vals(v: Any) -> Iterator[dict[str, Any]]:
        yield {"id": 1, "v": v}

    p = c.pipeline(strict_casting=True)
    p.run(vals(1.5))
    c.observe()


@case("rest")
def prefix_refused(c: Case) -> None:
    """dlt's default table names on a catalog with S3 Tables naming rules."""
    p = c.pipeline(internal_table_prefix="_dlt")
    try:
        p.run(events(0, 3))
        c.findings["run"] = "loaded"
    except Exception as exc:  # noqa: BLE001
        c.findings["run"] = step_error(exc)
    c.observe()


@case(named_only=True)
def migration(c: Case) -> None:
    """A pipeline switched from one destination to the other: the request's ``runs`` (dlt-iceberg
    loads 1 and 2, ingester 3 and 4) on one catalog, each side from a pipelines folder of its
    own (so the second side starts from the state in the destination)."""
    for run in c.runs:
        seen: dict[str, Any] = {}

        @dlt.resource(name="ticks", write_disposition="append")
        def ticks(cursor: Any = dlt.sources.incremental("t")) -> Iterator[list[dict[str, Any]]]:
            seen["start_value"] = cursor.last_value  # where the cursor stood when the run began
            yield [{"t": t, "v": f"tick {t}"} for t in range(10 * run)]

        @dlt.resource(name="customers", write_disposition="merge", primary_key="id")
        def customers() -> Iterator[list[dict[str, Any]]]:
            yield [{"id": i, "name": f"c{i}", "run": run} for i in range(run, run + 4)]

        @dlt.resource(name="snapshot", write_disposition="replace")
        def snapshot() -> Iterator[list[dict[str, Any]]]:
            yield [{"k": k, "run": run} for k in range(run)]

        p = c.pipeline(folder=f"pipelines-{SIDE}")
        info = p.run([ticks(), customers(), snapshot()])
        c.findings[f"run{run}"] = {"start_value": seen.get("start_value"), "loads": len(info.loads_ids)}
        try:
            ds = p.dataset()
            c.findings[f"run{run}"]["dataset"] = {
                name: sorted(jsonable(ds[name].arrow().drop_columns(["_dlt_load_id", "_dlt_id"]).to_pylist()),
                             key=lambda r: json.dumps(r, sort_keys=True))
                for name in ("ticks", "customers", "snapshot")}
        except Exception as exc:  # noqa: BLE001 - dlt-iceberg on dlt >= 1.25
            c.findings[f"run{run}"]["dataset"] = f"{type(exc).__name__}: {exc}"
    c.observe()


def main() -> None:
    side, request_file, out_file, *names = sys.argv[1:]
    request = json.loads(Path(request_file).read_text())
    results: dict[str, Any] = {}
    for name in names or [n for n in CASES if n not in NAMED_ONLY]:
        if request["kind"] not in ONLY[name]:
            continue
        started = time.perf_counter()
        c = Case(name, request)
        try:
            CASES[name](c)
            error = None
        except Exception as exc:  # noqa: BLE001 - recorded; the other cases go on
            error = step_error(exc)
            c.findings["traceback"] = traceback.format_exc()[-4000:]
        results[name] = {"error": error, "findings": c.findings, "seconds": round(time.perf_counter() - started, 2)}
    Path(out_file).write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
