"""The rows the matrix feeds in: awkward types and names, partition columns, evolving and keyed rows.

Every generator returns an Arrow table (one parquet file, or one dlt item); `id` is unique within
a call. Values cycle through four variants per column, the fourth of most columns null.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from typing import Any

import pyarrow as pa

UTC = timezone.utc
DEC_MAX = Decimal("99999999999999999999999999999.999999999")
DEC_MIN = Decimal("-99999999999999999999999999999.999999999")  # not -DEC_MAX: unary minus rounds to 28 digits
PAIR = pa.struct([("a", pa.int32()), ("b", pa.string())])

TIMESTAMPS = [datetime(1969, 12, 31, 23, 59, 59, 999999), datetime(2300, 1, 1), datetime(2024, 2, 29, 12, 34, 56, 789012), None]
NS_EPOCH = [-1_000, 9_000_000_000_000_000_000, 1_709_210_096_789_012_000, None]  # whole microseconds, as ns


def _cycle(values: Sequence[Any], n: int, offset: int = 0) -> list[Any]:
    return [values[(i + offset) % len(values)] for i in range(n)]


def awkward(ids: Sequence[int], *, version: int = 0, registrable: bool = True) -> pa.Table:
    """Every awkward type and name. `version` shifts the values (an update of the same ids).
    `registrable=False` adds columns no file can be registered with as-is (their table type
    differs from the file's: uint32, ns timestamps, an all-null column)."""
    n, v = len(ids), version
    columns: dict[str, pa.Array] = {
        "id": pa.array(ids, pa.int64()),
        "ts": pa.array(_cycle(TIMESTAMPS, n, v), pa.timestamp("us")),
        "tstz": pa.array([t and t.replace(tzinfo=UTC) for t in _cycle(TIMESTAMPS, n, v + 1)], pa.timestamp("us", "UTC")),
        "d": pa.array(_cycle([date(1, 1, 1), date(9999, 12, 31), date(2024, 2, 29), None], n, v), pa.date32()),
        "t": pa.array(_cycle([time(0, 0), time(23, 59, 59, 999999), time(12, 0, 0, 1), None], n, v), pa.time64("us")),
        "dec": pa.array(_cycle([DEC_MAX, DEC_MIN, Decimal("0.000000001"), None], n, v), pa.decimal128(38, 9)),
        "bin": pa.array(_cycle([b"", b"\x00\xff", b"abc", None], n, v), pa.binary()),
        "f32": pa.array(_cycle([float("-inf"), 3.4028234663852886e38, 1.5, None], n, v), pa.float32()),
        "f64": pa.array(_cycle([float("nan"), -0.0, float("inf"), None], n, v), pa.float64()),
        "s": pa.array(_cycle(["", "ünï列 \t\n\x01", "a'b\"c\\", None], n, v), pa.string()),
        "m": pa.array(_cycle([[("a", 1), ("b", None)], [], None, [("z", -1)]], n, v), pa.map_(pa.string(), pa.int32())),
        "ls": pa.array(
            _cycle([[{"a": 1, "b": "x"}, None], [], [{"a": None, "b": None}], [{"a": 2 + v, "b": "y"}]], n, v), pa.list_(PAIR)
        ),
        "st": pa.array(_cycle([{"a": 1, "b": "x"}, None, {"a": None, "b": "z"}, {"a": 3 + v, "b": None}], n, v), PAIR),
        "with space": pa.array([i * 10 + v for i in ids], pa.int64()),
        "with.dot": pa.array(_cycle(["x", None, "y.z", "w"], n, v), pa.string()),
        "ünï列": pa.array([-i - v for i in ids], pa.int64()),
    }
    if not registrable:
        columns |= {
            "u32": pa.array(_cycle([0, 4294967295, 7 + v, None], n, v), pa.uint32()),
            "ts_ns": pa.array(_cycle(NS_EPOCH, n, v), pa.timestamp("ns")),
            "tstz_ns": pa.array(_cycle(NS_EPOCH, n, v + 2), pa.timestamp("ns", "UTC")),
            "nul": pa.nulls(n),
        }
    return pa.table(columns)


def keyed(ids: Sequence[int], *, version: int = 0, groups: Sequence[int] | None = None) -> pa.Table:
    """Rows with a key (`id`), a merge group (`grp`) and a few awkward values that change with `version`."""
    n = len(ids)
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "grp": pa.array(groups if groups is not None else [i % 2 for i in ids], pa.int64()),
        "v": pa.array([f"v{version}-{i}" for i in ids], pa.string()),
        "amount": pa.array([(Decimal(i) / 7 + version).quantize(Decimal("1e-9")) for i in ids], pa.decimal128(38, 9)),
        "at": pa.array([datetime(2024, 1, 1) + timedelta(hours=i, minutes=version) for i in ids], pa.timestamp("us")),
        "tags": pa.array(_cycle([["a", "b"], [], None], n, version), pa.list_(pa.string())),
        "ls": pa.array(_cycle([[{"a": version, "b": "x"}], [None], []], n, version), pa.list_(PAIR)),
    })  # fmt: skip


def evolving(ids: Sequence[int], stage: int) -> pa.Table:
    """Stage 0: `id, v, st<a>`; 1: plus top-level `extra`; 2: plus the nested field `st.b`."""
    columns: dict[str, pa.Array] = {
        "id": pa.array(ids, pa.int64()),
        "v": pa.array([f"s{stage}-{i}" for i in ids], pa.string()),
    }
    if stage < 2:
        columns["st"] = pa.array([{"a": i} for i in ids], pa.struct([("a", pa.int32())]))
    else:
        columns["st"] = pa.array([{"a": i, "b": f"new-{i}"} for i in ids], PAIR)
    if stage >= 1:
        columns["extra"] = pa.array([i * 100 for i in ids], pa.int64())
    return pa.table(columns)


PARTITION_BASE = datetime(2024, 1, 1)


def partitioned(ids: Sequence[int]) -> pa.Table:
    """Columns for every partition transform: timestamps a few hours apart, dates 50 days apart,
    a string with awkward characters, a path-like string."""
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "ts": pa.array([PARTITION_BASE + timedelta(hours=13 * i) for i in ids], pa.timestamp("us")),
        "tstz": pa.array([(PARTITION_BASE + timedelta(hours=7 * i)).replace(tzinfo=UTC) for i in ids], pa.timestamp("us", "UTC")),
        "day": pa.array([date(2019, 1, 1) + timedelta(days=50 * i) for i in ids], pa.date32()),
        "region": pa.array([["r0", "r1", "r 2/=%", None][i % 4] for i in ids], pa.string()),
        "path": pa.array([f"{'abcde'[i % 5]}x/{i}" for i in ids], pa.string()),
        "v": pa.array([i * 1.5 for i in ids], pa.float64()),
    })  # fmt: skip


def null_lists(ids: Sequence[int]) -> pa.Table:
    """A `list<struct>` and a `map<string, struct>` that are null (not empty) on every other row."""
    return pa.table({
        "id": pa.array(ids, pa.int64()),
        "ls": pa.array([None if i % 2 else [{"a": i, "b": "x"}] for i in ids], pa.list_(PAIR)),
        "ms": pa.array([None if i % 2 else [("k", {"a": i, "b": None})] for i in ids], pa.map_(pa.string(), PAIR)),
        "li": pa.array([None if i % 2 else [i] for i in ids], pa.list_(pa.int64())),
    })  # fmt: skip
