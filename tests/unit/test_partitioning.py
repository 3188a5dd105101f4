from __future__ import annotations

import pyarrow as pa
import pytest
from pyiceberg.transforms import BucketTransform, DayTransform, IdentityTransform, MonthTransform, TruncateTransform

from ingester.errors import SchemaConflict
from ingester.partitioning import parse_transform, spec_for
from ingester.schema import to_iceberg

SCHEMA = to_iceberg(pa.schema([("ts", pa.timestamp("us", tz="UTC")), ("region", pa.string()), ("uid", pa.int64())]))


def test_parse_transforms() -> None:
    assert parse_transform("bucket[10]") == BucketTransform(10)
    assert parse_transform("truncate[3]") == TruncateTransform(3)
    assert parse_transform("DAY") == DayTransform()
    with pytest.raises(ValueError, match="unknown partition transform"):
        parse_transform("week")
    with pytest.raises(ValueError):
        parse_transform("bucket[0]")


def test_defaults_month_for_time_identity_otherwise() -> None:
    spec = spec_for(SCHEMA, {"ts": {"partition": True}, "region": {"partition": True},
                             "uid": {"partition": True, "x-partition-transform": "bucket[4]"}})
    assert [f.transform for f in spec.fields] == [MonthTransform(), IdentityTransform(), BucketTransform(4)]
    assert [f.name for f in spec.fields] == ["ts_month", "region_identity", "uid_bucket_4"]
    assert [f.field_id for f in spec.fields] == [1000, 1001, 1002]


def test_dlt_iceberg_hints_flag_transform_and_field_name() -> None:
    """``x-partition`` marks a column as ``partition`` does; ``x-partition-name`` /
    ``partition_name`` name the field; the default names are dlt-iceberg's."""
    spec = spec_for(SCHEMA, {
        "ts": {"x-partition": True, "x-partition-transform": "day", "x-partition-name": "event_day"},
        "region": {"x-partition": True, "partition_transform": "truncate[2]"},
        "uid": {"partition": True, "partition_transform": "bucket[8]", "partition_name": "user_bucket"},
    })
    assert [(f.transform, f.name) for f in spec.fields] == [
        (DayTransform(), "event_day"), (TruncateTransform(2), "region_truncate_2"), (BucketTransform(8), "user_bucket"),
    ]
    assert spec_for(SCHEMA, {"region": {"x-partition": False}, "uid": {}}).is_unpartitioned()


def test_bad_hints_name_the_column() -> None:
    with pytest.raises(SchemaConflict, match="column 'region'.*does not apply"):
        spec_for(SCHEMA, {"region": {"partition": True, "x-partition-transform": "day"}})
    with pytest.raises(SchemaConflict, match="column 'nope'"):
        spec_for(SCHEMA, {"nope": {"partition": True}})
