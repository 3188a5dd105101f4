"""Joined parquet files: every file's bytes end to end under one footer, read back as the files were."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from thrift.Thrift import TType

from ingester.iceberg_layer.footers import MAGIC, Footer, read_footer, with_field_ids, write_footer
from ingester.iceberg_layer.joined import Unjoinable, joined_footer, joined_size, row_groups
from ingester.iceberg_layer.thrift_compact import ThriftList, edit_struct
from ingester.schema import to_iceberg

NESTED = pa.schema([
    ("id", pa.int64()), ("s", pa.string()), ("f", pa.float64()),
    ("st", pa.struct([("a", pa.int32()), ("b", pa.string())])),
    ("xs", pa.list_(pa.struct([("p", pa.float64())]))), ("m", pa.map_(pa.string(), pa.int64())),
])


def rows(first: int, n: int) -> pa.Table:
    return pa.table({
        "id": list(range(first, first + n)), "s": [f"v{i % 7}" for i in range(first, first + n)],
        "f": [i / 3 if i % 5 else None for i in range(first, first + n)],
        "st": [{"a": i, "b": str(i)} if i % 4 else None for i in range(first, first + n)],
        "xs": [[{"p": i * 1.5}] * (i % 3) for i in range(first, first + n)],
        "m": [[("k", i)] if i % 2 else [] for i in range(first, first + n)],
    }, NESTED)


def parquet(table: pa.Table, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def joined(files: list[bytes], ids: bool = True) -> bytes:
    """The files joined as ``ingester.commit.as_is`` writes them (with field ids)."""
    footers = [read_footer(pa.BufferReader(d), len(d)) for d in files]
    thrifts = [with_field_ids(f, to_iceberg(NESTED)).thrift if ids else f.thrift for f in footers]
    thrift = joined_footer([row_groups(t) for t in thrifts], [f.data_bytes for f in footers])
    out = io.BytesIO()
    out.write(MAGIC)
    for data, footer in zip(files, footers, strict=True):
        out.write(data[len(MAGIC):footer.data_bytes])
    write_footer(out, thrift)
    assert len(out.getvalue()) == joined_size([f.data_bytes for f in footers], thrift)
    return out.getvalue()


@pytest.mark.parametrize("kwargs", [{}, {"row_group_size": 7}, {"write_page_index": True}, {"compression": "zstd"},
                                    {"use_dictionary": False, "write_statistics": False}],
                         ids=["default", "several row groups", "page index", "zstd", "plain, no statistics"])
def test_joined_files_read_as_the_files_did(kwargs: dict[str, object]) -> None:
    tables = [rows(0, 20), rows(20, 1), rows(21, 33)]
    data = joined([parquet(t, **kwargs) for t in tables])
    read = pq.ParquetFile(pa.BufferReader(data))
    assert read.read().to_pylist() == pa.concat_tables(tables).to_pylist()
    sources = [pq.read_metadata(pa.BufferReader(parquet(t, **kwargs))) for t in tables]
    assert read.metadata.num_rows == 54
    assert read.metadata.num_row_groups == sum(m.num_row_groups for m in sources)
    groups = [m.row_group(i) for m in sources for i in range(m.num_row_groups)]
    for i, source in enumerate(groups):  # statistics and sizes as the producer wrote them
        group = read.metadata.row_group(i)
        assert group.num_rows == source.num_rows
        for c in range(group.num_columns):
            assert group.column(c).statistics == source.column(c).statistics
            assert group.column(c).total_compressed_size == source.column(c).total_compressed_size
        assert read.read_row_group(i).num_rows == source.num_rows  # found at its new offset
    assert read.schema_arrow.field("id").metadata[b"PARQUET:field_id"] == b"1"


def test_page_indexes_move_with_their_pages() -> None:
    tables = [rows(0, 50), rows(50, 50)]
    data = joined([parquet(t, write_page_index=True, data_page_size=64) for t in tables])
    read = pq.ParquetFile(pa.BufferReader(data), page_checksum_verification=True)
    assert read.metadata.row_group(1).column(0).has_offset_index and read.metadata.row_group(1).column(0).has_column_index
    dataset_read = pq.read_table(pa.BufferReader(data), filters=[("id", ">=", 90)])  # pruned by the page index
    assert dataset_read.column("id").to_pylist() == list(range(90, 100))


def test_row_group_ordinals_count_through_the_joined_file() -> None:
    """pyarrow writes no ordinals (only encrypted files need them); a writer that does gets
    them renumbered through the joined file, as if it had written it."""

    def with_ordinals(groups: ThriftList) -> ThriftList:
        for k, g in enumerate(groups.values):
            g[7] = (TType.I16, k)
        return groups

    files = [parquet(rows(0, 10), row_group_size=5), parquet(rows(10, 10), row_group_size=5)]
    footers = [read_footer(pa.BufferReader(d), len(d)) for d in files]
    thrift = joined_footer([row_groups(edit_struct(f.thrift, {4: with_ordinals})) for f in footers],
                           [f.data_bytes for f in footers])
    ordinals: list[int] = []

    def collect(groups: ThriftList) -> ThriftList:
        ordinals.extend(g[7][1] for g in groups.values)
        return groups

    edit_struct(thrift, {4: collect})
    assert ordinals == [0, 1, 2, 3]


def test_a_footer_naming_another_file_or_encryption_cannot_join() -> None:
    data = parquet(rows(0, 3))
    footer = read_footer(pa.BufferReader(data), len(data))

    def elsewhere(groups: ThriftList) -> ThriftList:
        for g in groups.values:
            for chunk in g[1][1].values:
                chunk[1] = (11, b"other.parquet")  # ColumnChunk.file_path
        return groups

    with pytest.raises(Unjoinable, match="another file"):
        row_groups(edit_struct(footer.thrift, {4: elsewhere}))
    with pytest.raises(Unjoinable, match="encryption"):
        # field 8 (encryption_algorithm, its id in the long form): an empty struct, then the end
        row_groups(footer.thrift[:-1] + b"\x0c\x10\x00\x00")
    with pytest.raises(Unjoinable):
        row_groups(footer.thrift[: len(footer.thrift) // 2])
    with pytest.raises(Unjoinable):
        row_groups(b"\x19\xfc" + b"\xff" * 40)


def test_layouts_differ_by_schema_and_metadata_not_by_rows() -> None:
    a, b = (Footer(0, read_footer(pa.BufferReader(d), len(d)).thrift) for d in (parquet(rows(0, 3)), parquet(rows(9, 30))))
    other = pa.table({"id": [1]})
    c = read_footer(pa.BufferReader(parquet(other)), len(parquet(other)))
    assert row_groups(a.thrift).layout == row_groups(b.thrift).layout
    assert row_groups(a.thrift).layout != row_groups(c.thrift).layout
    tagged = parquet(rows(0, 3).replace_schema_metadata({"producer": "x"}))
    assert row_groups(read_footer(pa.BufferReader(tagged), len(tagged)).thrift).layout != row_groups(a.thrift).layout
