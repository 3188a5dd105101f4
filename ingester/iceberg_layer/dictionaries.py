"""Keeping dictionary-encoded string columns as arrow dictionaries through a rewrite.

A dlt file stores repetitive strings (countries, titles, load ids) dictionary-encoded. Read
as plain strings, every value is materialised and the parquet writer hashes every value
again to rebuild the dictionary; read as arrow dictionaries, the writer takes dictionary and
indices as they are. Which columns: string columns with a dictionary page in every row group
of every file (``candidates``), minus those whose first batch shows few repeats
(``repetitive``): a unique id column is cheaper as plain strings.

The writer side: parquet tries a dictionary for every column and gives up only after its
dictionary page is full, having hashed every value of ids, timestamps and measures up to
then. ``dictionary_worthy`` picks the columns worth a dictionary from a sample instead.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

MIN_REPEATS = 2
"""A column stays a dictionary when each value repeats this often on average."""
SAMPLE_ROWS = 65_536


def dictionary_encoded(metadata: pq.FileMetaData) -> frozenset[str]:
    """Top-level string columns with a dictionary page in every row group of the file."""
    names = set()
    for i in range(metadata.num_columns):
        col = metadata.schema.column(i)
        if col.physical_type != "BYTE_ARRAY" or col.max_repetition_level or "." in col.path:
            continue
        chunks = [metadata.row_group(g).column(i) for g in range(metadata.num_row_groups)]
        if chunks and all(c.has_dictionary_page for c in chunks):
            names.add(col.path)
    return frozenset(names)


def candidates(target: pa.Schema, files: Iterable[tuple[pa.Schema, frozenset[str]]]) -> frozenset[str]:
    """String columns of ``target`` that every file holding them (its normalised schema,
    its ``dictionary_encoded`` columns) stores dictionary-encoded as a string column."""
    files = list(files)
    keep = set()
    for field in target:
        holders = [(schema, encoded) for schema, encoded in files if field.name in schema.names]
        if pa.types.is_string(field.type) and holders and all(
            field.name in encoded and schema.field(field.name).type.equals(field.type) for schema, encoded in holders
        ):
            keep.add(field.name)
    return frozenset(keep)


def repetitive(batch: pa.RecordBatch, names: Collection[str]) -> frozenset[str]:
    """Those of ``names`` read as dictionaries in ``batch`` whose values repeat enough."""
    keep = set()
    for name in names:
        col = batch.column(name) if name in batch.schema.names else None
        if isinstance(col, pa.DictionaryArray) and len(col.dictionary) * MIN_REPEATS <= len(col):
            keep.add(name)
    return frozenset(keep)


def with_dictionaries(schema: pa.Schema, names: Collection[str]) -> pa.Schema:
    """``schema`` with the named (string) columns as arrow dictionaries."""
    return pa.schema([f.with_type(pa.dictionary(pa.int32(), f.type)) if f.name in names else f for f in schema])


def without_dictionaries(schema: pa.Schema) -> pa.Schema:
    """``schema`` with dictionary columns as their value type (Iceberg has no dictionaries)."""
    return pa.schema([f.with_type(f.type.value_type) if pa.types.is_dictionary(f.type) else f for f in schema])


def unified(table: pa.Table) -> pa.Table:
    """``table`` with one dictionary per dictionary column (parquet then writes it as is)."""
    return table.unify_dictionaries() if any(pa.types.is_dictionary(f.type) for f in table.schema) else table


def dictionary_worthy(table: pa.Table) -> list[str] | None:
    """Columns to dictionary-encode in parquet: arrow dictionaries, and columns whose first
    ``SAMPLE_ROWS`` values repeat ``MIN_REPEATS`` times on average. None (parquet's default,
    every column) when a column is nested: its leaves are named by paths, not names."""
    sample = table.slice(0, SAMPLE_ROWS)
    names = []
    for field, col in zip(sample.schema, sample.columns):
        if pa.types.is_nested(field.type):
            return None
        if pa.types.is_dictionary(field.type) or _distinct(col) * MIN_REPEATS <= len(col):
            names.append(field.name)
    return names


def _distinct(col: pa.ChunkedArray) -> int:
    """Distinct values (null counts as one); 0 for a type arrow cannot count (a dictionary then)."""
    try:
        return int(pc.count_distinct(col, mode="all").as_py())
    except pa.ArrowNotImplementedError:
        return 0
