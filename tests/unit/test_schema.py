from __future__ import annotations

import pyarrow as pa
import pytest

from ingester.errors import SchemaConflict
from ingester.schema import cast_to, evolution, normalize_schema, table_arrow_schema, to_iceberg


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
    table = to_iceberg(pa.schema([("id", pa.int32()), ("v", pa.float32()), ("s", pa.string())]))
    assert evolution(table, pa.schema([("id", pa.int32())]), "f", strict=True) is None
    change = evolution(table, pa.schema([("id", pa.int64()), ("new", pa.string())]), "f", strict=True)
    assert change is not None and change.names == ["id", "new"]
    with pytest.raises(SchemaConflict, match="column 's'"):
        evolution(table, pa.schema([("s", pa.int64())]), "f", strict=True)
    assert evolution(table, pa.schema([("s", pa.int64())]), "f", strict=False) is None


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
