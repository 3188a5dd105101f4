"""Data files into a snapshot producer: arrow chunks encoded by pyiceberg's writer, and
parquet files registered as they are."""

from __future__ import annotations

import itertools
from collections import deque
from collections.abc import Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import pyarrow as pa
from pyiceberg.io import FileIO
from pyiceberg.io.pyarrow import _dataframe_to_data_files
from pyiceberg.manifest import DataFile
from pyiceberg.table import Table, Transaction, _parquet_files_to_data_files
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update.snapshot import _SnapshotProducer

SnapshotProducer = _SnapshotProducer
"""Any of pyiceberg's snapshot producers (fast append, overwrite, ours in ``producers``)."""


def parquet_data_files(metadata: TableMetadata, paths: Sequence[str], io: FileIO) -> Iterable[DataFile]:
    """``DataFile``s (with column metrics) of parquet files already under the table."""
    return _parquet_files_to_data_files(table_metadata=metadata, file_paths=list(paths), io=io)


class DataFileWriter:
    """Writes arrow chunks as data files into one producer (unique names across calls).

    Encoding runs in a small thread pool while the caller reads the next chunk; at most
    ``max_pending`` chunks wait, so memory stays bounded by (max_pending + 1) chunks.
    """

    def __init__(self, tx: Transaction, table: Table, producer: SnapshotProducer, max_pending: int = 2) -> None:  # type: ignore[type-arg]
        self._tx, self._table, self._producer = tx, table, producer
        self._counter = itertools.count(0)
        self._max_pending = max_pending
        self.rows = 0

    def _encode(self, df: pa.Table, first: int) -> list[DataFile]:
        return list(_dataframe_to_data_files(
            table_metadata=self._tx.table_metadata, df=df, io=self._table.io,
            write_uuid=self._producer.commit_uuid, counter=itertools.count(first),
        ))

    def write(self, chunks: Iterable[pa.Table]) -> None:
        pending: deque[Future[list[DataFile]]] = deque()
        with ThreadPoolExecutor(self._max_pending, thread_name_prefix="ingester-write") as pool:
            for df in chunks:
                if not df.num_rows:
                    continue
                self.rows += df.num_rows
                # leave room in the file counter: a chunk becomes at most 1000 files
                pending.append(pool.submit(self._encode, df, next(self._counter) * 1000))
                while len(pending) >= self._max_pending:
                    self._add(pending.popleft().result())
            while pending:
                self._add(pending.popleft().result())

    def _add(self, files: list[DataFile]) -> None:
        for data_file in files:
            self._producer.append_data_file(data_file)
