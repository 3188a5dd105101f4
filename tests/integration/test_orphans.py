"""Orphan cleanup on each catalog (embedded SQLite + local warehouse, REST catalog on S3):
failed-commit leftovers and the files of expired snapshots go; every reachable file and
everything outside data/ and metadata/ stays; the table reads back the same."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pytest
from pyarrow import fs as pafs
from pyiceberg.io.pyarrow import PyArrowFileIO

from ingester.catalog import open_catalog
from ingester.maintenance.orphans import reachable_paths, remove_orphans
from ingester.settings import Settings
from ingester.sources.spool import SpoolQueue, SpoolSource
from ingester.wiring import build_engine
from tests.support import CatalogUnderTest, duckdb_rows, event_for, write_parquet


@pytest.fixture
def settings(any_catalog: CatalogUnderTest, tmp_path: Path) -> tuple[Settings, dict[str, str] | None]:
    ns = f"o{uuid.uuid4().hex[:8]}"
    return Settings(home=tmp_path / "home", catalog=any_catalog.settings, routing={"namespace": ns}), any_catalog.s3


def load(settings: Settings, first: int, disposition: str) -> None:
    files = [write_parquet(settings.home_dir / "staging", {"id": pa.array(range(first + i * 10, first + i * 10 + 10), pa.int64())})
             for i in range(3)]
    SpoolQueue(settings.spool_file).put_many([event_for(f, "t", write_disposition=disposition) for f in files])
    engine = build_engine(settings, source=SpoolSource(SpoolQueue(settings.spool_file)))
    assert anyio.run(lambda: engine.run(exit_when_idle=True)).rows == 30


def files_under(table: Any, folder: str) -> set[str]:
    scheme, netloc, root = PyArrowFileIO.parse_location(table.location().rstrip("/"), table.io.properties)
    fs = table.io.fs_by_scheme(scheme, netloc)
    infos = fs.get_file_info(pafs.FileSelector(f"{root}/{folder}", recursive=True, allow_not_found=True))
    return {i.path for i in infos if i.type == pafs.FileType.File}


def plant(table: Any, relative: str) -> str:
    location = f"{table.location().rstrip('/')}/{relative}"
    with table.io.new_output(location).create(overwrite=True) as out:
        out.write(b"left over by a commit that never landed")
    return PyArrowFileIO.parse_location(location, table.io.properties)[2]


def test_leftovers_and_expired_files_go_and_the_table_reads_the_same(settings: tuple[Settings, dict[str, str] | None]) -> None:
    s, s3 = settings
    load(s, 0, "append")
    load(s, 100, "replace")  # the first load's data files are now only in the first snapshot
    catalog = open_catalog(s.catalog, s.home_dir)
    table = catalog.load_table((s.routing.namespace, "t"))
    first = table.metadata.snapshots[0]
    first_files = {PyArrowFileIO.parse_location(t.file.file_path, table.io.properties)[2] for t in table.scan(snapshot_id=first.snapshot_id).plan_files()}
    table.maintenance.expire_snapshots().by_id(first.snapshot_id).commit()
    table = catalog.load_table((s.routing.namespace, "t"))
    strays = {plant(table, "data/00000-0-never-committed.parquet"), plant(table, "metadata/never-committed.metadata.json")}
    outside = plant(table, "notes/keep-me.txt") if s3 is None else None  # the S3 table bucket refuses other keys
    before = {f for folder in ("data", "metadata") for f in files_under(table, folder)}

    assert remove_orphans(table, "t", older_than_s=3600).orphans == ()  # everything is young
    dry = remove_orphans(table, "t", older_than_s=0, dry_run=True)
    assert strays | first_files <= set(dry.orphans) and not set(dry.orphans) & reachable_paths(table)
    assert {f for folder in ("data", "metadata") for f in files_under(table, folder)} == before  # a dry run deletes nothing

    done = remove_orphans(table, "t", older_than_s=0)
    assert done.orphans == dry.orphans and done.deleted and done.bytes > 0
    after = {f for folder in ("data", "metadata") for f in files_under(table, folder)}
    assert after == before - set(done.orphans) and after <= reachable_paths(table)
    assert outside is None or outside in files_under(table, "notes")
    assert remove_orphans(table, "t", older_than_s=0).orphans == ()
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == list(range(100, 130))
    assert duckdb_rows(table, "SELECT count(*), min(id), max(id) FROM t", s3) == [(30, 100, 129)]
