"""As-is (zero-copy) registration: parquet files whose schema fits the table become data
files without rewriting. The bytes are linked or copied under the table's data folder first
(the table owns its files), after every page was decoded once (untrusted producers).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import unquote, urlparse

import pyarrow as pa
from pyiceberg.table import Table, TableProperties, Transaction

from ingester.commit.source_files import READ_BATCH_ROWS, BadFile, SourceFile
from ingester.iceberg_layer.datafiles import SnapshotProducer, parquet_data_files
from ingester.storage import raise_if_transient

COPY_BLOCK_BYTES = 8 * 1024 * 1024


def fits_as_is(files: Sequence[SourceFile], target: pa.Schema, table: Table) -> bool:
    """True when every file can be registered without rewriting (zero-copy)."""
    if not table.spec().is_unpartitioned():
        return False
    for f in files:
        if f.item.event.data is not None or not f.raw_schema.names:  # add_files reads column 0's stats
            return False
        for field in f.raw_schema:
            if field.name not in target.names or (field.metadata and b"PARQUET:field_id" in field.metadata):
                return False
            want = target.field(field.name).type
            if not (field.type.equals(want) or (pa.types.is_large_string(field.type) and pa.types.is_string(want))):
                return False
    return True


def verify_pages(files: Sequence[SourceFile]) -> None:
    """Decode every page (two files at a time): a file registered as-is with a corrupt page
    (its footer fine) would break every reader of the table. Raises ``BadFile``."""

    def decode(f: SourceFile) -> None:
        try:
            for _ in f.open(read_dictionary=sorted(f.dictionary)).iter_batches(batch_size=READ_BATCH_ROWS):
                pass
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise_if_transient(exc, f.item.event)
            raise BadFile(f, f"{f.describe()}: cannot read: {exc}") from None

    with ThreadPoolExecutor(2, thread_name_prefix="ingester-verify") as pool:
        for _ in pool.map(decode, files):
            pass


def copy_into_table(table: Table, files: Sequence[SourceFile], batch_id: str) -> list[str]:
    """Copy the files' bytes under the table's data folder; returns the new locations.

    Local to local on one filesystem is a hard link (the bytes are immutable, and the
    table's link survives the producer deleting its file). Names derive from the batch id,
    so a retried commit replaces its own copies."""
    paths = []
    for i, f in enumerate(files):
        dest = f"{table.location().rstrip('/')}/data/ingester-{batch_id}-{i:05d}.parquet"
        if not _link(f.location, dest):
            with f.open_raw() as src, table.io.new_output(dest).create(overwrite=True) as out:
                while block := src.read(COPY_BLOCK_BYTES):
                    out.write(block)
        paths.append(dest)
    return paths


def _link(source: str | None, dest: str) -> bool:
    if not (source and source.startswith("file://") and dest.startswith("file://")):
        return False
    # our locations are percent-encoded URIs (``canonical``); pyiceberg's are taken literally
    src, dst = Path(unquote(urlparse(source).path)), Path(urlparse(dest).path)
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.unlink(missing_ok=True)
        os.link(src, dst)
    except OSError:
        return False
    try:
        os.utime(dst)  # the link looks new: orphan cleanup spares files younger than its cut-off
    except OSError:
        dst.unlink(missing_ok=True)  # not ours to touch: copy the bytes instead
        return False
    return True


def name_mapped(tx: Transaction) -> None:
    """Files registered as-is carry no field ids: readers map their columns by name."""
    if tx.table_metadata.name_mapping() is None:
        tx.set_properties({TableProperties.DEFAULT_NAME_MAPPING: tx.table_metadata.schema().name_mapping.model_dump_json()})


def add_as_is(
    tx: Transaction, table: Table, producer: SnapshotProducer, files: Sequence[SourceFile], batch_id: str,  # type: ignore[type-arg]
    verify_files: bool,
) -> int:
    """Register ``files`` in ``producer`` without rewriting them (``name_mapped`` first);
    returns their rows."""
    paths = owned_copies(table, files, batch_id, verify_files)
    for data_file in parquet_data_files(tx.table_metadata, paths, table.io):
        producer.append_data_file(data_file)
    return sum(f.rows for f in files)


def owned_copies(table: Table, files: Sequence[SourceFile], batch_id: str, verify_files: bool) -> list[str]:
    """The table's own copies of ``files``, to register as-is; ``verify_files`` decodes every
    page first (untrusted producers)."""
    if verify_files:
        verify_pages(files)
    return copy_into_table(table, files, batch_id)
