"""The SQL catalog's commit (``ingester.iceberg_layer.sql_catalog``): the base is the committing
table's own metadata while the catalog row points at its file, a concurrent writer is detected
as pyiceberg detects it, and the metadata written is what pyiceberg would write."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog.sql import SqlCatalog
from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table.update import AssertRefSnapshotId, SetPropertiesUpdate

from ingester.catalog import open_catalog
from ingester.iceberg_layer.sql_catalog import StreamingSqlCatalog
from ingester.iceberg_layer.transactions import expire_snapshots
from ingester.settings import CatalogSettings

DATA = pa.table({"id": pa.array([1, 2], pa.int64())})


def test_the_embedded_catalog_commits_without_reloading_and_reads_back_the_same(tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    catalog = open_catalog(CatalogSettings(), tmp_path / "home")
    assert isinstance(catalog, StreamingSqlCatalog)
    catalog.create_namespace("ns")
    table = catalog.create_table(("ns", "t"), DATA.schema)
    loads: list[tuple[str, ...]] = []
    real = SqlCatalog.load_table
    monkeypatch.setattr(SqlCatalog, "load_table", lambda self, ident: loads.append(ident) or real(self, ident))
    for _ in range(5):
        table.append(DATA)
    assert loads == []  # the table's own metadata was the base of every commit
    monkeypatch.undo()
    fresh = catalog.load_table(("ns", "t"))
    assert fresh.metadata_location == table.metadata_location
    assert fresh.metadata.model_dump() == table.metadata.model_dump()  # what was written is what it holds
    assert len(fresh.metadata.snapshots) == 5 and fresh.scan().to_arrow().num_rows == 10
    assert len(fresh.metadata.metadata_log) == 5  # one entry per commit, as pyiceberg logs them


def test_a_commit_after_another_writer_is_refused_and_a_fresh_one_lands(tmp_path: Path) -> None:
    catalog = open_catalog(CatalogSettings(), tmp_path / "home")
    catalog.create_namespace("ns")
    mine = catalog.create_table(("ns", "t"), DATA.schema)
    mine.append(DATA)
    theirs = catalog.load_table(("ns", "t"))
    theirs.append(DATA)  # the row no longer points at mine's file
    seen = AssertRefSnapshotId(ref="main", snapshot_id=mine.metadata.current_snapshot_id)
    with pytest.raises(CommitFailedException):  # main at the snapshot mine saw: checked on the current table
        catalog.commit_table(mine, (seen,), (SetPropertiesUpdate(updates={"k": "v"}),))
    assert "k" not in catalog.load_table(("ns", "t")).properties
    mine.append(DATA)  # pyiceberg's own retry refreshes and lands it
    again = catalog.load_table(("ns", "t"))
    assert again.scan().to_arrow().num_rows == 6 and len(again.metadata.snapshots) == 3
    # a change without a snapshot requirement applies on the current table, not on the stale copy
    stale = catalog.load_table(("ns", "t"))
    catalog.load_table(("ns", "t")).append(DATA)
    with stale.transaction() as tx:
        tx.set_properties(owner="me")
    final = catalog.load_table(("ns", "t"))
    assert final.properties["owner"] == "me" and len(final.metadata.snapshots) == 4


def test_expiring_many_snapshots_takes_one_commit_and_keeps_the_rest(tmp_path: Path) -> None:
    catalog = open_catalog(CatalogSettings(), tmp_path / "home")
    catalog.create_namespace("ns")
    table = catalog.create_table(("ns", "t"), DATA.schema)
    for _ in range(60):
        table.append(DATA)
    ids = [s.snapshot_id for s in table.metadata.snapshots]
    before = len(table.metadata.metadata_log)
    expire_snapshots(table, ids[:50])
    fresh = catalog.load_table(("ns", "t"))
    assert [s.snapshot_id for s in fresh.metadata.snapshots] == ids[50:]
    assert len(fresh.metadata.metadata_log) == before + 1 and fresh.scan().to_arrow().num_rows == 120
    assert json.loads(Path(fresh.metadata_location.removeprefix("file://")).read_text())["current-snapshot-id"] == ids[-1]
