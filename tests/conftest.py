"""Fixtures of every test. Server fixtures live in ``integration/conftest.py``."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """An empty INGESTER_HOME."""
    return tmp_path / "home"
