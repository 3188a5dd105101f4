"""The dlt-iceberg 0.6.4 venv, shared by the parity suite and the benchmarks.

dlt-iceberg ships a fork of pyiceberg under the same module name and runs on dlt 1.27, so it
cannot live in ingester's venv. ``dlt_iceberg_python()`` builds the venv once per set of pins
under ``~/.cache/ingester/`` (``$PARITY_VENV_CACHE`` overrides), keyed by a hash of the
pins and the Python version; a file lock makes concurrent callers wait for one builder and a
stamp written last makes a half-built venv (killed build) be rebuilt. Standard library only:
the benchmark runner imports it before anything else.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

# "s3fs>=2025.9": otherwise pip backtracks to an s3fs pinning an fsspec this index lacks
DLT_ICEBERG_PINS = ("dlt-iceberg==0.6.4", "dlt==1.27.2", "s3fs>=2025.9", "fsspec>=2025.9", "numpy")
STAMP = ".reference-stamp"


def cache_root() -> Path:
    return Path(os.environ.get("PARITY_VENV_CACHE") or Path.home() / ".cache" / "ingester" / "reference-venvs")


def venv_key(pins: tuple[str, ...]) -> str:
    spec = json.dumps([list(sys.version_info[:2]), sorted(pins)])
    return f"dlt-iceberg-{hashlib.sha256(spec.encode()).hexdigest()[:12]}"


def clean_env() -> dict[str, str]:
    """This environment without what would leak ingester's venv into the reference venv."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}


def _ready(venv: Path, pins: tuple[str, ...]) -> bool:
    stamp = venv / STAMP
    return stamp.is_file() and json.loads(stamp.read_text()) == list(pins)


def _run(cmd: list[str]) -> None:
    proc = subprocess.run(cmd, capture_output=True, text=True, env=clean_env())
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... failed ({proc.returncode}): {(proc.stdout + proc.stderr)[-3000:]}")


def dlt_iceberg_python(pins: tuple[str, ...] = DLT_ICEBERG_PINS) -> Path:
    """The python of the (cached) venv with ``pins`` installed; builds it on first use
    (about two minutes, from the package index). Raises RuntimeError when pip fails."""
    venv = cache_root() / venv_key(pins)
    python = venv / "bin" / "python"
    if _ready(venv, pins):
        return python
    venv.parent.mkdir(parents=True, exist_ok=True)
    with open(venv.parent / f"{venv.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not _ready(venv, pins):
            print(f"creating the dlt-iceberg venv {venv} (once, about 2 minutes) ...", file=sys.stderr, flush=True)
            shutil.rmtree(venv, ignore_errors=True)
            _run([sys.executable, "-m", "venv", str(venv)])
            _run([str(python), "-m", "pip", "install", "-q", "--no-input", "--disable-pip-version-check", *pins])
            (venv / STAMP).write_text(json.dumps(list(pins)))
    return python
