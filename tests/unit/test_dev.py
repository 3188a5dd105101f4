"""``dev.py test`` installs the Debian packages of missing test tools, and only then runs apt-get
(subprocess and the PATH lookup are faked: no package is installed here)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def dev(monkeypatch: pytest.MonkeyPatch) -> Any:
    spec = importlib.util.spec_from_file_location("dev", REPO / "dev.py")
    assert spec and spec.loader
    module: ModuleType = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    calls: list[list[str]] = []
    monkeypatch.setattr(module.subprocess, "run", lambda args, **kw: calls.append(list(args)))
    monkeypatch.setattr(module.os, "geteuid", lambda: 0)
    module.calls = calls
    return module


def installed(dev: Any, monkeypatch: pytest.MonkeyPatch, present: set[str]) -> list[list[str]]:
    monkeypatch.setattr(dev.shutil, "which", lambda name: f"/usr/bin/{name}" if name in present | {"apt-get"} else None)
    dev.ensure_test_tools()
    return dev.calls  # type: ignore[no-any-return]


def test_nothing_missing_runs_no_apt(dev: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    assert installed(dev, monkeypatch, {"prometheus", "promtool", "tmux"}) == []


def test_missing_tools_are_installed_after_one_update(dev: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = installed(dev, monkeypatch, {"tmux"})
    assert calls == [["apt-get", "update", "-qq"],
                     ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "prometheus"]]


def test_without_root_it_only_warns(dev: Any, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(dev.os, "geteuid", lambda: 1000)
    assert installed(dev, monkeypatch, set()) == []
    assert "cannot install prometheus tmux" in capsys.readouterr().out
