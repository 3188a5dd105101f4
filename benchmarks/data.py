"""Deterministic dlt-normalized benchmark data: an ``events`` table and its nested ``events__items``.

Columns as dlt writes them: ids, UTC timestamps, short and long strings, floats, plus
``_dlt_load_id`` / ``_dlt_id`` (and ``_dlt_parent_id`` / ``_dlt_list_idx`` in the child).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

COUNTRIES = pa.array(["DE", "FR", "US", "BR", "JP", "IN", "NG", "SE", "MX", "KR"])
WORDS = "the quick brown fox jumps over a lazy dog while data lakes keep every row exactly once".split()
START_US = 1_767_225_600_000_000  # 2026-01-01T00:00:00Z


def _text_pool(rng: np.random.Generator, n: int, words: int) -> pa.Array:
    return pa.array([" ".join(rng.choice(WORDS, size=words)) for _ in range(n)])


def events(n: int, seed: int = 42, first_id: int = 0, load_id: str = "1767225600.0") -> pa.Table:
    rng = np.random.default_rng(seed + first_id)
    ids = np.arange(first_id, first_id + n, dtype=np.int64)
    titles = _text_pool(rng, 512, 5)
    bodies = _text_pool(rng, 512, 40)
    return pa.table({
        "id": ids,
        "created_at": pa.array(START_US + rng.integers(0, 30 * 86_400_000_000, n), pa.timestamp("us", tz="UTC")),
        "user_id": rng.integers(1, 1_000_000, n),
        "country": COUNTRIES.take(pa.array(rng.integers(0, len(COUNTRIES), n))),
        "title": titles.take(pa.array(rng.integers(0, 512, n))),
        "body": bodies.take(pa.array(rng.integers(0, 512, n))),
        "amount": rng.normal(100, 30, n).round(2),
        "score": rng.random(n),
        "_dlt_load_id": pa.DictionaryArray.from_arrays(np.zeros(n, np.int32), pa.array([load_id])).cast(pa.string()),
        "_dlt_id": pc.cast(ids, pa.string()),
    })


def items(parents: pa.Table, seed: int = 42) -> pa.Table:
    """Two items per parent row (the nested table dlt makes of a list column)."""
    rng = np.random.default_rng(seed)
    n = parents.num_rows * 2
    parent_ids = pc.take(parents.column("_dlt_id"), pa.array(np.repeat(np.arange(parents.num_rows), 2)))
    return pa.table({
        "sku": COUNTRIES.take(pa.array(rng.integers(0, len(COUNTRIES), n))),
        "quantity": rng.integers(1, 5, n),
        "_dlt_parent_id": parent_ids,
        "_dlt_list_idx": np.tile(np.arange(2, dtype=np.int64), parents.num_rows),
        "_dlt_id": pc.binary_join_element_wise(parent_ids, pc.cast(pa.array(np.tile(np.arange(2), parents.num_rows)), pa.string()), "-"),
    })


def write_files(folder: Path, rows: int, rows_per_file: int, seed: int = 42, first_id: int = 0) -> list[Path]:
    """Parquet files of ``events`` (cached by content parameters)."""
    key = hashlib.sha1(f"{rows}/{rows_per_file}/{seed}/{first_id}".encode()).hexdigest()[:10]
    out = folder / f"events-{key}"
    done = out / ".complete"
    paths = [out / f"events.{i:05d}.parquet" for i in range((rows + rows_per_file - 1) // rows_per_file)]
    if done.exists():
        return paths
    out.mkdir(parents=True, exist_ok=True)
    for i, path in enumerate(paths):
        n = min(rows_per_file, rows - i * rows_per_file)
        pq.write_table(events(n, seed, first_id + i * rows_per_file), path, row_group_size=65_536)
    done.touch()
    return paths


SMALL_CHUNK_ROWS = 100_000


def write_small_files(folder: Path, files: int, rows_per_file: int, seed: int = 42) -> list[Path]:
    """``files`` parquet files of ``rows_per_file`` ``events`` rows each (ids contiguous across
    files), as producers flushing often write them; made from a few large tables sliced up
    (``events`` per file would spend minutes on text pools). Cached like ``write_files``."""
    key = hashlib.sha1(f"small/{files}/{rows_per_file}/{seed}".encode()).hexdigest()[:10]
    out = folder / f"small-{key}"
    done = out / ".complete"
    paths = [out / f"events.{i:06d}.parquet" for i in range(files)]
    if done.exists():
        return paths
    out.mkdir(parents=True, exist_ok=True)
    per_chunk = max(1, SMALL_CHUNK_ROWS // rows_per_file)
    for first in range(0, files, per_chunk):
        count = min(per_chunk, files - first)
        chunk = events(count * rows_per_file, seed, first * rows_per_file)
        for j in range(count):
            pq.write_table(chunk.slice(j * rows_per_file, rows_per_file), paths[first + j])
    done.touch()
    return paths
