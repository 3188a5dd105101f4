"""The fault proxy itself works against the real servers (each fault kind is observable)."""

from __future__ import annotations

import urllib.error
import urllib.request
from typing import Any

import pytest

from tests.integration.faults import FaultPlan, FaultProxy


@pytest.mark.parametrize(("fault", "status"), [("http_500", 500), ("http_503", 503), ("http_429", 429)])
def test_proxy_injects_http_errors_and_passes_the_rest(seaweed: Any, fault: str, status: int) -> None:
    port = int(seaweed.iceberg_uri.rsplit(":", 1)[1])
    proxy = FaultProxy(port, FaultPlan(faults=(fault,), rate=1.0)).start()
    try:
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"{proxy.url}/v1/config", timeout=10)
        assert err.value.code == status
        if fault == "http_429":
            assert err.value.headers["Retry-After"] == "1"
        proxy.plan.enabled = False
        with urllib.request.urlopen(f"{proxy.url}/v1/config", timeout=10) as ok:
            assert ok.status in (200, 401)
    except urllib.error.HTTPError as exc:
        assert exc.code == 401  # /v1/config may want auth: it still came from the real server
    finally:
        proxy.stop()
    assert proxy.counts[fault] == 1


def test_catalog_through_the_proxy_with_conflicts_still_commits(seaweed: Any) -> None:
    import pyarrow as pa
    from pyiceberg.catalog.rest import RestCatalog

    port = int(seaweed.iceberg_uri.rsplit(":", 1)[1])
    proxy = FaultProxy(port, FaultPlan(conflict_rate=0.5, seed=3)).start()
    try:
        props = seaweed.catalog_properties("oauth2") | {"uri": proxy.url, "oauth2-server-uri": f"{proxy.url}/v1/oauth/tokens"}
        cat = RestCatalog("p", **props)
        cat.create_namespace_if_not_exists("proxy_ns")
        table = cat.create_table_if_not_exists(("proxy_ns", "t"), schema=pa.schema([("id", pa.int64())]))
        for i in range(6):
            for _attempt in range(10):
                try:
                    table.append(pa.table({"id": pa.array([i], pa.int64())}))
                    break
                except Exception as exc:  # noqa: BLE001 - the injected 409 surfaces as CommitFailedException
                    assert "conflict" in str(exc).lower() or "409" in str(exc)
                    table = cat.load_table(("proxy_ns", "t"))
        assert sorted(table.refresh().scan().to_arrow().column("id").to_pylist()) == list(range(6))
    finally:
        proxy.stop()
    assert proxy.counts["http_409"] >= 1
