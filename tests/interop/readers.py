"""The independent readers of the matrix, each in a cached virtualenv of its own."""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

HERE = Path(__file__).resolve().parent
STAMP = ".interop-stamp"


@dataclass(frozen=True)
class Reader:
    """One engine: its name, a version label, the script that reads with it and its pip requirements."""

    name: str
    label: str
    script: str
    requirements: tuple[str, ...]

    @property
    def key(self) -> str:
        """Cache folder name: the reader's name plus a hash of what goes into its venv."""
        spec = json.dumps([sys.version_info[:2], sorted(self.requirements)])
        return f"{self.name}-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


READERS: tuple[Reader, ...] = (
    Reader("pyiceberg", "0.12", "read_pyiceberg.py", ("pyiceberg[pyarrow,sql-sqlite]==0.12.0",)),
    Reader(
        "duckdb-1.4",
        "1.4.4",
        "read_duckdb.py",
        (
            "duckdb==1.4.4",
            "duckdb-ext-iceberg==1.4.4.20260205",
            "duckdb-ext-httpfs==1.4.4.20260205",
            "duckdb-ext-avro==1.4.4.20260205",
            "pyarrow",
        ),
    ),
    Reader(
        "duckdb-1.5",
        "1.5.5",
        "read_duckdb.py",
        (
            "duckdb==1.5.5",
            "duckdb-extension-iceberg==1.5.5",
            "duckdb-extension-httpfs==1.5.5",
            "duckdb-extension-avro==1.5.5",
            "pyarrow",
        ),
    ),
    Reader("daft", "0.7", "read_daft.py", ("daft==0.7.26", "pyiceberg==0.12.0", "pyarrow")),
    Reader("polars", "2.1", "read_polars.py", ("polars[iceberg,pyarrow]==2.1.0", "pyiceberg==0.12.0")),
    # pyiceberg-core 0.11 is built against DataFusion 54.1: its FFI table provider needs that major.
    Reader("datafusion", "54.1 + pyiceberg-core 0.11", "read_datafusion.py", ("datafusion==54.1.0", "pyiceberg-core==0.11.0", "pyarrow")),
)


def cache_root() -> Path:
    """Where the venvs live: $INTEROP_VENV_CACHE, else ~/.cache/ingester/interop-venvs."""
    default = Path.home() / ".cache" / "ingester" / "interop-venvs"
    return Path(os.environ.get("INTEROP_VENV_CACHE") or default)


def _ready(venv: Path, reader: Reader) -> bool:
    stamp = venv / STAMP
    return stamp.is_file() and json.loads(stamp.read_text()) == list(reader.requirements)


def clean_env() -> dict[str, str]:
    """This process's environment without what would leak its own venv into a reader's."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env())
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:5])} ... failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-2000:]}")


def ensure_venv(reader: Reader) -> Path:
    """Create (or reuse) the reader's venv and return its python.

    A per-venv file lock makes concurrent callers wait for one builder; the stamp is written last,
    so a half-built venv (crash, kill) is rebuilt from scratch by the next caller.
    """
    venv = cache_root() / reader.key
    if _ready(venv, reader):
        return venv / "bin" / "python"
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{reader.key}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _ready(venv, reader):
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(venv)])
            _run([str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-input", *reader.requirements])
            (venv / STAMP).write_text(json.dumps(list(reader.requirements)))
    return venv / "bin" / "python"


def ensure_all(readers: tuple[Reader, ...] = READERS, progress: Callable[[str], None] | None = None) -> dict[str, Path]:
    """Every reader's venv (built two at a time when missing): `{reader name: python}`.

    `progress` is told which venvs are missing and when each is ready. Raises what
    `ensure_venv` raises.
    """
    missing = [r.name for r in readers if not _ready(cache_root() / r.key, r)]
    if progress and missing:
        progress(f"building reader venvs under {cache_root()} (first run: about 2 minutes): {', '.join(missing)}")

    def build(reader: Reader) -> Path:
        started = time.monotonic()
        python = ensure_venv(reader)
        if progress and reader.name in missing:
            progress(f"venv {reader.name} ready in {time.monotonic() - started:.0f}s")
        return python

    with ThreadPoolExecutor(2) as pool:
        return dict(zip((r.name for r in readers), pool.map(build, readers)))
