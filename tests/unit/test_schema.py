from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog

from ingester.errors import SchemaConflict
from ingester.schema import cast_to, evolution, evolved, interned, normalize_schema, table_arrow_schema, to_iceberg


def test_normalize_makes_iceberg_friendly_optional_types() -> None:
    s = pa.schema([
        pa.field("ts", pa.timestamp("ns", tz="UTC"), nullable=False),
        pa.field("d", pa.dictionary(pa.int32(), pa.string())),
        pa.field("u", pa.uint32()),
        pa.field("n", pa.null()),
        pa.field("s", pa.large_string()),
    ])
    out = normalize_schema(s, {"n": {"data_type": "bigint"}})
    assert out.types == [pa.timestamp("us", tz="UTC"), pa.string(), pa.int64(), pa.int64(), pa.string()]
    assert all(f.nullable for f in out)


def test_evolution_adds_columns_promotes_and_refuses_conflicts() -> None:
    table = table_arrow_schema(to_iceberg(pa.schema([("id", pa.int32()), ("v", pa.float32()), ("s", pa.string())])))
    assert evolution(table, pa.schema([("id", pa.int32())]), "f", strict=True) is None
    change = evolution(table, pa.schema([("id", pa.int64()), ("new", pa.string())]), "f", strict=True)
    assert change is not None and change.names == ["id", "new"]
    with pytest.raises(SchemaConflict, match="column 's'"):
        evolution(table, pa.schema([("s", pa.int64())]), "f", strict=True)
    assert evolution(table, pa.schema([("s", pa.int64())]), "f", strict=False) is None
    assert evolution(table, pa.schema([("s", pa.int64())]), "f", strict=True, null_columns={"s"}) is None  # no value


def test_evolved_replaces_and_adds_columns_in_place() -> None:
    table = pa.schema([("id", pa.int32()), ("st", st(("a", pa.int32())))])
    change = pa.schema([("st", st(("a", pa.int32()), ("b", pa.string()))), ("new", pa.bool_())])
    assert evolved(table, change) == pa.schema([("id", pa.int32()), *change])


def test_cast_fills_missing_columns_and_names_the_bad_column() -> None:
    target = table_arrow_schema(to_iceberg(pa.schema([("id", pa.int64()), ("name", pa.string())])))
    out = cast_to(pa.table({"id": pa.array([1, 2], pa.int32())}), target, "file.parquet", strict=True)
    assert out.column("name").null_count == 2 and out.schema == target
    with pytest.raises(SchemaConflict, match=r"file.parquet: column 'id'.*strict"):
        cast_to(pa.table({"id": ["1"]}), target, "file.parquet", strict=True)
    assert cast_to(pa.table({"id": ["7"]}), target, "f", strict=False).column("id").to_pylist() == [7]
    with pytest.raises(SchemaConflict, match="column 'id'.*cannot cast"):
        cast_to(pa.table({"id": ["seven"]}), target, "f", strict=False)
    with pytest.raises(SchemaConflict, match="column 'extra'"):
        cast_to(pa.table({"id": [1], "extra": [1]}), target, "f", strict=False)
    nulls = cast_to(pa.table({"id": pa.nulls(2, pa.string())}), target, "f", strict=True)  # no value to lose
    assert nulls.column("id").type == pa.int64() and nulls.column("id").null_count == 2


def st(*fields: tuple[str, pa.DataType]) -> pa.StructType:
    return pa.struct(list(fields))


NESTED = pa.schema([
    ("st", st(("a", pa.int32()))),
    ("items", pa.list_(st(("sku", pa.string()), ("q", pa.int32()), ("price", pa.decimal128(10, 2))))),
    ("attrs", pa.map_(pa.string(), st(("x", pa.float32())))),
])


@pytest.mark.parametrize("strict", [True, False])
def test_evolution_grows_nested_types_keeping_the_rest_of_the_table_type(strict: bool) -> None:
    table = table_arrow_schema(to_iceberg(NESTED))
    incoming = normalize_schema(pa.schema([
        ("st", st(("a", pa.int16()), ("b", pa.string()))),  # new field; a narrower than the table
        ("items", pa.list_(st(("q", pa.int64()), ("price", pa.decimal128(18, 2)), ("tax", pa.float64())))),
        ("attrs", pa.map_(pa.string(), st(("x", pa.float64()), ("y", pa.list_(pa.int32()))))),
        ("extra", st(("z", pa.bool_()))),  # a new nested column
    ]))
    change = evolution(table, incoming, "f", strict=strict)
    assert change is not None
    assert change.field("st").type == st(("a", pa.int32()), ("b", pa.string()))
    assert change.field("items").type == pa.list_(
        st(("sku", pa.string()), ("q", pa.int64()), ("price", pa.decimal128(18, 2)), ("tax", pa.float64())))
    assert change.field("attrs").type == pa.map_(pa.string(), st(("x", pa.float64()), ("y", pa.list_(pa.int32()))))
    assert change.field("extra").type == st(("z", pa.bool_()))
    assert evolution(table, normalize_schema(pa.schema([("st", st(("a", pa.int8())))])), "f", strict=strict) is None


@pytest.mark.parametrize(("incoming", "path", "strict_only"), [
    (pa.schema([("st", st(("a", pa.string())))]), "st.a", True),
    (pa.schema([("items", pa.list_(st(("price", pa.decimal128(12, 3)))))]), "items.element.price", True),
    (pa.schema([("attrs", pa.map_(pa.string(), st(("x", pa.int64()))))]), "attrs.value.x", True),
    (pa.schema([("attrs", pa.map_(pa.int64(), st(("x", pa.float32()))))]), "attrs.key", True),
    (pa.schema([("st", pa.string())]), "st", False),
    (pa.schema([("items", pa.list_(st(("sku", st(("id", pa.int64()))))))]), "items.element.sku", False),
])
def test_evolution_names_the_column_path_a_value_cannot_fit(incoming: pa.Schema, path: str, strict_only: bool) -> None:
    table = table_arrow_schema(to_iceberg(NESTED))
    with pytest.raises(SchemaConflict, match=f"column '{path}'"):
        evolution(table, normalize_schema(incoming), "f", strict=True)
    if strict_only:  # non-strict: the safe cast on write checks each value instead
        assert evolution(table, normalize_schema(incoming), "f", strict=False) is None
    else:
        with pytest.raises(SchemaConflict, match=f"column '{path}'"):
            evolution(table, normalize_schema(incoming), "f", strict=False)


def test_map_keys_never_evolve() -> None:
    table = table_arrow_schema(to_iceberg(pa.schema([("m", pa.map_(pa.int32(), pa.string()))])))
    wider_keys = pa.schema([("m", pa.map_(pa.int64(), pa.string()))])
    for strict in (True, False):
        with pytest.raises(SchemaConflict, match="column 'm.key': map keys int64 cannot change"):
            evolution(table, wider_keys, "f", strict=strict)


def test_evolution_applied_by_pyiceberg_keeps_field_ids_and_adds_nested_fields(tmp_path: Path) -> None:
    catalog = SqlCatalog("c", uri=f"sqlite:///{tmp_path / 'c.db'}", warehouse=tmp_path.as_uri())
    catalog.create_namespace("ns")
    table = catalog.create_table(("ns", "t"), schema=to_iceberg(NESTED))
    before = {name: table.schema().find_field(name).field_id for name in ("st.a", "items.element.q", "attrs.value.x")}
    change = evolution(table_arrow_schema(table.schema()), normalize_schema(pa.schema([
        ("st", st(("b", pa.string()))),
        ("items", pa.list_(st(("q", pa.int64()), ("tax", pa.float64())))),
        ("attrs", pa.map_(pa.string(), st(("y", pa.int32())))),
    ])), "f", strict=True)
    assert change is not None
    with table.update_schema() as update:
        update.union_by_name(change)
    schema = table.schema()
    assert {name: schema.find_field(name).field_id for name in before} == before
    assert str(schema.find_field("items.element.q").field_type) == "long"
    for name in ("st.b", "items.element.tax", "attrs.value.y"):
        assert schema.find_field(name).optional


def test_cast_fills_missing_nested_fields_and_never_drops_one() -> None:
    target = table_arrow_schema(to_iceberg(pa.schema([
        ("st", st(("a", pa.int64()), ("b", pa.string()))),
        ("items", pa.list_(st(("q", pa.int64()),))),
    ])))
    data = pa.table({
        "st": pa.array([{"a": 1}, None], st(("a", pa.int32()))),
        "items": pa.array([[{"q": 2}], []], pa.list_(st(("q", pa.int32())))),
    })
    out = cast_to(data, target, "f", strict=True)
    assert out.to_pylist() == [{"st": {"a": 1, "b": None}, "items": [{"q": 2}]}, {"st": None, "items": []}]
    wider = pa.table({"st": pa.array([{"a": 1, "c": 2.5}], st(("a", pa.int64()), ("c", pa.float64())))})
    for strict in (True, False):
        with pytest.raises(SchemaConflict, match="column 'st.c': field is not in the table schema"):
            cast_to(wider, target, "f", strict=strict)


def test_cast_names_the_nested_path_of_a_lossy_or_failing_value() -> None:
    target = table_arrow_schema(to_iceberg(pa.schema([
        ("items", pa.list_(st(("q", pa.int32()),))),
        ("attrs", pa.map_(pa.string(), st(("x", pa.float64()),))),
    ])))
    lossy = pa.table({"items": pa.array([[{"q": 2**40}]], pa.list_(st(("q", pa.int64()),)))})
    with pytest.raises(SchemaConflict, match=r"f: column 'items.element.q'.*strict"):
        cast_to(lossy, target, "f", strict=True)
    with pytest.raises(SchemaConflict, match="column 'items.element.q': cannot cast"):
        cast_to(lossy, target, "f", strict=False)  # the value does not fit an int
    text = pa.table({"attrs": pa.array([[("k", {"x": "1.5"})], [("j", {"x": "abc"})]], pa.map_(pa.string(), st(("x", pa.string()),)))})
    with pytest.raises(SchemaConflict, match="column 'attrs.value.x': cannot cast"):
        cast_to(text, target, "f", strict=False)
    fine = cast_to(text.slice(0, 1), target, "f", strict=False)  # arrow alone fails on the hidden row
    assert fine.column("attrs").to_pylist() == [[("k", {"x": 1.5})]]


def test_equal_schemas_are_one_object_but_metadata_tells_them_apart() -> None:
    def make(meta: str | None = None, field_meta: str | None = None) -> pa.Schema:
        f = pa.field("x", pa.int64(), metadata={"k": field_meta} if field_meta else None)
        return pa.schema([f, pa.field("s", pa.string())], metadata={"m": meta} if meta else None)

    assert interned(make()) is interned(make())
    assert interned(make("1")) is not interned(make("2")) and interned(make("1")).metadata == {b"m": b"1"}
    assert interned(make(field_meta="a")).field("x").metadata == {b"k": b"a"}
    assert interned(make(field_meta="b")).field("x").metadata == {b"k": b"b"}
