"""The package type-checks (DESIGN: mypy clean), with the pydantic plugin for the settings."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_finds_no_issues_in_the_package() -> None:
    out = subprocess.run([sys.executable, "-m", "mypy", "ingester"], cwd=ROOT, capture_output=True, text=True)
    assert out.returncode == 0, out.stdout[-4000:] + out.stderr[-2000:]
