"""Event table -> Iceberg table."""

from __future__ import annotations

import pytest

from ingester.batch import TableRef
from ingester.events import FileEvent, InvalidEvent
from ingester.routing import Router
from ingester.settings import RoutingSettings


def route(event: FileEvent, **settings: object) -> TableRef:
    return Router(RoutingSettings.model_validate(settings)).route(event)


def test_default_namespace_event_namespace_and_prefix() -> None:
    assert route(FileEvent(table="orders")) == TableRef("default", "orders")
    assert route(FileEvent(table="orders", namespace="shop")) == TableRef("shop", "orders")
    assert route(FileEvent(table="orders", namespace="shop"), namespace_prefix="dev_") == TableRef("dev_shop", "orders")
    assert route(FileEvent(table="orders"), namespace="raw", namespace_prefix="dev_") == TableRef("dev_raw", "orders")


def test_table_map_wins_and_may_name_only_a_table() -> None:
    cfg = {"table_map": {"orders": "sales.orders_v2", "users": "people"}, "namespace": "raw"}
    assert route(FileEvent(table="orders", namespace="shop"), **cfg) == TableRef("sales", "orders_v2")
    assert route(FileEvent(table="users"), **cfg) == TableRef("raw", "people")
    assert route(FileEvent(table="other"), **cfg) == TableRef("raw", "other")


@pytest.mark.parametrize("mapped", ["sales.bad-name", "bad ns.t", "sales."])
def test_a_mapping_to_an_invalid_identifier_is_an_invalid_event(mapped: str) -> None:
    with pytest.raises(InvalidEvent, match="not a valid identifier"):
        route(FileEvent(table="orders"), table_map={"orders": mapped})


def test_the_branch_is_the_events_own_then_the_routes_then_main() -> None:
    router = Router(RoutingSettings.model_validate({"branches": {"orders": "audit", "shop.users": "qa"}}))
    assert router.branched(FileEvent(table="orders"), TableRef("default", "orders")).branch == "audit"
    assert router.branched(FileEvent(table="users"), TableRef("shop", "users")).branch == "qa"
    assert router.branched(FileEvent(table="orders", branch="mine"), TableRef("default", "orders")).branch == "mine"
    assert router.branched(FileEvent(table="other"), TableRef("default", "other")).branch == "main"
    with pytest.raises(ValueError, match="not a valid branch name"):
        RoutingSettings.model_validate({"branches": {"orders": "no spaces"}})
