"""Which files of a batch join into one table file, and what the joined file's metadata says."""

from __future__ import annotations

import math
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.conversions import from_bytes
from pyiceberg.table import Table, TableProperties
from pyiceberg.types import DoubleType, LongType, StringType

from ingester.commit import joining
from ingester.commit.dispositions import append
from tests.support import write_parquet
from tests.unit.test_dispositions import catalog, commit, source  # noqa: F401 - the fixture

SCHEMA = pa.schema([("id", pa.int64()), ("v", pa.string()), ("f", pa.float64())])


def small(tmp_path: Path, ids: list[int], schema: pa.Schema = SCHEMA) -> Path:
    columns = {"id": ids, "v": [f"s{i}" if i % 3 else None for i in ids], "f": [math.nan if i % 4 == 0 else i / 2 for i in ids]}
    return write_parquet(tmp_path / "in", pa.table({n: columns[n] for n in schema.names}, schema))


def table_files(table: Table) -> list[tuple[int, int]]:
    """(records, row groups) of each data file, by its first id."""
    table.refresh()
    out = []
    for task in sorted(table.scan().plan_files(), key=lambda t: t.file.file_path):
        out.append((task.file.record_count, len(task.file.split_offsets or [])))
    return sorted(out)


def make(catalog: Catalog, name: str, schema: pa.Schema = SCHEMA, **props: str) -> Table:  # noqa: F811
    from ingester.schema import to_iceberg

    return catalog.create_table(("ns", name), to_iceberg(schema), properties=props)


def test_small_files_of_one_layout_become_one_file_with_their_metrics(catalog: Catalog, tmp_path: Path) -> None:  # noqa: F811
    table = make(catalog, "one")
    files = [source(small(tmp_path, list(range(i * 10, i * 10 + 10)))) for i in range(4)]
    assert commit(table, append, files) == (40, True)
    assert table_files(table) == [(40, 4)]
    (task,) = table.scan().plan_files()
    ids = {f.name: table.schema().find_field(f.name).field_id for f in table.schema().fields}
    assert from_bytes(LongType(), task.file.lower_bounds[ids["id"]]) == 0
    assert from_bytes(LongType(), task.file.upper_bounds[ids["id"]]) == 39
    assert from_bytes(StringType(), task.file.lower_bounds[ids["v"]]) == "s1"
    assert from_bytes(DoubleType(), task.file.upper_bounds[ids["f"]]) == 39 / 2
    assert task.file.value_counts[ids["v"]] == 40 and task.file.null_value_counts[ids["v"]] == 14  # ids divisible by 3
    assert task.file.nan_value_counts[ids["f"]] == 10  # ids divisible by 4
    assert table.scan().to_arrow().column("id").to_pylist() == list(range(40))  # the files' order kept
    assert task.file.file_size_in_bytes == Path(task.file.file_path.removeprefix("file://")).stat().st_size


def test_a_joined_file_holds_at_most_its_row_groups_and_the_target_size(catalog: Catalog, tmp_path: Path,  # noqa: F811
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(joining, "JOIN_MAX_ROW_GROUPS", 2)
    table = make(catalog, "capped")
    files = [source(small(tmp_path, [i])) for i in range(5)]
    assert commit(table, append, files) == (5, True)
    assert table_files(table) == [(1, 1), (2, 2), (2, 2)]

    monkeypatch.setattr(joining, "JOIN_MAX_ROW_GROUPS", 256)
    one = source(small(tmp_path, [1])).footer.data_bytes  # type: ignore[union-attr]
    sized = make(catalog, "sized", **{TableProperties.WRITE_TARGET_FILE_SIZE_BYTES: str(3 * one)})
    assert commit(sized, append, [source(small(tmp_path, [i])) for i in range(5)]) == (5, True)
    assert table_files(sized) == [(2, 2), (3, 3)]  # three files' data bytes fit, a fourth does not


def test_large_files_and_other_layouts_get_files_of_their_own(catalog: Catalog, tmp_path: Path,  # noqa: F811
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    table = make(catalog, "mixed")
    narrow = pa.schema([("id", pa.int64()), ("v", pa.string())])  # the table's columns, fewer of them
    files = [source(small(tmp_path, [0, 1])), source(small(tmp_path, [2], narrow)),
             source(small(tmp_path, [3, 4])), source(small(tmp_path, [5], narrow))]
    assert commit(table, append, files) == (6, True)
    assert table_files(table) == [(2, 2), (4, 2)]  # one file per layout, interleaved as they came
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == list(range(6))

    big = small(tmp_path, list(range(1000)))
    monkeypatch.setattr(joining, "JOIN_BELOW_BYTES", pq.read_metadata(big).serialized_size + 2000)
    alone = make(catalog, "alone")
    assert commit(alone, append, [source(small(tmp_path, [7])), source(big), source(small(tmp_path, [8]))]) == (1002, True)
    assert table_files(alone) == [(2, 2), (1000, 1)]


def test_a_joined_file_that_changed_since_its_footer_was_read_is_named(catalog: Catalog, tmp_path: Path) -> None:  # noqa: F811
    from ingester.commit.options import WriteOptions
    from ingester.commit.source_files import BadFile

    narrow = pa.schema([("id", pa.int64()), ("v", pa.string())])  # no float column: no page read before the copy
    table = make(catalog, "changed", narrow)
    paths = [small(tmp_path, [i, i + 10], narrow) for i in range(3)]
    files = [source(p) for p in paths]  # footers read
    paths[1].write_bytes(paths[1].read_bytes()[:40])  # truncated after
    with pytest.raises(BadFile, match="cannot copy: parquet file shorter") as raised:
        commit(table, append, files, options=WriteOptions(verify_files=False))
    assert raised.value.file is files[1]
    assert raised.value.file.describe() in str(raised.value)
