"""Shared fixtures. Server fixtures start real processes (from pip packages) once per session."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    """A real S3 store + Iceberg REST catalog (SeaweedFS)."""
    from ingester.localstack import SeaweedServer

    server = SeaweedServer.start(tmp_path_factory.mktemp("seaweed"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def tansu() -> Iterator[object]:
    """A real Kafka-compatible broker (Tansu, in-memory storage)."""
    from ingester.localstack import TansuBroker

    broker = TansuBroker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty INGESTER_HOME."""
    return tmp_path / "home"
