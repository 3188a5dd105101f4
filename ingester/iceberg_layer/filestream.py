"""Streaming data files: arrow tables in, Iceberg data files out, in bounded memory.

The caller's thread reads and casts; ``writers`` threads encode parquet, each into its own
file, each taking the next row group from one shared queue as soon as it is free (parquet
encoding is single-threaded per file, so this is what uses more than one core). A file is
closed after ``write_chunk_bytes`` of arrow data. Memory: one row group being gathered, one being
encoded per writer and ``QUEUE_DEPTH`` per writer waiting, whatever the input.
Unpartitioned tables only (partitioned writes go through pyiceberg's own splitting).

Parquet dictionary-encodes only the columns ``dictionaries.dictionary_worthy`` picks from
the first row group, and arrow dictionary columns are written as they are.
"""

from __future__ import annotations

import itertools
import queue
import threading
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa
from pyiceberg.io import FileIO, OutputFile
from pyiceberg.io.fileformat import FileFormatFactory, FileFormatWriter
from pyiceberg.io.pyarrow import ParquetFormatWriter, _to_requested_schema, pyarrow_to_schema
from pyiceberg.manifest import DataFile, DataFileContent, FileFormat
from pyiceberg.schema import Schema, sanitize_column_names
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.typedef import Properties, Record
from pyiceberg.types import DoubleType, FloatType

from ingester.iceberg_layer.datafiles import nan_count
from ingester.iceberg_layer.dictionaries import SAMPLE_ROWS, dictionary_worthy, unified, without_dictionaries

ROW_GROUP_ROWS = 128 * 1024
"""Near DuckDB's 122,880: every row group in the encode pipeline stays small, and columns
that parquet dictionary-encodes in full (``dictionary_worthy``) cost little per group."""
ROW_GROUP_BYTES = 32 * 1024 * 1024
QUEUE_DEPTH = 1
DEFAULT_WRITERS = 2
_POLL_S = 0.05


def row_groups(tables: Iterable[pa.Table], rows: int = ROW_GROUP_ROWS, max_bytes: int = ROW_GROUP_BYTES) -> Iterator[pa.Table]:
    """Coalesce small tables into row groups of about ``rows`` rows (or ``max_bytes``), each
    dictionary column with one dictionary (parquet then writes it without re-hashing)."""
    pending: list[pa.Table] = []
    n = size = 0
    for t in tables:
        if not t.num_rows:
            continue
        pending.append(t)
        n, size = n + t.num_rows, size + t.nbytes
        if n >= rows or size >= max_bytes:
            yield unified(pa.concat_tables(pending))
            pending, n, size = [], 0, 0
    if pending:
        yield unified(pa.concat_tables(pending))


class _ParquetWriter(ParquetFormatWriter):
    """pyiceberg's parquet writer, dictionary-encoding only ``dictionary_columns`` (None:
    all), without the stored arrow schema: arrow dictionary columns are written
    dictionary-encoded yet read back as plain strings, like any other data file."""

    def __init__(
        self, output_file: OutputFile, file_schema: Schema, properties: Properties, dictionary_columns: list[str] | None
    ) -> None:
        super().__init__(output_file, file_schema, properties)
        self._parquet_writer_kwargs["store_schema"] = False
        if dictionary_columns is not None:
            self._parquet_writer_kwargs["use_dictionary"] = dictionary_columns


@dataclass
class _OpenFile:
    path: str
    output: Any
    writer: FileFormatWriter
    nbytes: int = 0
    nans: dict[int, int] = field(default_factory=dict)
    """NaN values per float column (field id): the footer's statistics have none."""


class StreamingDataFiles:
    """Writes a stream of tables (all with one arrow schema that fits the table) as data
    files of ``metadata``'s table; file names carry ``write_uuid`` and a task counter."""

    def __init__(
        self, metadata: TableMetadata, io: FileIO, write_uuid: uuid.UUID, *,
        write_chunk_bytes: int, writers: int = DEFAULT_WRITERS,
    ) -> None:
        if not metadata.spec().is_unpartitioned():
            raise ValueError("streaming data files need an unpartitioned table")
        self._metadata, self._io, self._uuid = metadata, io, write_uuid
        self._write_chunk_bytes = write_chunk_bytes
        self._writers = max(1, writers)
        self._tasks = itertools.count()
        table_schema = metadata.schema()
        sanitized = sanitize_column_names(table_schema)
        self._file_schema: Schema = sanitized if sanitized != table_schema else table_schema
        self._format = FileFormatFactory.get(FileFormat.PARQUET)
        self._locations = load_location_provider(table_location=metadata.location, table_properties=metadata.properties)
        self._floats = {f.name: f.field_id for f in table_schema.fields if isinstance(f.field_type, (FloatType, DoubleType))}
        self._task_schema: Schema | None = None
        self._dictionary_columns: list[str] | None = None
        self.rows = 0

    def write(self, tables: Iterable[pa.Table]) -> list[DataFile]:
        """Blocks until every file is written; raises the first reading or writing error."""
        work: queue.Queue[pa.Table] = queue.Queue(self._writers * QUEUE_DEPTH)
        stop = threading.Event()
        with ThreadPoolExecutor(self._writers, thread_name_prefix="ingester-encode") as pool:
            writers = [pool.submit(self._drain, work, stop) for _ in range(self._writers)]
            try:
                for group in row_groups(tables, max_bytes=min(ROW_GROUP_BYTES, self._write_chunk_bytes)):
                    if self._task_schema is None:
                        self._task_schema = pyarrow_to_schema(
                            without_dictionaries(group.schema), name_mapping=self._metadata.schema().name_mapping,
                            downcast_ns_timestamp_to_us=True, format_version=self._metadata.format_version,
                        )
                        self._dictionary_columns = dictionary_worthy(self._with_field_ids(group.slice(0, SAMPLE_ROWS)))
                    self.rows += group.num_rows
                    self._put(work, writers, group)
            finally:  # the writers finish the queue and close their files, also when reading failed
                stop.set()
            return [data_file for w in writers for data_file in w.result()]

    @staticmethod
    def _put(work: queue.Queue[pa.Table], writers: list[Future[list[DataFile]]], group: pa.Table) -> None:
        """Blocks while every writer is busy; raises a writer's error if one died."""
        while True:
            for w in writers:
                if w.done():  # writers only end after ``stop``: this one failed
                    w.result()
            try:
                work.put(group, timeout=_POLL_S)
                return
            except queue.Full:
                continue

    def _drain(self, work: queue.Queue[pa.Table], stop: threading.Event) -> list[DataFile]:
        """One writer: takes the next row group whoever queued it, into its own open file."""
        files: list[DataFile] = []
        current: _OpenFile | None = None
        try:
            while True:
                try:
                    group = work.get(timeout=_POLL_S)
                except queue.Empty:
                    if stop.is_set():
                        break
                    continue
                if current is None:
                    current = self._open()
                current.writer.write(self._with_field_ids(group))
                current.nbytes += group.nbytes
                for name, field_id in self._floats.items():
                    current.nans[field_id] = current.nans.get(field_id, 0) + nan_count(group.column(name))
                if current.nbytes >= self._write_chunk_bytes:
                    files.append(self._close(current))
                    current = None
        except BaseException:
            if current is not None:
                current.writer.__exit__(Exception, None, None)  # closes the stream, result unused
            raise
        if current is not None:
            files.append(self._close(current))
        return files

    def _with_field_ids(self, group: pa.Table) -> pa.Table:
        assert self._task_schema is not None  # set by write() before the first group is queued
        batches = [
            _to_requested_schema(
                requested_schema=self._file_schema, file_schema=self._task_schema, batch=b,
                downcast_ns_timestamp_to_us=True, include_field_ids=True, format_model=self._format,
            )
            for b in group.to_batches()
        ]
        return pa.Table.from_batches(batches)

    def _open(self) -> _OpenFile:
        name = f"00000-{next(self._tasks)}-{self._uuid}.{self._format.file_extension()}"
        path = self._locations.new_data_location(data_file_name=name)
        output = self._io.new_output(path)
        return _OpenFile(path, output, _ParquetWriter(output, self._file_schema, self._metadata.properties, self._dictionary_columns))

    def _close(self, f: _OpenFile) -> DataFile:
        stats = f.writer.close()
        return DataFile.from_args(
            content=DataFileContent.DATA,
            file_path=f.path,
            file_format=FileFormat.PARQUET,
            partition=Record(),
            file_size_in_bytes=len(f.output),
            sort_order_id=None,
            spec_id=self._metadata.default_spec_id,
            equality_ids=None,
            key_metadata=None,
            **{**stats.to_serialized_dict(), "nan_value_counts": f.nans},
        )
