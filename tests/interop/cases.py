"""The tables of the matrix: how each is written (mode, catalog, disposition, zero-copy or rewrite,
partitioning) and what it is fed, load by load.

Modes: `dlt` (the `iceberg()` destination on the embedded catalog, `iceberg_rest()` on the REST
catalog), `daemon` (`ingester publish` of parquet files, then `ingester run --exit-when-idle`),
`queue` (a dlt pipeline into `ingester_queue()`, then the same daemon). `zero_copy` is the daemon
setting `commit.zero_copy` and, for every mode, what the table must end up with: some data files
registered as-is (True) or only rewritten ones (False). dlt loads register files as-is whenever
they fit (there is no setting), so their `zero_copy` says what their rows lead to.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

from . import data
from .protocol import Filter

DLT, DAEMON, QUEUE = "dlt", "daemon", "queue"
SQL, REST = "sql", "rest"
APPEND, REPLACE, MERGE = "append", "replace", "merge"
UPSERT, DELETE_INSERT = "upsert", "delete-insert"


@dataclass(frozen=True)
class Load:
    """One load: its files (one Arrow table each; a dlt load gets them as the items of one run)."""

    files: tuple[pa.Table, ...]

    @property
    def schema(self) -> pa.Schema:
        return pa.unify_schemas([f.schema for f in self.files], promote_options="permissive")


@dataclass(frozen=True)
class Case:
    name: str
    mode: str
    catalog: str
    zero_copy: bool
    disposition: str
    loads: tuple[Load, ...]
    filter: Filter
    strategy: str | None = None
    """merge only: `upsert` (by `key`, the primary key) or `delete-insert` (by `key`, the merge key)."""
    key: str | None = None
    partition: tuple[str, str] | None = None
    """(column, transform) given as the dlt hints `partition: true` + `x-partition-transform`."""
    hints: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    joined: bool = False
    """Some load brings several small files of one layout: the daemon joins them into one data
    file (``ingester.commit.joining``), which every reader must read as the files."""

    @property
    def table(self) -> str:
        return self.name

    def dlt_columns(self) -> dict[str, dict[str, Any]]:
        """dlt column hints: naive timestamps stay naive, the all-null column gets a type,
        the partition hints; only for columns the loads have."""
        names = {n for load in self.loads for n in load.schema.names}
        hints: dict[str, dict[str, Any]] = {n: {"timezone": False} for n in ("ts", "ts_ns", "at") if n in names}
        if "nul" in names:
            hints["nul"] = {"data_type": "text"}
        if self.partition:
            column, transform = self.partition
            hints.setdefault(column, {}).update({"partition": True, "x-partition-transform": transform})
        return hints


def _loads(*loads: tuple[pa.Table, ...] | pa.Table) -> tuple[Load, ...]:
    return tuple(Load(f if isinstance(f, tuple) else (f,)) for f in loads)


def _empty(table: pa.Table) -> pa.Table:
    return table.slice(0, 0)


ID_FILTER = Filter("id", ">=", 3)

TRANSFORMS: dict[str, tuple[str, str, Filter]] = {
    "identity": ("region", "identity", Filter("region", "==", "r1")),
    "year": ("day", "year", Filter("day", ">=", "2021-01-01")),
    "month": ("ts", "month", Filter("ts", ">=", "2024-01-20T00:00:00")),
    "day": ("tstz", "day", Filter("tstz", "<", "2024-01-05T00:00:00+00:00")),
    "hour": ("ts", "hour", Filter("ts", "<", "2024-01-03T06:00:00")),
    "bucket": ("id", "bucket[4]", Filter("id", "==", 7)),
    "truncate": ("path", "truncate[3]", Filter("path", ">=", "cx/")),
}


def _awkward_append(registrable: bool) -> tuple[Load, ...]:
    first = data.awkward([1, 2, 3, 4], registrable=registrable)
    return _loads(
        (first, data.awkward([5, 6, 7, 8], version=1, registrable=registrable), _empty(first)),
        data.awkward([9, 10, 11, 12], version=2, registrable=registrable),
    )


def _upserts(registrable: bool, duplicate: bool) -> tuple[Load, ...]:
    """Insert 1-6; update 4-6 and insert 7-8 (with `duplicate`, id 5 twice in one file: the last
    wins); update 2 and 8."""
    second = [4, 5, 6, 7, 8] + ([5] if duplicate else [])
    return _loads(
        data.awkward([1, 2, 3, 4, 5, 6], registrable=registrable),
        data.awkward(second, version=1, registrable=registrable),
        data.awkward([2, 8], version=2, registrable=registrable),
    )


def _keyed_upserts() -> tuple[Load, ...]:
    return _loads(data.keyed([1, 2, 3, 4, 5, 6]), data.keyed([4, 5, 6, 7, 8], version=1), data.keyed([2, 8], version=2))


def _delete_inserts() -> tuple[Load, ...]:
    """Groups 0 and 1; then group 1 again (its old rows go, all new rows stay, a repeated id too)."""
    return _loads(
        data.keyed([1, 2, 3, 4, 5, 6]),
        data.keyed([7, 8, 8, 9], version=1, groups=[1, 1, 1, 1]),
    )


def _replaces() -> tuple[Load, ...]:
    return _loads(data.keyed([1, 2, 3, 4, 5]), (data.keyed([10, 11], version=1), data.keyed([12], version=1)))


def _evolution() -> tuple[Load, ...]:
    return _loads(data.evolving([1, 2, 3], 0), data.evolving([4, 5], 1), data.evolving([6, 7], 2))


def _null_lists() -> tuple[Load, ...]:
    first = data.null_lists([1, 2, 3, 4])
    return _loads((_empty(first), first), data.null_lists([5, 6]))


def _partitioned() -> tuple[Load, ...]:
    return _loads(data.partitioned(list(range(0, 30))), data.partitioned(list(range(30, 40))))


def _cases() -> list[Case]:
    cases = [
        # dlt iceberg(), embedded catalog
        Case("dlt_zero_copy_append", DLT, SQL, True, APPEND, _awkward_append(True), ID_FILTER),
        Case("dlt_rewrite_append", DLT, SQL, False, APPEND, _awkward_append(False), ID_FILTER),
        Case("dlt_zero_copy_replace", DLT, SQL, True, REPLACE, _replaces(), ID_FILTER),
        Case("dlt_zero_copy_merge_upsert", DLT, SQL, True, MERGE, _keyed_upserts(), ID_FILTER, UPSERT, "id"),
        Case("dlt_zero_copy_merge_delete_insert", DLT, SQL, True, MERGE, _delete_inserts(), ID_FILTER, DELETE_INSERT, "grp"),
        Case("dlt_evolution", DLT, SQL, True, APPEND, _evolution(), ID_FILTER),
        # dlt iceberg_rest(), SeaweedFS
        Case("rest_dlt_rewrite_merge_upsert", DLT, REST, False, MERGE, _upserts(False, False), ID_FILTER, UPSERT, "id"),
        # ingester publish + ingester run
        Case("zero_copy_append", DAEMON, SQL, True, APPEND, _awkward_append(True), ID_FILTER, joined=True),
        Case("rewrite_append", DAEMON, SQL, False, APPEND, _awkward_append(False), ID_FILTER),
        Case("zero_copy_replace", DAEMON, SQL, True, REPLACE, _replaces(), ID_FILTER, joined=True),
        Case("rewrite_replace", DAEMON, SQL, False, REPLACE, _replaces(), ID_FILTER),
        Case("zero_copy_merge_upsert", DAEMON, SQL, True, MERGE, _upserts(True, False), ID_FILTER, UPSERT, "id"),
        Case("rewrite_merge_upsert", DAEMON, SQL, False, MERGE, _upserts(False, True), ID_FILTER, UPSERT, "id"),
        Case("zero_copy_evolution", DAEMON, SQL, True, APPEND, _evolution(), ID_FILTER),
        Case("rewrite_evolution", DAEMON, SQL, False, APPEND, _evolution(), ID_FILTER),
        Case("zero_copy_null_list_struct", DAEMON, SQL, True, APPEND, _null_lists(), ID_FILTER),
        Case("rewrite_null_list_struct", DAEMON, SQL, False, APPEND, _null_lists(), ID_FILTER),
        Case("rest_zero_copy_append", DAEMON, REST, True, APPEND, _awkward_append(True), ID_FILTER, joined=True),
        # dlt ingester_queue() + ingester run
        Case("queue_zero_copy_merge_delete_insert", QUEUE, SQL, True, MERGE, _delete_inserts(), ID_FILTER, DELETE_INSERT, "grp"),
        Case("queue_rewrite_replace", QUEUE, SQL, False, REPLACE, _replaces(), ID_FILTER),
        Case("rest_queue_rewrite_merge_upsert", QUEUE, REST, False, MERGE, _keyed_upserts(), ID_FILTER, UPSERT, "id"),
    ]
    for name, (column, transform, filter_) in TRANSFORMS.items():
        cases.append(Case(f"dlt_partition_{name}", DLT, SQL, False, APPEND, _partitioned(), filter_, partition=(column, transform)))
    column, transform, filter_ = TRANSFORMS["identity"]
    cases.append(Case("queue_partition_identity", QUEUE, SQL, False, APPEND, _partitioned(), filter_, partition=(column, transform)))
    cases.append(Case("rest_dlt_partition_day", DLT, REST, False, APPEND, _partitioned(), TRANSFORMS["day"][2], partition=TRANSFORMS["day"][:2]))
    return cases


CASES: dict[str, Case] = {c.name: c for c in _cases()}
