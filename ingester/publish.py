"""Producer side: stage parquet files and put one event per file on the configured queue.

``stage`` copies a local file under the staging location (``<home>/staging`` or an
``s3://`` prefix) so the daemon can read it after the producer is gone; the event id is
derived from the load id, table and file name, so publishing the same load twice commits
it once. ``file_event`` decodes every page of a file it did not write (the producer pays for
the check once, where the file is), so the daemon registers it without decoding it again.
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from ingester.events import BRANCH_HINT, FileEvent, WriteDisposition, encode_event
from ingester.s3_objects import PutStream, store_for
from ingester.sources.base import EventQueue

COPY_CHUNK = 1024 * 1024


def event_id(load_id: str | None, table: str, file_name: str, size: int) -> str:
    basis = f"{load_id}/{table}/{file_name}" if load_id else f"{table}/{file_name}/{size}"
    return hashlib.blake2b(basis.encode(), digest_size=16).hexdigest()


class Stager:
    """Copies files to the staging location (local folder or S3 prefix)."""

    def __init__(self, staging: str, s3: pafs.S3FileSystem | None = None) -> None:
        self.staging = staging.rstrip("/")
        self._s3 = s3

    def stage(self, path: Path, relative: str) -> str:
        """Copy ``path`` to ``<staging>/<relative>``; returns the staged location. Idempotent."""
        target = f"{self.staging}/{relative}"
        parsed = urlparse(target)
        if parsed.scheme == "s3":
            if self._s3 is None:
                raise ValueError("staging on s3:// needs S3 settings (catalog.s3_*)")
            store = store_for(self._s3, parsed.netloc)
            if store is None:  # options only pyarrow has (role, proxy, CA file, default credentials)
                pafs.copy_files(str(path), f"{parsed.netloc}{parsed.path}", destination_filesystem=self._s3)
            else:  # one PutObject for a small file (pyarrow: three requests), its errors raised
                with open(path, "rb") as src, PutStream(store, parsed.path.lstrip("/"), target) as out:
                    shutil.copyfileobj(src, out, COPY_CHUNK)
        else:
            dest = Path(parsed.path)
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_suffix(dest.suffix + ".part")
            shutil.copyfile(path, tmp)
            tmp.replace(dest)
        return target


def file_event(
    path: Path,
    table: str,
    *,
    load_id: str | None = None,
    write_disposition: WriteDisposition = WriteDisposition.APPEND,
    primary_key: Sequence[str] = (),
    merge_key: Sequence[str] = (),
    columns: dict[str, dict[str, Any]] | None = None,
    namespace: str | None = None,
    keys_only: bool = False,
    written_here: bool = False,
    branch: str | None = None,
) -> FileEvent:
    """Event for a local parquet file (location set by ``Stager`` before publishing), marked
    ``verified``: every page is decoded here first, unless ``written_here`` (a dlt load
    package's files, written by dlt's normalizer). Its ``event_time`` is the file's modification
    time. Raises ``ValueError`` naming the file."""
    stat = path.stat()
    size = stat.st_size
    rows = _rows(path, decode=not written_here)
    return FileEvent(
        table=table,
        namespace=namespace,
        location=str(path),
        row_count=rows,
        byte_size=size,
        load_id=load_id,
        event_id=event_id(load_id, table, path.name, size),
        write_disposition=write_disposition,
        primary_key=tuple(primary_key),
        merge_key=tuple(merge_key),
        columns=columns or {},
        keys_only=keys_only,
        verified=True,
        branch=branch,
        event_time=stat.st_mtime,
    )


def _rows(path: Path, decode: bool) -> int:
    """The file's row count; with ``decode``, after decoding every page of every column."""
    try:
        parquet = pq.ParquetFile(path)
        if decode:
            for _ in parquet.iter_batches(batch_size=65_536):
                pass
        return parquet.metadata.num_rows
    except (pa.ArrowException, OSError) as exc:
        raise ValueError(f"{path}: not a readable parquet file: {exc}") from None


def publish(events: Iterable[FileEvent], stager: Stager, queue: EventQueue) -> int:
    """Stage each event's file and publish the events (keyed by table: one table's events stay
    in order). Keys-only events are delivered first, in a send of their own: no file reaches
    the queue before the keys that delete what it replaces. Returns the count."""
    staged = []
    for ev in events:
        assert ev.location is not None
        rel = f"{ev.load_id or 'files'}/{ev.table}/{Path(ev.location).name}"
        staged.append(replace(ev, location=stager.stage(Path(ev.location), rel)))
    count = 0
    for part in ([e for e in staged if e.keys_only], [e for e in staged if not e.keys_only]):
        if part:
            count += queue.put_many([encode_event(e) for e in part], [e.table.encode() for e in part])
    return count


def table_hints(table: dict[str, Any]) -> dict[str, Any]:
    """Disposition, keys, column hints and branch (``BRANCH_HINT``) of a dlt table schema, as
    event fields."""
    columns = {name: {k: v for k, v in col.items() if k != "name"} for name, col in table.get("columns", {}).items()}
    pk = [n for n, c in columns.items() if c.get("primary_key")]
    mk = [n for n, c in columns.items() if c.get("merge_key")]
    disposition = WriteDisposition(table.get("write_disposition") or "append")
    if disposition is WriteDisposition.MERGE and not (pk or mk):
        root = [n for n, c in columns.items() if c.get("root_key")]
        if root:
            mk = root
        else:
            disposition = WriteDisposition.APPEND
    return {"write_disposition": disposition, "primary_key": pk, "merge_key": mk, "columns": columns,
            "branch": table.get(BRANCH_HINT)}
