"""As-is (zero-copy) registration: parquet files whose schema fits the table become data files
without decoding or re-encoding a row.

The table owns its files: each one is copied under the table's data folder (a kernel-side
copy between local files over ``storage.WHOLE_READ_BYTES``; a smaller one is read whole and
written) with a new footer that carries the table's field ids
(``ingester.iceberg_layer.footers``), so every reader maps its columns by id; small files of
one layout are joined into one file on the way (``ingester.commit.joining``). Files from
untrusted producers have every page decoded once first: a corrupt page (its footer fine)
would break every reader of the table (files whose producer decoded every page, or wrote them,
are not decoded again: ``WriteOptions.must_verify``). The ``DataFile`` (column metrics) comes from the
footer each table file is written with, parsed here one table file at a time (parsed, a footer
takes 8x its bytes; a batch holds a thousand): no file is read for it.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO, cast
from urllib.parse import urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.io import FileIO
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, TableProperties, Transaction

from ingester.commit.joining import Output, plan, target_file_bytes
from ingester.commit.options import WriteOptions
from ingester.commit.source_files import READ_BATCH_ROWS, BadFile, SourceFile
from ingester.iceberg_layer.datafiles import SnapshotProducer, as_is_data_file, nan_count
from ingester.iceberg_layer.footers import MAGIC, IdFooter, Unmapped, copy_pages, with_field_ids, write_footer, write_with_footer
from ingester.storage import file_map, file_threads, raise_unless_the_files_fault

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


def _nan_counts(f: SourceFile, footer: IdFooter, options: WriteOptions) -> dict[int, int]:
    """The NaN count of each top-level float column of ``f`` by field id (footers have none);
    for a file ``options.must_verify``, every page of every column is decoded on the way, else
    only the float columns are read (nothing, without any). Raises ``BadFile``."""
    assert f.footer is not None  # as_is_footers checked it
    verify_files = options.must_verify(f.item.event)
    floats = [field.name for field in f.raw_schema if pa.types.is_floating(field.type)]
    if not floats and not verify_files:
        return {}
    nans = dict.fromkeys(floats, 0)
    try:
        parsed = f.footer.metadata_again()  # the read parsed it once already
        parquet = f.open(read_dictionary=sorted(f.dictionary) if verify_files else (), metadata=parsed)
        batches = parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=None if verify_files else floats,
                                       use_threads=False)  # the files run side by side already
        for batch in batches:
            for name in floats:
                nans[name] += nan_count(batch.column(name))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
        raise_unless_the_files_fault(exc, f.item.event)
        raise BadFile(f, f"{f.describe()}: cannot read: {exc}") from None
    return {footer.leaf_ids[name]: n for name, n in nans.items()}


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
    opening it). First the NaN counts of each file (the files ``options.must_verify`` have every
    page decoded), two files at a time when they are remote; only when every file passed, the
    table's files (``joining.plan``: small files of one layout joined, others one copy each),
    named by the batch id, so a retried commit replaces its own; each ``DataFile``'s metrics
    come from the footer it was written with. Returns the rows."""
    folder = f"{table.location().rstrip('/')}/data"
    base = f"{folder}/ingester-{batch_id}"
    metadata = tx.table_metadata
    outputs = plan(files, footers, target_file_bytes(metadata.properties))

    def counted(i: int) -> dict[int, int]:
        return _nan_counts(files[i], footers[i], options)

    scan_threads = file_threads((f.location for f in files), VERIFY_THREADS)
    nans = file_map(counted, range(len(files)), scan_threads, "ingester-scan")
    _make_folder(folder)

    def written(o: int) -> DataFile:
        output, path = outputs[o], f"{base}-{o:05d}.parquet"
        _write(table.io, [files[i] for i in output.files], footers[output.files[0]], output, path)
        nan_counts: dict[int, int] = {}
        for i in output.files:
            for field_id, n in nans[i].items():
                nan_counts[field_id] = nan_counts.get(field_id, 0) + n
        return as_is_data_file(metadata, path, output.size, output.parsed(files), footers[output.files[0]].leaf_ids,
                               nan_counts)

    threads = file_threads([folder, *(f.location for f in files)], options.read_concurrency)
    for data_file in file_map(written, range(len(outputs)), threads, "ingester-copy"):
        producer.append_data_file(data_file)
    return sum(f.rows for f in files)


def _write(io: FileIO, files: Sequence[SourceFile], footer: IdFooter, output: Output, dest: str) -> None:
    """The table's file ``output`` at ``dest``: one file with its new ``footer``, or several joined."""
    try:
        with _create(io, dest) as out:
            if output.thrift is None:
                f = files[0]
                assert f.footer is not None  # as_is_footers checked it
                with f.open_raw() as source:
                    write_with_footer(source, f.footer, footer, out)
                return
            out.write(MAGIC)
            for f in files:
                assert f.footer is not None
                with f.open_raw() as source:
                    try:
                        copy_pages(source, out, f.footer.data_bytes)
                    except ValueError as exc:  # this one of the files changed since its footer was read
                        raise BadFile(f, f"{f.describe()}: cannot copy: {exc}") from None
            write_footer(out, output.thrift)
    except ValueError as exc:  # the file changed since its footer was read; writing errors are not the file's
        raise BadFile(files[0], f"{files[0].describe()}: cannot copy: {exc}") from None


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
