"""The reader matrix: the ``interop`` marker on every test here, the readers' venvs and the
session's matrix (tables written once, each read once by every reader).

Only the cases of the selected tests are built (``-k rewrite_append`` builds one table); the
SeaweedFS server starts only when a selected case uses the REST catalog.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from .cases import CASES, REST
from .matrix import Matrix, run_matrix
from .readers import READERS, ensure_all

HERE = Path(__file__).parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.interop)


def _progress(config: pytest.Config) -> Callable[[str], None]:
    """Print a line on the terminal now, past pytest's output capture (thread-safe)."""
    capture = config.pluginmanager.getplugin("capturemanager")
    terminal = config.pluginmanager.getplugin("terminalreporter")
    lock = threading.Lock()

    def say(message: str) -> None:
        with lock, capture.global_and_fixture_disabled():
            terminal.write_line(f"[interop] {message}")

    return say


def _selected_cases(items: list[pytest.Item]) -> list[str]:
    wanted = set()
    for item in items:
        callspec = getattr(item, "callspec", None)
        if callspec is not None and HERE in Path(str(item.fspath)).parents and callspec.params.get("case") in CASES:
            wanted.add(callspec.params["case"])
    return [name for name in CASES if name in wanted]


@pytest.fixture(scope="session")
def matrix(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Matrix:
    """Every selected case built, read by every reader, judged per cell by ``Matrix.verdict``."""
    progress = _progress(request.config)
    ensure_all(READERS, progress)
    cases = [CASES[name] for name in _selected_cases(request.session.items)]
    seaweed = request.getfixturevalue("seaweed") if any(c.catalog == REST for c in cases) else None
    return run_matrix(cases, tmp_path_factory.mktemp("interop"), seaweed, READERS, progress)
