"""The dlt job client on the embedded catalog (SQLite + local warehouse): idempotent commits,
error classification, retries, replace chains, refresh, data types. No servers."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from datetime import date, datetime, time, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from dlt.common.destination.exceptions import DestinationTerminalException
from dlt.pipeline.exceptions import PipelineStepFailed
from pyiceberg.exceptions import BadRequestError, CommitFailedException, WaitingForLockException

from ingester import iceberg, iceberg_rest
from ingester.commit import SnapshotCommitter
from ingester.dlt.client import IcebergJobClient
from ingester.iceberg_layer import markers as mk


def pipeline(tmp_path: Path, name: str = "unit", **kwargs: Any) -> dlt.Pipeline:
    return dlt.pipeline(
        name, destination=iceberg(ingester_home=str(tmp_path / "home"), namespace="unit", **kwargs),
        pipelines_dir=str(tmp_path / "pipelines"), dataset_name="unit",
    )


def rows(p: dlt.Pipeline, table: str) -> list[dict[str, Any]]:
    client = p.destination_client()
    assert isinstance(client, IcebergJobClient)
    return client.load_table(table).scan().to_arrow().to_pylist()


@dlt.resource(name="items", write_disposition="append")
def items(n: int) -> Iterator[dict[str, Any]]:
    yield from ({"id": i} for i in range(n))


def test_committing_the_same_files_again_adds_nothing(tmp_path: Path) -> None:
    """What a resumed load does after a crash between commit and job completion."""
    p = pipeline(tmp_path)
    p.extract(items(50))
    p.normalize()
    load_id = p.list_normalized_load_packages()[0]
    package = Path(p.get_load_package_info(load_id).package_path)
    kept = tmp_path / "kept"
    shutil.copytree(package, kept)  # the package as it was before the load
    p.load()
    client = p.destination_client()
    assert isinstance(client, IcebergJobClient)
    files = sorted((kept / "new_jobs").glob("items.*.parquet"))
    result = client.commit_files(client.prepare_load_table("items"), files, load_id, kept)
    assert result.snapshot_id is None and result.duplicates == len(files) > 0
    assert sorted(r["id"] for r in rows(p, "items")) == list(range(50))
    snapshots = client.load_table("items").metadata.snapshots
    assert len(snapshots) == 1 and snapshots[0].summary is not None
    assert json.loads(snapshots[0].summary.additional_properties[mk.LOAD_IDS]) == [load_id]


def test_a_bad_hint_fails_the_job_terminally_and_commits_nothing(tmp_path: Path) -> None:
    hints: Any = {"name": {"data_type": "text", "partition": True, "x-partition-transform": "day"}}

    @dlt.resource(name="bad", columns=hints)
    def bad() -> Iterator[dict[str, Any]]:
        yield {"id": 1, "name": "x"}

    p = pipeline(tmp_path)
    with pytest.raises(PipelineStepFailed, match="transform day does not apply"):
        p.run(bad())
    client = p.destination_client()
    assert isinstance(client, IcebergJobClient)
    assert ("unit", "bad") not in client.catalog.list_tables("unit")


def test_transient_commit_failures_are_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """In the load's one commit (``complete_load``): every table of it is staged afresh."""
    calls: list[int] = []
    apply_many = SnapshotCommitter.apply_many

    def flaky(self: SnapshotCommitter, items: Any) -> Any:
        calls.append(1)
        if len(calls) <= 2:
            raise CommitFailedException("concurrent commit")
        return apply_many(self, items)

    monkeypatch.setattr(SnapshotCommitter, "apply_many", flaky)
    p = pipeline(tmp_path, max_retries=3, retry_backoff_base=1.0)
    p.run(items(5))
    assert sorted(r["id"] for r in rows(p, "items")) == list(range(5))
    assert len(calls) >= 3


def test_strict_casting_and_merge_batch_size_reach_the_committer(tmp_path: Path) -> None:
    p = pipeline(tmp_path, strict_casting=True, merge_batch_size=123)
    client = p.destination_client()
    assert isinstance(client, IcebergJobClient)
    committer = client._committer()
    assert committer.options.strict_casting is True and committer.options.merge_batch_size == 123


@pytest.mark.parametrize("strict", [False, True])
def test_strict_casting_refuses_a_lossy_cast(tmp_path: Path, strict: bool) -> None:
    client = pipeline(tmp_path, strict_casting=strict).destination_client()
    assert isinstance(client, IcebergJobClient)
    jobs = tmp_path / "package" / "completed_jobs"
    jobs.mkdir(parents=True)
    table: Any = {"name": "vals", "write_disposition": "append", "columns": {}}
    files = {name: jobs / f"vals.{name}.0.parquet" for name in ("ints", "whole", "fraction")}
    pq.write_table(pa.table({"v": pa.array([1, 2], pa.int64())}), files["ints"])
    pq.write_table(pa.table({"v": pa.array([3.0], pa.float64())}), files["whole"])
    pq.write_table(pa.table({"v": pa.array([4.5], pa.float64())}), files["fraction"])
    client.initialize_storage()
    client.commit_files(table, [files["ints"]], "1", jobs.parent)
    with pytest.raises(DestinationTerminalException, match="'v'"):  # no integer: refused in both modes
        client.commit_files(table, [files["fraction"]], "2", jobs.parent)
    if strict:  # double into bigint may lose data: refused, nothing committed
        with pytest.raises(DestinationTerminalException, match="strict casting"):
            client.commit_files(table, [files["whole"]], "3", jobs.parent)
    else:  # the value converts exactly: it lands
        client.commit_files(table, [files["whole"]], "3", jobs.parent)
    landed = sorted(r["v"] for r in client.load_table("vals").scan().to_arrow().to_pylist())
    assert landed == ([1, 2] if strict else [1, 2, 3])


def test_replace_empties_a_nested_table_without_rows_in_the_load(tmp_path: Path) -> None:
    @dlt.resource(name="docs", write_disposition="replace")
    def docs(with_tags: bool) -> Iterator[dict[str, Any]]:
        yield {"id": 1, "tags": ["a", "b"] if with_tags else []}

    p = pipeline(tmp_path)
    p.run(docs(True))
    assert len(rows(p, "docs__tags")) == 2
    p.run(docs(False))
    assert [r["id"] for r in rows(p, "docs")] == [1]
    assert rows(p, "docs__tags") == []
    client = p.destination_client()
    assert isinstance(client, IcebergJobClient)
    assert len(client.load_table("docs__tags").metadata.snapshots) == 2  # history kept


def test_refresh_drop_resources_drops_the_iceberg_table(tmp_path: Path) -> None:
    p = pipeline(tmp_path)
    p.run(items(5))
    p.run(items(2), refresh="drop_resources")
    assert sorted(r["id"] for r in rows(p, "items")) == [0, 1]
    client = p.destination_client()
    assert isinstance(client, IcebergJobClient)
    assert len(client.load_table("items").metadata.snapshots) == 1


def test_refresh_drop_data_empties_an_append_table_before_the_load(tmp_path: Path) -> None:
    p = pipeline(tmp_path)
    p.run(items(5))
    p.run(items(3), refresh="drop_data")
    assert sorted(r["id"] for r in rows(p, "items")) == [0, 1, 2]


def test_dlt_data_types_round_trip(tmp_path: Path) -> None:
    row = {
        "i": 2**40, "f": 1.25, "s": "text", "b": True, "ts": datetime(2024, 5, 6, 7, 8, 9, 123456, tzinfo=timezone.utc),
        "d": date(2024, 5, 6), "t": time(7, 8, 9), "dec": Decimal("12.345000000"), "bin": b"\x00\x01", "j": {"a": [1, 2]},
    }

    @dlt.resource(name="typed", columns={"j": {"data_type": "json"}, "dec": {"data_type": "decimal"}})
    def typed() -> Iterator[dict[str, Any]]:
        yield row

    p = pipeline(tmp_path)
    p.run(typed())
    (got,) = rows(p, "typed")
    assert {k: got[k] for k in row if k != "j"} == {k: v for k, v in row.items() if k != "j"}
    assert json.loads(got["j"]) == row["j"]
    (via_dataset,) = p.dataset().typed.arrow().to_pylist()
    assert via_dataset["ts"] == row["ts"] and via_dataset["dec"] == row["dec"]


def test_a_pipeline_runs_inside_a_running_event_loop(tmp_path: Path) -> None:
    """As in a notebook or async application code: the client never nests event loops."""

    async def main() -> None:
        pipeline(tmp_path).run(items(3))

    asyncio.run(main())
    assert sorted(r["id"] for r in rows(pipeline(tmp_path), "items")) == [0, 1, 2]


def test_refresh_drop_resources_purges_the_dropped_tables_files(tmp_path: Path) -> None:
    p = pipeline(tmp_path)
    p.run(items(5))
    client = p.destination_client()
    assert isinstance(client, IcebergJobClient)
    old = [Path(t.file.file_path.removeprefix("file://")) for t in client.load_table("items").scan().plan_files()]
    assert old and all(f.exists() for f in old)
    p.run(items(2), refresh="drop_resources")
    assert not any(f.exists() for f in old)


@dlt.resource(name="people", write_disposition="merge", primary_key="id")
def people(rows_: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    yield from rows_


@pytest.mark.parametrize("strategy", ["upsert", "delete-insert"])
def test_hard_delete_column_deletes_the_key(tmp_path: Path, strategy: str) -> None:
    """dlt-iceberg's ``hard_delete_column`` (default ``_dlt_deleted_at``): a row where it is set
    deletes its key and is not inserted; a load of only such rows deletes them."""
    @dlt.resource(name="people", write_disposition={"disposition": "merge", "strategy": strategy}, primary_key="id")  # type: ignore[misc]
    def resource(rows_: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        yield from rows_

    p = pipeline(tmp_path)
    p.run(resource([{"id": i, "name": f"p{i}"} for i in range(5)]))
    gone = datetime(2024, 1, 1, tzinfo=timezone.utc)
    p.run(resource([{"id": 1, "name": "p1", "_dlt_deleted_at": gone}, {"id": 2, "name": "p2 new"}, {"id": 9, "name": "p9"}]))
    assert sorted((r["id"], r["name"]) for r in rows(p, "people")) == [(0, "p0"), (2, "p2 new"), (3, "p3"), (4, "p4"), (9, "p9")]
    p.run(resource([{"id": i, "name": "x", "_dlt_deleted_at": gone} for i in (0, 3)]))
    assert sorted(r["id"] for r in rows(p, "people")) == [2, 4, 9]
    off = pipeline(tmp_path, "off", hard_delete_column=None)
    off.run(people.with_name("kept")([{"id": 1, "name": "a", "_dlt_deleted_at": gone}]))
    assert [r["id"] for r in rows(off, "kept")] == [1]


def test_merge_without_a_key_appends(tmp_path: Path) -> None:
    """iceberg_rest's default strategy is dlt-iceberg's delete-insert: without a key, an append."""

    @dlt.resource(name="keyless", write_disposition="merge")
    def keyless() -> Iterator[dict[str, Any]]:
        yield from ({"id": i} for i in range(3))

    (tmp_path / "wh").mkdir()
    p = dlt.pipeline("keyless", destination=iceberg_rest(catalog_uri=f"sqlite:///{tmp_path}/c.db", warehouse=(tmp_path / "wh").as_uri()),
                     pipelines_dir=str(tmp_path / "pipelines"))
    p.run(keyless())
    p.run(keyless())
    assert sorted(r["id"] for r in rows(p, "keyless")) == [0, 0, 1, 1, 2, 2]
    assert len({r["_dlt_id"] for r in rows(p, "keyless")}) == 6


def test_small_merge_batch_size_reads_each_data_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``merge_batch_size`` bounds a probe's keys; it does not multiply the reads."""
    from ingester.iceberg_layer import deletes

    p = pipeline(tmp_path, merge_batch_size=1)
    p.run(people([{"id": i, "name": "a"} for i in range(25_000)]))
    reads: list[int] = []
    read_table = deletes.pq.read_table
    monkeypatch.setattr(deletes.pq, "read_table", lambda *a, **k: reads.append(1) or read_table(*a, **k))
    p.run(people([{"id": i, "name": "b"} for i in range(0, 25_000, 2)]))
    client = p.destination_client()
    assert isinstance(client, IcebergJobClient)
    data_files = len([t for t in client.load_table("people").scan().plan_files()])
    assert len(reads) == data_files - 1  # every file but the one this load added, once
    names = [r["name"] for r in sorted(rows(p, "people"), key=lambda r: r["id"])]
    assert names == ["b" if i % 2 == 0 else "a" for i in range(25_000)]


def test_column_descriptions_become_field_docs(tmp_path: Path) -> None:
    def described(doc: str | None) -> Any:
        hints: Any = {"name": {"data_type": "text", **({"description": doc} if doc else {})}}
        return dlt.resource([{"id": 1, "name": "x"}], name="docs", columns=hints)

    p = pipeline(tmp_path)
    client = p.destination_client()
    assert isinstance(client, IcebergJobClient)
    for doc, expected in (("first", "first"), ("changed", "changed"), (None, "changed")):
        p.run(described(doc))
        assert pipeline(tmp_path).destination_client().load_table("docs").schema().find_field("name").doc == expected  # type: ignore[attr-defined]


def test_a_catalog_lock_held_by_another_writer_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    apply = SnapshotCommitter.apply

    def locked(self: SnapshotCommitter, loaded: Any, extra_delete_keys: Any = None) -> Any:
        calls.append(1)
        if len(calls) == 1:
            raise WaitingForLockException("lock held by another writer")
        return apply(self, loaded, extra_delete_keys)

    monkeypatch.setattr(SnapshotCommitter, "apply", locked)
    p = pipeline(tmp_path, max_retries=2, retry_backoff_base=1.0)
    p.run(items(3))
    assert sorted(r["id"] for r in rows(p, "items")) == [0, 1, 2]


def test_a_refused_name_of_dlts_own_tables_names_the_option(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A catalog with S3 Tables naming rules answers 400 for ``_dlt_loads`` (SeaweedFS does, see
    the parity suite): the error says to set ``internal_table_prefix``. Fake catalog answer."""
    client = pipeline(tmp_path, internal_table_prefix="_dlt").destination_client()
    assert isinstance(client, IcebergJobClient)

    def refuse(ident: Any) -> Any:
        raise BadRequestError("table name must start with a letter or digit")

    monkeypatch.setattr(client.catalog, "load_table", refuse)
    with pytest.raises(DestinationTerminalException, match="internal_table_prefix='dlt'"):
        client.load_table("_dlt_loads")
    with pytest.raises(BadRequestError):
        client.load_table("_private")  # a user table: the catalog's answer as it is


def test_the_load_commits_in_complete_load_unless_atomic_multi_table_is_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Atomic (the SQL catalog): the jobs commit nothing, ``complete_load`` commits every table
    and ``_dlt_loads`` at once; ``off``: each table's job commits it (``commit_files``)."""
    calls: list[str] = []
    commit_files = IcebergJobClient.commit_files

    def spy(self: IcebergJobClient, table: Any, *args: Any) -> Any:
        calls.append(str(table["name"]))
        return commit_files(self, table, *args)

    monkeypatch.setattr(IcebergJobClient, "commit_files", spy)
    for setting, per_job in (("auto", 0), ("off", 1)):
        calls.clear()
        p = pipeline(tmp_path / setting, atomic_multi_table=setting)
        p.run(items(5))
        assert calls.count("items") == per_job, setting
        assert sorted(r["id"] for r in rows(p, "items")) == list(range(5))
        assert len(rows(p, "_dlt_loads")) == 1


def test_a_load_on_the_sql_catalog_imports_neither_the_rest_client_nor_duckdb() -> None:
    """A cron-run pipeline pays every import: the destination's client leaves the REST
    catalog's client (and requests) to REST catalogs and DuckDB to dataset reads."""
    code = ("import sys, dlt; before = set(sys.modules); import ingester.dlt.client; "
            "print(sorted(m for m in set(sys.modules) - before if m.split('.')[0] in ('duckdb', 'requests') "
            "or m.startswith('pyiceberg.catalog.rest')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
