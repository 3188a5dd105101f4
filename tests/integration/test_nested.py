"""Nested data end to end on each catalog: struct fields added mid-stream land through the
daemon, the dlt ``iceberg()`` destination and ``ingester_queue()`` + daemon, and read back
exactly in pyiceberg and DuckDB; what cannot fit is dead-lettered (or fails the dlt load)
naming the column path; a queue-fed merge of nested tables leaves exactly the direct
destination's rows, across daemon restarts; files without rows add nothing."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import anyio
import dlt
import pyarrow as pa
import pytest
from dlt.pipeline.exceptions import PipelineStepFailed
from pyiceberg.exceptions import NoSuchTableError
from pyiceberg.table import Table

from ingester.dlt.queue import ingester_queue
from ingester.settings import Settings
from ingester.sources.spool import SpoolQueue
from ingester.wiring import build_engine
from tests.integration.test_dlt_destination import Target
from tests.integration.test_engine import Env, LostAcks
from tests.support import CatalogUnderTest, snapshot_count


@pytest.fixture
def env(any_catalog: CatalogUnderTest, tmp_path: Path) -> Callable[..., Env]:
    def make(strict_casting: bool = True, **window: Any) -> Env:
        return Env(tmp_path / "home", any_catalog.settings, any_catalog.s3, {"strict_casting": strict_casting}, **window)

    return make


@pytest.fixture
def target(any_catalog: CatalogUnderTest, tmp_path: Path) -> Target:
    return Target(any_catalog.kind, f"n_{uuid.uuid4().hex[:10]}", tmp_path, any_catalog.server)


def struct(**fields: pa.DataType) -> pa.StructType:
    return pa.struct(list(fields.items()))


def dead_letters(home: Path) -> list[dict[str, Any]]:
    path = home / "deadletter" / "deadletters.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def with_maps_as_dicts(rows: list[dict[str, Any]], *maps: str) -> list[dict[str, Any]]:
    """pyiceberg reads a map as (key, value) pairs, DuckDB as a dict."""
    return [{k: dict(v) if k in maps and v is not None else v for k, v in r.items()} for r in rows]


def run_daemon(settings: Settings, source: Any = None) -> Any:
    async def main() -> Any:
        engine = build_engine(settings, source=source)
        try:
            return await engine.run(exit_when_idle=True)
        finally:
            await engine.source.aclose()

    return anyio.run(main)


# ------------------------------------------------------------------- daemon
@pytest.mark.parametrize("strict", [True, False])
def test_daemon_evolves_nested_fields_in_append_and_merge_and_dead_letters_what_cannot_fit(
    env: Callable[..., Env], strict: bool
) -> None:
    e = env(strict, max_batch_files=1)
    items = pa.list_(struct(sku=pa.string(), q=pa.int32()))
    e.publish(e.file(pa.table({
        "id": pa.array([1], pa.int64()),
        "st": pa.array([{"a": 1}], struct(a=pa.int32())),
        "items": pa.array([[{"sku": "x", "q": 1}]], items),
        "attrs": pa.array([[("k", {"x": 1.5})]], pa.map_(pa.string(), struct(x=pa.float32()))),
    })), "n")
    e.publish(e.file(pa.table({  # new fields at every depth, and wider types inside them
        "id": pa.array([2], pa.int64()),
        "st": pa.array([{"a": 2**40, "b": "B"}], struct(a=pa.int64(), b=pa.string())),
        "items": pa.array([[{"sku": "y", "q": 2**33, "price": Decimal("9.99")}]],
                          pa.list_(struct(sku=pa.string(), q=pa.int64(), price=pa.decimal128(12, 2)))),
        "attrs": pa.array([[("j", {"x": 2.5, "y": 7})]], pa.map_(pa.string(), struct(x=pa.float64(), y=pa.int32()))),
    })), "n")
    e.publish(e.file(pa.table({  # st.b is a string in the table now
        "id": pa.array([3], pa.int64()), "st": pa.array([{"a": 3, "b": {"deep": 1}}], struct(a=pa.int64(), b=struct(deep=pa.int64()))),
    })), "n")
    e.publish(e.file(pa.table({  # a decimal that would lose its scale: strict refuses the type, non-strict the value
        "id": pa.array([4], pa.int64()),
        "items": pa.array([[{"sku": "z", "price": Decimal("1.234")}]], pa.list_(struct(sku=pa.string(), price=pa.decimal128(12, 3)))),
    })), "n")
    e.publish(e.file(pa.table({  # a merge evolves too: row 1 replaced, with a field new to the table
        "id": pa.array([1], pa.int64()),
        "st": pa.array([{"a": 5, "c": True}], struct(a=pa.int32(), c=pa.bool_())),
        "items": pa.array([[{"sku": "w"}]], pa.list_(struct(sku=pa.string()))),
        "attrs": pa.array([[("k", {"x": 0.5, "z": "zz"})]], pa.map_(pa.string(), struct(x=pa.float32(), z=pa.string()))),
    })), "n", write_disposition="merge", primary_key=["id"])
    stats = e.run()
    assert (stats.snapshots, stats.dead_letters) == (3, 2)
    reasons = [d["reason"] for d in dead_letters(e.home)]
    assert len(reasons) == 2
    assert any("column 'st.b': struct<deep: int64> does not fit table type string" in r for r in reasons), reasons
    why = "without loss (strict casting)" if strict else "cannot cast list<element: struct<sku: string, price: decimal128(12, 3)>>"
    assert any("column 'items.element.price'" in r and why in r for r in reasons), reasons
    assert e.queue.depth() == 0

    schema = e.table("n").schema()
    assert [str(schema.find_field(p).field_type) for p in ("st.a", "items.element.q", "items.element.price", "attrs.value.x")] == [
        "long", "long", "decimal(12, 2)", "double"]
    expected = [
        {"id": 1, "st": {"a": 5, "b": None, "c": True}, "items": [{"sku": "w", "q": None, "price": None}],
         "attrs": {"k": {"x": 0.5, "y": None, "z": "zz"}}},
        {"id": 2, "st": {"a": 2**40, "b": "B", "c": None}, "items": [{"sku": "y", "q": 2**33, "price": Decimal("9.99")}],
         "attrs": {"j": {"x": 2.5, "y": 7, "z": None}}},
    ]
    assert with_maps_as_dicts(e.rows("n"), "attrs") == expected
    columns = [f.name for f in schema.fields]
    duck = [dict(zip(columns, row)) for row in e.duck("n", "SELECT * FROM t ORDER BY id")]
    assert duck == expected


# ---------------------------------------------------------------------- dlt
@dlt.resource(name="things", write_disposition="append")
def things(table: pa.Table) -> Iterator[pa.Table]:
    yield table


@pytest.mark.parametrize("via", ["iceberg", "ingester_queue"])
def test_dlt_struct_field_added_in_a_later_load_lands_and_one_that_cannot_fit_is_refused(target: Target, via: str) -> None:
    loads = [
        pa.table({"id": [1], "st": pa.array([{"a": 1}]), "items": pa.array([[{"sku": "x"}]])}),
        pa.table({"id": [2], "st": pa.array([{"a": 2, "b": "B"}]), "items": pa.array([[{"sku": "y", "price": 1.5}]])}),
    ]
    bad = pa.table({"id": [3], "st": pa.array([{"a": 3, "b": {"deep": 1}}])})
    if via == "iceberg":
        p = target.pipeline("structs")
        for t in loads:
            p.run(things(t))
        with pytest.raises(PipelineStepFailed, match="column 'st.b'"):
            p.run(things(bad))
    else:
        settings = target.settings(target.namespace)
        p = dlt.pipeline("structs", destination=ingester_queue(settings), pipelines_dir=str(target.workdir / "pipelines"), dataset_name="ds")
        for t in loads:
            p.run(things(t))  # both loads queued: the daemon may evolve for both files in one batch
        p.run(things(bad))
        stats = run_daemon(settings)
        assert stats.dead_letters == 1
        (letter,) = dead_letters(target.home)
        assert "column 'st.b'" in letter["reason"] and letter["table"] == f"{target.namespace}.things"
    expected = [
        {"id": 1, "st": {"a": 1, "b": None}, "items": [{"sku": "x", "price": None}]},
        {"id": 2, "st": {"a": 2, "b": "B"}, "items": [{"sku": "y", "price": 1.5}]},
    ]
    for read in (target.rows, target.duck_rows):
        rows = sorted(read("things"), key=lambda r: r["id"])
        assert [{k: r[k] for k in ("id", "st", "items")} for r in rows] == expected


# ------------------------------------------------- queue-fed nested merges
# upsert on both sides (iceberg_rest's default is dlt-iceberg's delete-insert): the same row ids
@dlt.resource(name="orders", write_disposition={"disposition": "merge", "strategy": "upsert"}, primary_key="order_id")
def orders(rows: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from rows


NESTED_LOADS = [
    [{"order_id": 1, "items": [{"sku": "a", "qty": 1}], "tags": ["x"]},
     {"order_id": 2, "items": [{"sku": "b", "qty": 2}, {"sku": "c", "qty": 3}], "tags": ["y", "z"]},
     {"order_id": 3, "items": [{"sku": "d", "qty": 4}], "tags": []}],
    # 1 changes, 2 loses all its nested rows, 4 is new, 3 is not in this load
    [{"order_id": 1, "items": [{"sku": "a", "qty": 10}], "tags": ["x"]},
     {"order_id": 2, "items": [], "tags": []},
     {"order_id": 4, "items": [{"sku": "e", "qty": 5}], "tags": ["t"]}],
    # no nested rows at all in this load: 3 loses its item
    [{"order_id": 3, "items": [], "tags": []}],
]
EXPECTED_ITEMS = [
    {(1, "a", 1), (2, "b", 2), (2, "c", 3), (3, "d", 4)},
    {(1, "a", 10), (3, "d", 4), (4, "e", 5)},
    {(1, "a", 10), (4, "e", 5)},
]
EXPECTED_TAGS = [{(1, "x"), (2, "y"), (2, "z")}, {(1, "x"), (4, "t")}, {(1, "x"), (4, "t")}]


def comparable(rows: list[dict[str, Any]]) -> list[tuple[tuple[str, Any], ...]]:
    """Whole rows, sorted; ``_dlt_load_id`` differs between two pipelines by nature."""
    return sorted(tuple(sorted((k, v) for k, v in r.items() if k != "_dlt_load_id")) for r in rows)


def test_a_queue_fed_merge_of_nested_tables_equals_the_direct_one_across_daemon_restarts(target: Target) -> None:
    direct_ns, queued_ns = f"{target.namespace}_direct", f"{target.namespace}_queued"
    direct = target.pipeline("direct", namespace=direct_ns)
    base = target.settings(queued_ns)
    settings = base.model_copy(update={"window": base.window.model_copy(update={"max_batch_files": 1})})  # parents and children never share a window
    queued = dlt.pipeline("queued", destination=ingester_queue(settings), pipelines_dir=str(target.workdir / "pipelines"), dataset_name="ds")
    for n, rows in enumerate(NESTED_LOADS):
        direct.run(orders(rows))
        queued.run(orders(rows))
        if n == 1:  # a crash between commit and ack: everything is replayed, nothing lands twice
            first = run_daemon(settings, LostAcks(SpoolQueue(settings.spool_file)))
            assert first.snapshots > 0
            before = {t: snapshot_count(target.table(t, queued_ns)) for t in ("orders", "orders__items", "orders__tags")}
            again = run_daemon(settings)
            assert again.duplicates == again.events == first.events and again.snapshots == 0
            assert {t: snapshot_count(target.table(t, queued_ns)) for t in before} == before
        else:
            assert run_daemon(settings).dead_letters == 0
        for name in ("orders", "orders__items", "orders__tags"):
            assert comparable(target.rows(name, queued_ns)) == comparable(target.rows(name, direct_ns)), (n, name)
        assert comparable(target.duck_rows("orders__items", queued_ns)) == comparable(target.rows("orders__items", direct_ns))
        by_id = {r["_dlt_id"]: r["order_id"] for r in target.rows("orders", queued_ns)}
        items = {(by_id[r["_dlt_root_id"]], r["sku"], r["qty"]) for r in target.rows("orders__items", queued_ns)}
        tags = {(by_id[r["_dlt_root_id"]], r["value"]) for r in target.rows("orders__tags", queued_ns)}
        assert (items, tags) == (EXPECTED_ITEMS[n], EXPECTED_TAGS[n]), n
    assert not dead_letters(target.home)


# ------------------------------------------------------- files without rows
def test_a_file_without_rows_is_acked_without_a_snapshot_and_a_replace_of_one_empties_the_table(env: Callable[..., Env]) -> None:
    e = env()
    e.publish(e.file({"id": pa.array([1, 2, 3], pa.int64())}), "z")
    assert e.run().snapshots == 1
    empty = e.file({"id": pa.array([], pa.int64())})
    e.publish(empty, "z")
    e.publish(empty, "never_made")
    stats = e.run()
    assert (stats.events, stats.snapshots, stats.dead_letters) == (2, 0, 0)
    assert e.queue.depth() == 0 and not dead_letters(e.home)  # acked
    table = e.table("z")
    assert snapshot_count(table) == 1 and [t.file.record_count for t in table.scan().plan_files()] == [3]
    with pytest.raises(NoSuchTableError):
        e.table("never_made")
    e.publish(empty, "z", write_disposition="replace")
    assert e.run().snapshots == 1
    assert snapshot_count(table) == 2 and not list(table.refresh().scan().plan_files())
    assert e.duck("z") == [(0,)]


def test_a_dlt_load_of_an_empty_file_adds_no_data_file_and_an_empty_replace_empties_the_table(target: Target) -> None:
    @dlt.resource(name="snap", write_disposition="replace")
    def snap(table: pa.Table) -> Iterator[pa.Table]:
        yield table

    p = target.pipeline("empties")
    p.run([things(pa.table({"id": [1, 2]})), snap(pa.table({"id": [7]}))])
    p.run([things(pa.table({"id": pa.array([], pa.int64())})), snap(pa.table({"id": pa.array([], pa.int64())}))])

    def data_files(t: Table) -> list[int]:
        return [task.file.record_count for task in t.scan().plan_files()]

    kept, emptied = target.table("things"), target.table("snap")
    assert (snapshot_count(kept), data_files(kept)) == (1, [2])
    assert (snapshot_count(emptied), data_files(emptied)) == (2, [])
    assert target.duck_rows("snap") == [] and sorted(r["id"] for r in target.duck_rows("things")) == [1, 2]
