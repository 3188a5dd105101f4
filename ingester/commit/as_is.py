"""As-is (zero-copy) registration: parquet files whose schema fits the table become data files
without decoding or re-encoding a row.

The table owns its files: each one is copied under the table's data folder (a kernel-side
copy between local files) with a new footer that carries the table's field ids
(``ingester.iceberg_layer.footers``), so every reader maps its columns by id. Files from
untrusted producers have every page decoded once first: a corrupt page (its footer fine)
would break every reader of the table (files whose producer decoded every page, or wrote them,
are not decoded again: ``WriteOptions.must_verify``). The ``DataFile`` (column metrics) comes from the
footer that ``SnapshotCommitter.read`` already read: nothing is read twice.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import urlparse

import pyarrow as pa
from pyiceberg.io import FileIO
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, TableProperties, Transaction
from pyiceberg.table.metadata import TableMetadata

from ingester.commit.options import WriteOptions
from ingester.commit.source_files import READ_BATCH_ROWS, BadFile, SourceFile
from ingester.iceberg_layer.datafiles import SnapshotProducer, as_is_data_file, nan_count
from ingester.iceberg_layer.footers import IdFooter, Unmapped, with_field_ids, write_with_footer
from ingester.storage import file_map, file_threads, raise_if_transient

VERIFY_THREADS = 2


def as_is_footers(files: Sequence[SourceFile], target: pa.Schema, table: Table) -> list[IdFooter] | None:
    """The new footer of each file when every file can be registered as-is (its columns and
    types those of the table, a footer we can give the table's field ids), else None (also
    for no file, and for a partitioned or sorted table: its files are rewritten)."""
    if not files or not table.spec().is_unpartitioned() or not table.sort_order().is_unsorted:
        return None
    footers = []
    for f in files:
        if f.item.event.data is not None or f.footer is None or not f.raw_schema.names:  # stats start at column 0
            return None
        for field in f.raw_schema:
            if field.name not in target.names:
                return None
            want = target.field(field.name).type
            if not (field.type.equals(want) or (pa.types.is_large_string(field.type) and pa.types.is_string(want))):
                return None
        try:
            footers.append(with_field_ids(f.footer, table.schema()))
        except Unmapped:
            return None
    return footers


def scan_files(files: Sequence[SourceFile], options: WriteOptions) -> list[dict[str, int]]:
    """The NaN count of each top-level float column of each file (footers have none); for the
    files ``options.must_verify``, every page of every column is decoded on the way, else only
    the float columns are read. Two files at a time. Raises ``BadFile``."""

    def scan(f: SourceFile) -> dict[str, int]:
        verify_files = options.must_verify(f.item.event)
        floats = [field.name for field in f.raw_schema if pa.types.is_floating(field.type)]
        if not floats and not verify_files:
            return {}
        nans = dict.fromkeys(floats, 0)
        try:
            parquet = f.open(read_dictionary=sorted(f.dictionary) if verify_files else ())
            batches = parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=None if verify_files else floats,
                                           use_threads=False)  # the files run side by side already
            for batch in batches:
                for name in floats:
                    nans[name] += nan_count(batch.column(name))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise_if_transient(exc, f.item.event)
            raise BadFile(f, f"{f.describe()}: cannot read: {exc}") from None
        return nans

    return file_map(scan, files, file_threads((f.location for f in files), VERIFY_THREADS), "ingester-scan")


def name_mapped(tx: Transaction) -> None:
    """Readers map the columns of files without field ids (registered before ids were
    written, or by other tools) by name: keep a name mapping on the table."""
    if tx.table_metadata.name_mapping() is None:
        tx.set_properties({TableProperties.DEFAULT_NAME_MAPPING: tx.table_metadata.schema().name_mapping.model_dump_json()})


def add_as_is(
    tx: Transaction, table: Table, producer: SnapshotProducer, files: Sequence[SourceFile],  # type: ignore[type-arg]
    footers: Sequence[IdFooter], batch_id: str, options: WriteOptions,
) -> int:
    """Register ``files`` (with ``as_is_footers``) in ``producer`` (call ``name_mapped`` before
    opening it): the files ``options.must_verify`` have every page decoded first (``scan_files``); the table's
    copies are named by the batch id, so a retried commit replaces its own copies. Returns
    their rows."""
    nans = scan_files(files, options)
    folder = f"{table.location().rstrip('/')}/data"
    _make_folder(folder)
    base = f"{folder}/ingester-{batch_id}"

    def register(i: int) -> DataFile:
        return _copy(tx.table_metadata, table.io, files[i], footers[i], nans[i], f"{base}-{i:05d}.parquet")

    threads = file_threads([folder, *(f.location for f in files)], options.read_concurrency)
    for data_file in file_map(register, range(len(files)), threads, "ingester-copy"):
        producer.append_data_file(data_file)
    return sum(f.rows for f in files)


def _copy(metadata: TableMetadata, io: FileIO, f: SourceFile, footer: IdFooter, nans: dict[str, int], dest: str) -> DataFile:
    """The table's copy of ``f`` at ``dest``, with ``footer``; its ``DataFile``."""
    assert f.footer is not None and f.metadata is not None  # as_is_footers checked it
    try:
        with f.open_raw() as source, _create(io, dest) as out:
            size = write_with_footer(source, f.footer, footer, out)
    except ValueError as exc:  # the file changed since its footer was read; writing errors are not the file's
        raise BadFile(f, f"{f.describe()}: cannot copy: {exc}") from None
    nan_counts = {footer.leaf_ids[name]: n for name, n in nans.items()}
    return as_is_data_file(metadata, dest, size, f.metadata, footer.leaf_ids, nan_counts)


def _local_path(location: str) -> Path | None:
    parsed = urlparse(location)
    # pyiceberg's locations are taken literally, not percent-decoded
    return Path(parsed.path) if parsed.scheme in ("", "file") else None


def _make_folder(location: str) -> None:
    """The local folder ``location`` made once per batch (object stores have none)."""
    if (path := _local_path(location)) is not None:
        path.mkdir(parents=True, exist_ok=True)


def _create(io: FileIO, location: str) -> AbstractContextManager[BinaryIO]:
    """A new file at ``location`` (its folder made by ``_make_folder``): a plain local file (so
    the copy can stay in the kernel), or the table's FileIO output (S3)."""
    if (path := _local_path(location)) is not None:
        return path.open("wb")
    return cast(AbstractContextManager[BinaryIO], io.new_output(location).create(overwrite=True))
