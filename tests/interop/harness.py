"""Run every reader of the matrix on one table.

    from tests.interop.canonical import summarize
    from tests.interop.harness import read_everywhere

    results = read_everywhere(table.metadata_location, partition_filter=("part", "==", "b"))
    expected = summarize(written_arrow_table)
    for name, r in results.items():
        assert r["error"] is None, (name, r["error"])
        assert {c: v["hash"] for c, v in r["columns"].items()} == {c: v["hash"] for c, v in expected.items()}

Over S3 pass `s3=S3(endpoint, access_key_id, secret_access_key, region)` (from `protocol`).
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from .protocol import S3, Filter, Request
from .readers import HERE, READERS, Reader, clean_env, ensure_venv

PARALLEL = 2
TIMEOUT = 300.0


def _failure(reader: Reader, error: str) -> dict[str, Any]:
    return {"reader": reader.name, "version": reader.label, "rows": None, "columns": {}, "filtered_rows": None, "error": error}


def run_reader(reader: Reader, request_file: Path, timeout: float = TIMEOUT) -> dict[str, Any]:
    """Ensure the reader's venv, run its script on the request and return its JSON answer.

    A timeout, a crash or output that is not the JSON answer comes back as an answer with `error`.
    """
    try:
        python = ensure_venv(reader)
    except (OSError, RuntimeError) as exc:
        return _failure(reader, f"venv: {exc}")
    try:
        proc = subprocess.run(
            [str(python), "-E", str(HERE / reader.script), str(request_file)],
            capture_output=True, text=True, timeout=timeout, env=clean_env(),
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        return _failure(reader, f"timed out after {timeout:g}s")
    try:
        answer: dict[str, Any] = json.loads(proc.stdout)
    except ValueError:
        return _failure(reader, f"exit {proc.returncode}, no JSON answer; stderr: {proc.stderr[-2000:]}")
    return answer


def read_everywhere(
    metadata_location: str,
    *,
    s3: S3 | None = None,
    partition_filter: Filter | tuple[str, str, Any] | None = None,
    readers: tuple[Reader, ...] = READERS,
    timeout: float = TIMEOUT,
) -> dict[str, dict[str, Any]]:
    """Read the table in every reader (two at a time), keyed by reader name.

    `partition_filter` is a `Filter` or a `(column, op, value)` tuple, op one of == != < <= > >=.
    """
    if isinstance(partition_filter, tuple):
        partition_filter = Filter(*partition_filter)
    request = Request(metadata_location, s3, partition_filter)
    with tempfile.TemporaryDirectory(prefix="interop-") as tmp:
        request_file = Path(tmp) / "request.json"
        request_file.write_text(request.dumps(), encoding="utf-8")
        with ThreadPoolExecutor(PARALLEL) as pool:
            answers = pool.map(lambda r: run_reader(r, request_file, timeout), readers)
            return {r.name: a for r, a in zip(readers, answers)}
