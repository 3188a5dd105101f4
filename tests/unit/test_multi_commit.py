"""``MultiTableCommit`` on the embedded SQLite catalog: every table's pointer moves in one
database transaction, or none; ``off`` commits table by table. (The REST path runs against
SeaweedFS in ``tests/integration/test_atomic_loads.py``.)"""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException

from ingester.batch import Batch, Pending, TableRef
from ingester.catalog import open_catalog
from ingester.commit import SnapshotCommitter
from ingester.events import FileEvent
from ingester.iceberg_layer.multi_commit import MultiTableCommit
from ingester.settings import CatalogSettings
from ingester.storage import FileReader
from tests.support import write_parquet


@pytest.fixture
def catalog(tmp_path: Path) -> Catalog:
    return open_catalog(CatalogSettings(), tmp_path / "home")


def batches(tmp_path: Path, n: int, start: int) -> list[tuple[Batch, None]]:
    out = []
    for t in range(n):
        path = write_parquet(tmp_path / "in", {"id": pa.array([start, start + 1], pa.int64())})
        event = FileEvent(f"t{t}", location=str(path), byte_size=path.stat().st_size, event_id=f"t{t}-{start}")
        out.append((Batch(TableRef("ns", f"t{t}"), (Pending(event),)), None))
    return out


def ids(catalog: Catalog, name: str) -> list[int]:
    return sorted(catalog.load_table(("ns", name)).scan().to_arrow().column("id").to_pylist())


def apply_many(committer: SnapshotCommitter, items: list[tuple[Batch, None]]) -> list[int | None]:
    return [r.snapshot_id for r in committer.apply_many([(committer.read(b), e) for b, e in items])]


def test_the_sql_catalog_commits_every_table_or_none(catalog: Catalog, tmp_path: Path) -> None:
    committer = SnapshotCommitter(catalog, FileReader([tmp_path.as_uri()]))
    assert committer.multi.mode == "sql"
    assert all(apply_many(committer, batches(tmp_path, 3, 0)))
    second = batches(tmp_path, 3, 10)
    prepared = [committer.prepare(committer.read(b)) for b, _ in second]
    other = catalog.load_table(("ns", "t2"))  # another writer moves t2 after the build
    other.append(other.scan().to_arrow().slice(0, 1))
    with pytest.raises(CommitFailedException):
        committer.multi.commit([p.transaction for p in prepared if p.transaction])
    assert [ids(catalog, f"t{t}") for t in range(3)] == [[0, 1], [0, 1], [0, 0, 1]]  # nothing of the commit landed
    assert all(apply_many(committer, second))  # the retry: staged afresh from the markers
    assert apply_many(committer, second) == [None, None, None]  # replayed: every file is marked committed
    assert [ids(catalog, f"t{t}") for t in range(3)] == [[0, 1, 10, 11], [0, 1, 10, 11], [0, 0, 1, 10, 11]]
    assert [len(catalog.load_table(("ns", f"t{t}")).metadata.snapshots) for t in range(3)] == [2, 2, 3]


def test_off_commits_table_by_table(catalog: Catalog, tmp_path: Path) -> None:
    """The fallback: a conflict on the second table leaves the first one committed."""
    committer = SnapshotCommitter(catalog, FileReader([tmp_path.as_uri()]), multi_commit=MultiTableCommit(catalog, "off"))
    assert committer.multi.mode == "per-table"
    apply_many(committer, batches(tmp_path, 2, 0))
    prepared = [committer.prepare(committer.read(b)) for b, _ in batches(tmp_path, 2, 10)]
    other = catalog.load_table(("ns", "t1"))
    other.append(other.scan().to_arrow().slice(0, 1))
    with pytest.raises(CommitFailedException):
        committer.multi.commit([p.transaction for p in prepared if p.transaction])
    assert [ids(catalog, f"t{t}") for t in range(2)] == [[0, 1, 10, 11], [0, 0, 1]]
