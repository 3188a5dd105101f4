"""Run every reader of the matrix on one table, or on many tables at once.

    from tests.interop.canonical import summarize
    from tests.interop.harness import read_everywhere

    results = read_everywhere(table.metadata_location, partition_filter=("part", "==", "b"))
    expected = summarize(written_arrow_table)
    for name, r in results.items():
        assert r["error"] is None, (name, r["error"])
        assert {c: v["hash"] for c, v in r["columns"].items()} == {c: v["hash"] for c, v in expected.items()}

Over S3 pass `s3=S3(endpoint, access_key_id, secret_access_key, region)` (from `protocol`).
`read_many` reads a whole set of tables with one process per reader (an engine's import costs
more than reading a small table), so a matrix of tables costs one start-up per reader.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Hashable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from .protocol import S3, Filter, Request
from .readers import HERE, READERS, Reader, clean_env, ensure_venv

PARALLEL = 2
TIMEOUT = 300.0
"""Seconds for one process reading one table; a process reading n tables gets `TIMEOUT + PER_TABLE_S * n`."""
PER_TABLE_S = 30.0

K = TypeVar("K", bound=Hashable)


def _failure(reader: Reader, error: str) -> dict[str, Any]:
    return {
        "reader": reader.name, "version": reader.label, "rows": None, "count": None, "columns": {},
        "filtered_rows": None, "filtered_count": None, "sample": None, "error": error,
    }  # fmt: skip


def _answers(stdout: str | bytes | None) -> list[dict[str, Any]]:
    """The complete JSON answer lines of a reader's output (a cut-off last line is dropped)."""
    text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout or ""
    answers = []
    for line in text.splitlines():
        try:
            answers.append(json.loads(line))
        except ValueError:
            break
    return answers


def _run_script(python: Path, reader: Reader, requests: Sequence[Request], timeout: float) -> tuple[list[dict[str, Any]], str]:
    """One process answering `requests` in order: the answers it gave, and why it stopped short."""
    with tempfile.TemporaryDirectory(prefix="interop-") as tmp:
        request_file = Path(tmp) / "requests.json"
        request_file.write_text(json.dumps([json.loads(r.dumps()) for r in requests]), encoding="utf-8")
        try:
            proc = subprocess.run(
                [str(python), "-E", str(HERE / reader.script), str(request_file)],
                capture_output=True, text=True, timeout=timeout, env=clean_env(),
            )  # fmt: skip
        except subprocess.TimeoutExpired as exc:
            return _answers(exc.stdout), f"timed out after {timeout:g}s"
    answers = _answers(proc.stdout)
    return answers, f"exit {proc.returncode}, no JSON answer; stderr: {proc.stderr[-2000:]}"


def run_reader(reader: Reader, requests: Sequence[Request], timeout: float = TIMEOUT) -> list[dict[str, Any]]:
    """Ensure the reader's venv and answer every request, in order, in one process.

    When that process dies or hangs, the requests it did not answer are retried one process each,
    so one table that crashes an engine costs only its own answer. A timeout, a crash or output
    that is not the JSON answer comes back as an answer with `error`.
    """
    try:
        python = ensure_venv(reader)
    except (OSError, RuntimeError) as exc:
        return [_failure(reader, f"venv: {exc}") for _ in requests]
    answers, why = _run_script(python, reader, requests, timeout + PER_TABLE_S * len(requests))
    if len(answers) < len(requests) and len(requests) > 1:
        for request in requests[len(answers) :]:
            single, why = _run_script(python, reader, [request], timeout)
            answers.append(single[0] if single else _failure(reader, why))
    return [*answers, *(_failure(reader, why) for _ in requests[len(answers) :])]


def read_many(
    requests: Mapping[K, Request],
    *,
    readers: tuple[Reader, ...] = READERS,
    timeout: float = TIMEOUT,
    progress: Callable[[str], None] | None = None,
) -> dict[K, dict[str, dict[str, Any]]]:
    """Read every table in every reader (one process per reader, two readers at a time):
    `{key: {reader name: answer}}`. `progress` is told when each reader is done."""
    keys = list(requests)

    def run(reader: Reader) -> list[dict[str, Any]]:
        started = time.monotonic()
        answers = run_reader(reader, [requests[k] for k in keys], timeout)
        if progress:
            progress(f"{reader.name}: {len(keys)} tables read in {time.monotonic() - started:.1f}s")
        return answers

    with ThreadPoolExecutor(PARALLEL) as pool:
        per_reader = dict(zip(readers, pool.map(run, readers)))
    return {k: {r.name: per_reader[r][i] for r in readers} for i, k in enumerate(keys)}


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
    return read_many({0: Request(metadata_location, s3, partition_filter)}, readers=readers, timeout=timeout)[0]
