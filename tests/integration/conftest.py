"""Integration tests: the real servers (started once per session from pip packages), the
``integration`` marker on every test here, and the one catalog fixture every catalog-generic
test runs on (embedded SQLite and SeaweedFS's REST catalog on S3)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import CatalogUnderTest, rest_catalog_settings, s3_secret

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    """A real S3 store + Iceberg REST catalog (SeaweedFS)."""
    from ingester.testing.localstack import SeaweedServer

    server = SeaweedServer.start(tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tansu() -> Iterator[Any]:
    """A real Kafka-compatible broker (Tansu, in-memory storage)."""
    from ingester.testing.localstack import TansuBroker

    broker = TansuBroker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture(params=["sql", "rest"])
def any_catalog(request: pytest.FixtureRequest) -> CatalogUnderTest:
    """The same test on the embedded catalog and on the REST catalog."""
    if request.param == "sql":
        return CatalogUnderTest("sql", {})
    seaweed = request.getfixturevalue("seaweed")
    return CatalogUnderTest("rest", rest_catalog_settings(seaweed), s3_secret(seaweed), seaweed)
