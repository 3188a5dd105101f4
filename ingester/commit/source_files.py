"""Streaming a batch's files as bounded arrow chunks cast to the table schema.

Files are read record batch by record batch and grouped into chunks of at most
``write_chunk_bytes`` of arrow memory: a batch of any size is written with bounded memory.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.parquet as pq

from ingester.batch import Pending
from ingester.errors import TerminalError
from ingester.iceberg_layer import dictionaries as dc
from ingester.iceberg_layer.footers import Footer
from ingester.schema import cast_to, normalize_schema
from ingester.storage import raise_unless_the_files_fault

READ_BATCH_ROWS = 65_536


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A readable file of a batch: its event, normalised schema, rows and a way to open it."""

    item: Pending
    schema: pa.Schema
    raw_schema: pa.Schema
    rows: int
    open: Callable[..., pq.ParquetFile]
    """``open(read_dictionary=(), metadata=None)``: the parquet file, those columns read as
    dictionaries (``metadata``: its footer parsed, if at hand: not parsed again)."""
    open_raw: Callable[[], pa.NativeFile]
    location: str | None = None
    """Canonical ``file://`` or ``s3://`` location (None for inline data)."""
    dictionary: frozenset[str] = frozenset()
    """``dictionaries.dictionary_encoded`` of the file."""
    footer: Footer | None = None
    """The file's footer as read (registering it as-is writes a new one with field ids; its
    parsed form, 8x the bytes, is not held: ``Footer.metadata`` parses it where needed)."""
    null_columns: frozenset[str] = frozenset()
    """``null_columns`` of the file."""

    def describe(self) -> str:
        return self.item.event.describe()


def null_columns(metadata: pq.FileMetaData, raw_schema: pa.Schema) -> frozenset[str]:
    """Top-level primitive columns without a value (every row null, by the statistics)."""
    if not metadata.num_rows:
        return frozenset()
    names = {f.name for f in raw_schema if not pa.types.is_nested(f.type)}
    full: dict[str, bool] = {}
    for i in range(metadata.num_row_groups):
        group = metadata.row_group(i)
        for j in range(group.num_columns):
            chunk = group.column(j)
            if chunk.path_in_schema in names:
                stats = chunk.statistics
                nulls = stats is not None and stats.has_null_count and stats.null_count == group.num_rows
                full[chunk.path_in_schema] = full.get(chunk.path_in_schema, True) and nulls
    return frozenset(name for name, all_null in full.items() if all_null)


class BadFile(Exception):
    """A file failed while streaming (cast or decode): drop it and write the batch again."""

    def __init__(self, file: SourceFile, reason: str) -> None:
        super().__init__(reason)
        self.file = file


def file_batches(
    files: Sequence[SourceFile], target: pa.Schema, strict_casting: bool, columns: Sequence[str] | None = None,
    dictionaries: bool = False,
) -> Iterator[tuple[int, pa.Table]]:
    """(global row index of the first row, cast table) per record batch, in file order.
    With ``dictionaries`` repetitive dictionary-encoded string columns stay arrow
    dictionaries (``ingester.iceberg_layer.dictionaries``; the same columns in every batch)."""
    start = 0
    plain = pa.schema([target.field(c) for c in columns]) if columns is not None else target
    keep = dc.candidates(plain, ((f.schema, f.dictionary) for f in files)) if dictionaries else frozenset()
    probe = bool(keep)  # the first batch decides which candidates stay dictionaries
    wanted = dc.with_dictionaries(plain, keep)
    for f in files:
        try:
            read_cols = [c for c in (columns or f.raw_schema.names) if c in f.raw_schema.names]
            pf = f.open(read_dictionary=[c for c in read_cols if c in keep])
            for rb in pf.iter_batches(batch_size=READ_BATCH_ROWS, columns=read_cols):
                if probe and rb.num_rows:
                    keep, probe = dc.repetitive(rb, keep), False
                    wanted = dc.with_dictionaries(plain, keep)
                table = pa.Table.from_batches([rb])
                normal = dc.with_dictionaries(normalize_schema(table.schema, f.item.event.columns), keep)
                if not table.schema.equals(normal):
                    table = table.cast(normal)
                yield start, cast_to(table, wanted, f.describe(), strict_casting)
                start += rb.num_rows
        except TerminalError as exc:
            raise BadFile(f, str(exc)) from None
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, OSError) as exc:
            raise_unless_the_files_fault(exc, f.item.event)
            raise BadFile(f, f"{f.describe()}: cannot read: {exc}") from None


def chunked(batches: Iterator[pa.Table], write_chunk_bytes: int) -> Iterator[pa.Table]:
    """Group tables into chunks of about ``write_chunk_bytes`` (never more than that + one)."""
    pending: list[pa.Table] = []
    size = 0
    for t in batches:
        pending.append(t)
        size += t.nbytes
        if size >= write_chunk_bytes:
            yield pa.concat_tables(pending)
            pending, size = [], 0
    if pending:
        yield pa.concat_tables(pending)
