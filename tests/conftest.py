"""Fixtures of every test, and the real servers (started once per session from pip packages, on
first use) that ``integration/`` and ``interop/`` share."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty INGESTER_HOME."""
    return tmp_path / "home"


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
