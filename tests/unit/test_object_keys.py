"""Object keys -> file events: patterns, skips, dead-letter reasons, identity."""

from __future__ import annotations

import pytest

from ingester.events import WriteDisposition
from ingester.object_keys import KeyRouter, ObjectRef, Unroutable, compile_pattern
from ingester.settings import ObjectRoute


def test_pattern_placeholders_and_globs() -> None:
    rx = compile_pattern("incoming/{table}/**")
    m = rx.fullmatch("incoming/orders/dt=2026-12-01/part-0.parquet")
    assert m is not None and m.group("table") == "orders"
    assert rx.fullmatch("incoming/orders") is None
    assert compile_pattern("{namespace}/{table}/*.parquet").fullmatch("shop/items/a.parquet") is not None
    assert compile_pattern("{namespace}/{table}/*.parquet").fullmatch("shop/items/x/a.parquet") is None
    assert compile_pattern("exports/**/data.parquet").fullmatch("exports/data.parquet") is not None
    assert compile_pattern("a/{table}/x").fullmatch("a/not-an-identifier/x") is None


def test_route_builds_the_event() -> None:
    router = KeyRouter([
        ObjectRoute(pattern="cdc/{table}/**", namespace="raw", write_disposition="merge", primary_key=["id"]),
        ObjectRoute(pattern="incoming/{table}/**"),
    ])
    ref = ObjectRef("s3://lake/cdc/users/dt=1/p.parquet", 120, etag='"abc"')
    event = router.route(ref)
    assert event is not None
    assert (event.table, event.namespace, event.location, event.byte_size) == ("users", "raw", ref.location, 120)
    assert event.write_disposition is WriteDisposition.MERGE and event.primary_key == ("id",)
    assert event.event_id == ObjectRef(ref.location, 120, etag="abc").event_id()  # quotes do not count
    assert event.event_id != ObjectRef(ref.location, 120, etag="abd").event_id()
    assert event.event_id != ObjectRef(ref.location, 121, etag="abc").event_id()


def test_skips_and_unroutable() -> None:
    router = KeyRouter([ObjectRoute(pattern="incoming/{table}/**", bucket="lake")], buckets=["lake"])
    assert router.route(ObjectRef("s3://lake/incoming/t/_SUCCESS", 0)) is None
    assert router.route(ObjectRef("s3://lake/incoming/t/x.json", 10)) is None
    assert not router.watches(ObjectRef("s3://other/incoming/t/a.parquet", 10))
    with pytest.raises(Unroutable, match="no route matches key 'stray/a.parquet' in bucket 'lake'"):
        router.route(ObjectRef("s3://lake/stray/a.parquet", 10))


def test_fixed_table_and_local_paths() -> None:
    router = KeyRouter([ObjectRoute(pattern="**/*.parquet", table="events", namespace="ops")])
    event = router.route(ObjectRef("/data/drop/2026/a.parquet", 5))
    assert event is not None and (event.table, event.namespace) == ("events", "ops")
    with pytest.raises(ValueError, match="needs \\{table\\}"):
        KeyRouter([ObjectRoute(pattern="x/**")])
