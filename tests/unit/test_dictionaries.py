"""Which string columns stay arrow dictionaries through a rewrite, and that the rows don't change."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingester.batch import Batch, Pending, TableRef
from ingester.catalog import open_catalog
from ingester.commit import SnapshotCommitter, WriteOptions
from ingester.events import FileEvent
from ingester.iceberg_layer.dictionaries import (
    candidates,
    dictionary_encoded,
    dictionary_worthy,
    repetitive,
    unified,
    with_dictionaries,
)
from ingester.settings import CatalogSettings
from ingester.sources.base import Position
from ingester.storage import FileReader

N = 4000


def rows(first: int, n: int = N) -> pa.Table:
    return pa.table({
        "id": pa.array(range(first, first + n), pa.int64()),
        "country": [("DE", "FR", "US", None)[i % 4] for i in range(first, first + n)],
        "uid": [f"user-{i:08d}" for i in range(first, first + n)],
    })


def write(folder: Path, name: str, table: pa.Table, **kw: object) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name, row_group_size=1500, **kw)  # type: ignore[arg-type]
    return folder / name


def test_string_columns_with_a_dictionary_page_in_every_row_group(tmp_path: Path) -> None:
    t = rows(0).append_column("tags", pa.array([["a"]] * N, pa.list_(pa.string())))
    path = write(tmp_path, "a.parquet", t, use_dictionary=["country", "tags"])
    assert dictionary_encoded(pq.ParquetFile(path).metadata) == {"country"}  # not uid (plain), id (int), tags (nested)
    assert dictionary_encoded(pq.ParquetFile(write(tmp_path, "b.parquet", t)).metadata) == {"country", "uid"}


def test_candidates_are_string_columns_every_holder_encodes() -> None:
    target = pa.schema([("id", pa.int64()), ("country", pa.string()), ("uid", pa.string()), ("note", pa.string())])
    schema = pa.schema([("id", pa.int64()), ("country", pa.string()), ("uid", pa.string())])
    narrow = pa.schema([("id", pa.int64())])
    files = [(schema, frozenset({"country", "uid"})), (schema, frozenset({"country"})), (narrow, frozenset())]
    assert candidates(target, files) == {"country"}  # uid: plain in file 2; note: in no file
    assert candidates(target, [(pa.schema([("country", pa.large_string())]), frozenset({"country"}))]) == set()


def test_only_columns_whose_values_repeat_stay_dictionaries() -> None:
    batch = pa.RecordBatch.from_arrays(
        [pa.array(["a", "b"] * 50).dictionary_encode(), pa.array([str(i) for i in range(100)]).dictionary_encode(),
         pa.array(["x"] * 100)],
        names=["rep", "unique", "plain"],
    )
    assert repetitive(batch, ["rep", "unique", "plain", "absent"]) == {"rep"}


def test_unified_gives_each_column_one_dictionary() -> None:
    schema = with_dictionaries(pa.schema([("c", pa.string())]), ["c"])
    parts = [pa.table({"c": pa.array(v).dictionary_encode()}, schema=schema) for v in (["a", "b"], ["b", "c"])]
    got = unified(pa.concat_tables(parts))
    chunks = got.column("c").chunks
    assert chunks[0].dictionary.equals(chunks[1].dictionary)
    assert got.column("c").to_pylist() == ["a", "b", "b", "c"]


def test_parquet_dictionaries_only_for_columns_whose_sample_repeats() -> None:
    t = rows(0).append_column("label", pa.array(["x"] * N).dictionary_encode())
    t = t.append_column("flag", pa.array([i % 2 == 0 for i in range(N)]))
    assert dictionary_worthy(t) == ["country", "label", "flag"]
    assert dictionary_worthy(t.append_column("tags", pa.array([["a"]] * N))) is None  # nested: parquet decides


@pytest.fixture
def committer(tmp_path: Path) -> SnapshotCommitter:
    return SnapshotCommitter(open_catalog(CatalogSettings(), tmp_path / "home"), FileReader([tmp_path.as_uri()]),
                             group="g", options=WriteOptions(zero_copy=False))


def commit(committer: SnapshotCommitter, paths: list[Path], table: str, first: int = 0) -> None:
    committer.commit(Batch(TableRef("ns", table), tuple(
        Pending(FileEvent(table, location=str(p)), Position("p", first + i)) for i, p in enumerate(paths)
    )))


def test_a_rewrite_keeps_repetitive_columns_dictionary_encoded_and_every_value(committer: SnapshotCommitter, tmp_path: Path) -> None:
    paths = [write(tmp_path / "in", f"{i}.parquet", rows(i * N)) for i in range(3)]
    commit(committer, paths, "d")
    table = committer.catalog.load_table(("ns", "d"))
    got = table.scan().to_arrow().sort_by("id")
    assert got.equals(pa.concat_tables(rows(i * N) for i in range(3)).cast(got.schema))
    assert not any(pa.types.is_dictionary(f.type) for f in got.schema)
    (task,) = table.scan().plan_files()
    written = pq.ParquetFile(table.io.new_input(task.file.file_path).open())
    assert b"ARROW:schema" not in (written.metadata.metadata or {})  # read back as plain strings by every reader
    country = written.metadata.row_group(0).column(1)
    assert country.path_in_schema == "country" and country.has_dictionary_page and country.statistics.null_count > 0
    unique = [written.metadata.row_group(0).column(i) for i in (0, 2)]  # id, uid: no dictionary attempt
    assert [c.path_in_schema for c in unique] == ["id", "uid"] and not any(c.has_dictionary_page for c in unique)
    assert task.file.lower_bounds[2] == b"DE" and task.file.upper_bounds[2] == b"US"


def test_mixed_encodings_and_a_missing_column_read_back_exactly(committer: SnapshotCommitter, tmp_path: Path) -> None:
    dictionary = write(tmp_path / "in", "dict.parquet", rows(0))
    plain = write(tmp_path / "in", "plain.parquet", rows(N), use_dictionary=False)
    narrow = write(tmp_path / "in", "narrow.parquet", rows(2 * N).select(["id", "uid"]))
    commit(committer, [dictionary, plain], "m")
    commit(committer, [dictionary.rename(tmp_path / "in" / "again.parquet"), narrow], "m", first=2)  # nulls as a dictionary
    got = committer.catalog.load_table(("ns", "m")).scan().to_arrow().sort_by([("id", "ascending"), ("country", "ascending")])
    expected = pa.concat_tables([rows(0), rows(N), rows(2 * N).set_column(1, "country", pa.nulls(N, pa.string())), rows(0)])
    assert got.num_rows == 4 * N
    assert sorted(got.to_pylist(), key=lambda r: r["id"]) == sorted(expected.to_pylist(), key=lambda r: r["id"])
