"""Footers with Iceberg field ids: the same data pages, every reader maps columns by id."""

from __future__ import annotations

import io
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingester.iceberg_layer.footers import Footer, Unmapped, copy_size, read_footer, with_field_ids, write_with_footer
from ingester.iceberg_layer.thrift_compact import edit_struct
from ingester.schema import to_iceberg

NESTED = pa.schema([
    ("id", pa.int64()), ("st", pa.struct([("a", pa.int32()), ("b", pa.string())])),
    ("xs", pa.list_(pa.struct([("p", pa.float64())]))), ("m", pa.map_(pa.string(), pa.int64())),
])
ROWS = {"id": [1, 2], "st": [{"a": 1, "b": "x"}, None], "xs": [[{"p": 1.5}], None], "m": [[("k", 7)], None]}


def parquet_bytes(table: pa.Table, **kwargs: object) -> bytes:
    buf = io.BytesIO()
    pq.write_table(table, buf, **kwargs)  # type: ignore[arg-type]
    return buf.getvalue()


def footer_of(data: bytes) -> Footer:
    return read_footer(pa.BufferReader(data), len(data))


def rewritten(data: bytes, schema: pa.Schema) -> bytes:
    footer = footer_of(data)
    out = io.BytesIO()
    size = write_with_footer(pa.BufferReader(data), footer, with_field_ids(footer, to_iceberg(schema)), out)
    assert size == len(out.getvalue())
    return out.getvalue()


def test_field_ids_go_onto_every_node_and_the_rows_stay_the_same() -> None:
    data = parquet_bytes(pa.table(ROWS, NESTED))
    new = rewritten(data, NESTED)
    read = pq.read_table(pa.BufferReader(new))
    assert read.to_pylist() == pa.table(ROWS, NESTED).to_pylist()
    ice = to_iceberg(NESTED)
    got = {f.name: int(f.metadata[b"PARQUET:field_id"]) for f in read.schema}
    assert got == {f.name: f.field_id for f in ice.fields}
    st = read.schema.field("st").type
    assert [int(f.metadata[b"PARQUET:field_id"]) for f in st] == [f.field_id for f in ice.find_field("st").field_type.fields]
    element = read.schema.field("xs").type.value_field
    assert int(element.metadata[b"PARQUET:field_id"]) == ice.find_field("xs").field_type.element_id
    footer = footer_of(data)
    assert new[:footer.data_bytes] == data[:footer.data_bytes]


def test_leaf_ids_name_every_column_chunk_by_its_path() -> None:
    data = parquet_bytes(pa.table(ROWS, NESTED))
    ids = with_field_ids(footer_of(data), to_iceberg(NESTED)).leaf_ids
    meta = pq.read_metadata(pa.BufferReader(data))
    assert sorted(ids) == sorted(meta.row_group(0).column(i).path_in_schema for i in range(meta.num_columns))


def test_the_stored_arrow_schema_goes_only_for_nested_files() -> None:
    flat = pa.table({"id": [1], "s": ["x"]})
    assert b"ARROW:schema" in pq.read_metadata(pa.BufferReader(rewritten(parquet_bytes(flat), flat.schema))).metadata
    nested = pq.read_metadata(pa.BufferReader(rewritten(parquet_bytes(pa.table(ROWS, NESTED)), NESTED)))
    assert b"ARROW:schema" not in (nested.metadata or {})


def test_what_cannot_be_mapped_by_name_is_refused() -> None:
    table = pa.table({"id": [1], "extra": [2]})
    with pytest.raises(Unmapped, match="'extra' is not in the table"):
        with_field_ids(footer_of(parquet_bytes(table)), to_iceberg(pa.schema([("id", pa.int64())])))
    with_ids = pa.table({"id": pa.array([1], pa.int64())}).cast(pa.schema([pa.field("id", pa.int64(), metadata={"PARQUET:field_id": "9"})]))
    with pytest.raises(Unmapped, match="field id already"):
        with_field_ids(footer_of(parquet_bytes(with_ids)), to_iceberg(pa.schema([("id", pa.int64())])))
    lists = pa.table({"xs": pa.array([[1, 2]], pa.list_(pa.int64()))})
    older_arrow = parquet_bytes(lists, use_compliant_nested_type=False)  # three levels, the element named "item"
    assert with_field_ids(footer_of(older_arrow), to_iceberg(lists.schema)).leaf_ids == {"xs.list.item": 2}


def test_garbage_is_not_a_footer(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a parquet file"):
        read_footer(pa.BufferReader(b"x" * 100), 100)
    with pytest.raises(Unmapped, match="unreadable footer"):
        with_field_ids(Footer(0, b"\xff\xfe garbage"), to_iceberg(pa.schema([("id", pa.int64())])))


def test_edit_struct_keeps_every_other_byte() -> None:
    data = parquet_bytes(pa.table(ROWS, NESTED))
    footer = footer_of(data)
    assert edit_struct(footer.thrift, {2: lambda v: v}) == footer.thrift
    assert edit_struct(footer.thrift, {2: lambda v: v, 5: lambda v: v}) == footer.thrift


def test_a_schema_seen_before_is_not_edited_again_and_gives_the_same_footer() -> None:
    """A stream's files share a schema: its ids are assigned once per table schema; the footers
    (row counts and statistics differ per file) come out as a fresh edit makes them."""
    from ingester.iceberg_layer import footers

    data = pa.table({"id": pa.array([1, 2], pa.int64()), "tags": pa.array([["a"], []], pa.list_(pa.string()))})
    schema = to_iceberg(data.schema)
    first, second = (footer_of(parquet_bytes(data.slice(0, n))) for n in (1, 2))
    fresh = with_field_ids(second, schema)
    footers._edited.clear()
    assert with_field_ids(first, schema).leaf_ids == fresh.leaf_ids
    (known,) = footers._known(schema)
    again = with_field_ids(second, schema)  # a memo hit: same schema bytes, other row groups
    assert footers._known(schema) == [known]
    assert (again.thrift, again.leaf_ids) == (fresh.thrift, fresh.leaf_ids)
    other = to_iceberg(pa.schema([("tags", data.schema.field("tags").type), ("id", pa.int64())]))
    assert with_field_ids(second, other).leaf_ids != fresh.leaf_ids  # another table schema: its own ids


def test_a_second_parse_gives_the_same_footer(monkeypatch: pytest.MonkeyPatch) -> None:
    """``metadata_again`` (pyarrow's unpickling parse, or ``metadata`` without it) gives the
    footer ``metadata`` gives."""
    from ingester.iceberg_layer import footers

    data = parquet_bytes(pa.table(ROWS, NESTED), row_group_size=1)
    first = footer_of(data).metadata()
    fast = footer_of(data).metadata_again()
    monkeypatch.setattr(footers, "_from_thrift", None)
    slow = footer_of(data).metadata_again()
    assert first.equals(fast) and first.equals(slow) and first.equals(pq.read_metadata(pa.BufferReader(data)))
    assert fast.num_row_groups == 2 and fast.row_group(1).column(0).statistics.min == 2
    assert fast.schema.to_arrow_schema().equals(NESTED)


def test_copy_size_is_what_write_with_footer_writes() -> None:
    data = parquet_bytes(pa.table(ROWS, NESTED))
    footer = footer_of(data)
    new = with_field_ids(footer, to_iceberg(NESTED))
    out = io.BytesIO()
    assert write_with_footer(pa.BufferReader(data), footer, new, out) == copy_size(footer, new) == len(out.getvalue())
