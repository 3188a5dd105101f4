"""The README's code map names every folder and module of the package, and nothing else."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "ingester"


def code_map() -> str:
    text = (ROOT / "README.md").read_text()
    return text.split("## Code map", 1)[1].split("\n## ", 1)[0]


def test_every_folder_and_top_level_module_is_on_the_map_and_the_map_names_only_real_ones() -> None:
    rows = [line for line in code_map().splitlines() if line.startswith("| `")]
    named = {name for row in rows for name in re.findall(r"`([a-z0-9_]+(?:/|\.py))`", row.split("|")[1])}
    real = {p.name + "/" for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    real |= {p.name for p in PACKAGE.glob("*.py") if p.name != "__init__.py"}
    assert named == real


def test_modules_named_inside_a_folder_exist() -> None:
    for row in (line for line in code_map().splitlines() if line.startswith("| `") and "/` |" in line):
        folder = PACKAGE / row.split("`")[1]
        for module in re.findall(r"`([a-z0-9_]+\.py)`", row.split("|")[2]):
            assert (folder / module).exists(), f"{folder.name}/{module}"
