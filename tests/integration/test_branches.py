"""Write-audit-publish on each catalog: commits routed (or sent by an event, or by the dlt
adapter) to a branch land there and leave ``main`` as it was until ``branch publish``; a replay
to a new daemon adds nothing to the branch (its markers are read from the branch); publishing
is refused once ``main`` moved on."""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import dlt
import pyarrow as pa
import pytest
from pyiceberg.table import Table

from ingester import iceberg_adapter
from ingester.branches import BranchError, list_branches, publish
from ingester.catalog import open_catalog
from ingester.engine import EngineStats
from ingester.settings import Settings
from ingester.sources.spool import SpoolQueue
from ingester.wiring import build_engine
from tests.integration.test_cli import cli
from tests.integration.test_dlt_destination import Target
from tests.support import CatalogUnderTest, catalog_env, duckdb_rows, event_for, write_parquet

ROWS = 10


def run(settings: Settings) -> EngineStats:
    """A daemon's life: built from the settings (a new process), drained, gone."""
    return anyio.run(lambda: build_engine(settings).run(exit_when_idle=True))


def ids_at(table: Table, branch: str = "main") -> list[int]:
    """The ``id``s pyiceberg reads at the head of ``branch`` (none while it has no snapshot)."""
    table.refresh()
    snap = table.snapshot_by_name(branch)
    if snap is None:
        return []
    return sorted(table.scan(snapshot_id=snap.snapshot_id).to_arrow().column("id").to_pylist())


def batch_events(staging: Path, start: int, n: int, **kw: Any) -> list[bytes]:
    return [
        event_for(write_parquet(staging, {"id": pa.array(range(i * ROWS, (i + 1) * ROWS), pa.int64())}), "events",
                  event_id=f"event-{i}", **kw)
        for i in range(start, start + n)
    ]


def settings_for(any_catalog: CatalogUnderTest, tmp_path: Path, ns: str, branches: dict[str, str]) -> Settings:
    return Settings(home=tmp_path / "home", catalog=any_catalog.settings,
                    routing={"namespace": ns, "branches": branches}, window={"max_batch_files": 2, "max_batch_age_s": 60})


def test_routed_commits_land_on_the_branch_and_main_changes_only_on_publish(
    any_catalog: CatalogUnderTest, tmp_path: Path
) -> None:
    ns = f"b{uuid.uuid4().hex[:8]}"
    plain = settings_for(any_catalog, tmp_path, ns, {})
    staging = plain.home_dir / "staging"
    SpoolQueue(plain.spool_file).put_many(batch_events(staging, 0, 2))
    assert run(plain).rows == 2 * ROWS  # main: events 0-1

    audited = settings_for(any_catalog, tmp_path, ns, {"events": "audit"})
    payloads = batch_events(staging, 2, 4)
    SpoolQueue(audited.spool_file).put_many(payloads)
    first = run(audited)
    assert (first.rows, first.snapshots, first.duplicates) == (4 * ROWS, 2, 0)

    catalog = open_catalog(audited.catalog, audited.home_dir)
    table = catalog.load_table((ns, "events"))
    main_before = table.snapshot_by_name("main")
    assert main_before is not None
    assert ids_at(table) == list(range(2 * ROWS))  # main unchanged
    assert ids_at(table, "audit") == list(range(6 * ROWS))  # the branch: made from main, plus the new commits
    assert duckdb_rows(table, "SELECT count(*), max(id) FROM t", any_catalog.s3) == [(2 * ROWS, 2 * ROWS - 1)]

    SpoolQueue(audited.spool_file).put_many(payloads)  # the same events again, to a new daemon
    replay = run(audited)
    assert (replay.rows, replay.snapshots, replay.duplicates) == (0, 0, 4)  # markers read from the branch
    assert ids_at(table, "audit") == list(range(6 * ROWS))

    branches = {b.name: b for b in list_branches(table)}
    assert branches["audit"].ahead_of_main == 2 and branches["main"].snapshot_id == main_before.snapshot_id
    info = publish(table, "audit")
    table = catalog.load_table((ns, "events"))
    assert ids_at(table) == list(range(6 * ROWS)) == ids_at(table, "audit")
    assert info.snapshot_id == table.current_snapshot().snapshot_id  # type: ignore[union-attr]
    assert duckdb_rows(table, "SELECT count(*), count(DISTINCT id) FROM t", any_catalog.s3) == [(6 * ROWS, 6 * ROWS)]

    # after publishing, a replay to main's readers adds nothing either (the markers came along)
    SpoolQueue(plain.spool_file).put_many(payloads)
    assert run(plain).duplicates == 4
    assert ids_at(table) == list(range(6 * ROWS))


def test_an_event_sends_its_file_to_a_branch_and_publish_is_refused_once_main_moved_on(
    any_catalog: CatalogUnderTest, tmp_path: Path
) -> None:
    ns = f"b{uuid.uuid4().hex[:8]}"
    settings = settings_for(any_catalog, tmp_path, ns, {})
    staging = settings.home_dir / "staging"
    queue = SpoolQueue(settings.spool_file)
    queue.put_many(batch_events(staging, 0, 1))
    run(settings)
    queue.put_many(batch_events(staging, 1, 2, branch="audit"))  # the events' own field
    run(settings)
    table = open_catalog(settings.catalog, settings.home_dir).load_table((ns, "events"))
    assert ids_at(table) == list(range(ROWS)) and ids_at(table, "audit") == list(range(3 * ROWS))

    queue.put_many(batch_events(staging, 3, 1))  # main moves on
    run(settings)
    main = ids_at(table)
    assert main == [*range(ROWS), *range(3 * ROWS, 4 * ROWS)]
    with pytest.raises(BranchError, match="main' moved on"):
        publish(table, "audit")
    assert ids_at(table) == main  # nothing changed

    env = catalog_env(any_catalog.settings) | {"INGESTER_ROUTING__NAMESPACE": ns}
    refused = cli(settings.home_dir, "branch", "publish", "events", "--from", "audit", env=env, check=False)
    assert refused.returncode == 1 and "moved on" in refused.stderr and "Traceback" not in refused.stderr
    listed = cli(settings.home_dir, "branch", "list", "events", env=env).stdout
    assert "audit" in listed and "main" in listed
    cli(settings.home_dir, "branch", "drop", "events", "audit", env=env)
    table.refresh()
    assert "audit" not in table.metadata.refs and ids_at(table) == main
    gone = cli(settings.home_dir, "branch", "drop", "events", "main", env=env, check=False)
    assert gone.returncode == 1 and "cannot be dropped" in gone.stderr


def test_cli_publish_fast_forwards_main(any_catalog: CatalogUnderTest, tmp_path: Path) -> None:
    ns = f"b{uuid.uuid4().hex[:8]}"
    settings = settings_for(any_catalog, tmp_path, ns, {"events": "audit"})
    SpoolQueue(settings.spool_file).put_many(batch_events(settings.home_dir / "staging", 0, 2))
    run(settings)  # a new table: main has no snapshot, the branch is made by its first commit
    table = open_catalog(settings.catalog, settings.home_dir).load_table((ns, "events"))
    assert ids_at(table) == [] and ids_at(table, "audit") == list(range(2 * ROWS))
    env = catalog_env(any_catalog.settings) | {"INGESTER_ROUTING__NAMESPACE": ns}
    done = cli(settings.home_dir, "branch", "publish", "events", "--from", "audit", env=env)
    assert "main is at snapshot" in done.stdout
    assert ids_at(table) == list(range(2 * ROWS))
    assert duckdb_rows(table, "SELECT count(*) FROM t", any_catalog.s3) == [(2 * ROWS,)]


@dlt.resource(name="orders", write_disposition="merge", primary_key="id")
def orders(start: int, n: int) -> Iterator[dict[str, Any]]:
    for i in range(start, start + n):
        yield {"id": i, "items": [{"sku": f"s{i}-{k}"} for k in range(2)]}


def test_the_dlt_adapter_sends_a_resource_and_its_nested_table_to_a_branch(
    any_catalog: CatalogUnderTest, tmp_path: Path
) -> None:
    target = Target(any_catalog.kind, f"t_{uuid.uuid4().hex[:10]}", tmp_path, any_catalog.server)
    pipeline = target.pipeline("wap")
    pipeline.run(orders(0, 5))  # main: orders 0-4
    pipeline.run(iceberg_adapter(orders(3, 5), branch="audit"))  # 3-4 updated, 5-7 new: on the branch
    parent, child = target.table("orders"), target.table("orders__items")
    assert ids_at(parent) == list(range(5)) and ids_at(parent, "audit") == list(range(8))
    assert len(child.scan().to_arrow()) == 10
    audit = child.scan(snapshot_id=child.snapshot_by_name("audit").snapshot_id).to_arrow()  # type: ignore[union-attr]
    assert sorted(audit.column("sku").to_pylist()) == sorted(f"s{i}-{k}" for i in range(8) for k in range(2))
    for table in (parent, child):
        publish(table, "audit")
    assert ids_at(target.table("orders")) == list(range(8))
    assert len(target.duck_rows("orders__items")) == 16
