"""Idempotency markers: what a table's history says is committed, read incrementally."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.table import Table

from ingester.catalog import open_catalog
from ingester.iceberg_layer import markers as mk
from ingester.schema import to_iceberg
from ingester.settings import CatalogSettings

ROW = pa.table({"id": pa.array([1], pa.int64())})


@pytest.fixture
def table(tmp_path: Path) -> Table:
    catalog = open_catalog(CatalogSettings(), tmp_path / "home")
    catalog.create_namespace("ns")
    return catalog.create_table(("ns", "t"), to_iceberg(ROW.schema))


def commit(table: Table, **props: str) -> None:
    table.append(ROW, snapshot_properties=props)


def test_empty_table_has_no_markers(table: Table) -> None:
    markers = mk.MarkerCache().read("t", table)
    assert markers.snapshot_id is None and markers.committed_offset("g", "p0") == -1


def test_offsets_are_the_newest_per_group_and_ids_are_the_union(table: Table) -> None:
    commit(table, **{mk.OFFSETS_PREFIX + "g": json.dumps({"p0": 4}), mk.EVENT_IDS: json.dumps(["e1"])})
    commit(table, **{mk.OFFSETS_PREFIX + "g": json.dumps({"p0": 9, "p1": 2}), mk.LOAD_IDS: json.dumps(["l1"]),
                     mk.REPLACE_LOAD_ID: "l1"})
    commit(table, **{mk.OFFSETS_PREFIX + "other": json.dumps({"p0": 1}), mk.EVENT_IDS: json.dumps(["e2"])})
    markers = mk.MarkerCache().read("t", table)
    assert markers.offsets == {"g": {"p0": 9, "p1": 2}, "other": {"p0": 1}}
    assert markers.event_ids.known(["e0", "e1", "e2", "l1"]) == {"e1", "e2"} and len(markers.event_ids) == 2
    assert markers.replace_load_ids == {"l1"}
    assert markers.committed_offset("g", "p1") == 2 and markers.committed_offset("g", "p9") == -1


def test_offset_properties_carry_every_group_forward_and_never_move_back(table: Table) -> None:
    commit(table, **{mk.OFFSETS_PREFIX + "g": json.dumps({"p0": 9}), mk.OFFSETS_PREFIX + "h": json.dumps({"p0": 3})})
    markers = mk.MarkerCache().read("t", table)
    props = markers.offset_properties("g", {"p0": 5, "p1": 7})
    assert json.loads(props[mk.OFFSETS_PREFIX + "g"]) == {"p0": 9, "p1": 7}
    assert json.loads(props[mk.OFFSETS_PREFIX + "h"]) == {"p0": 3}


def test_the_watermark_is_carried_forward_and_never_moves_back(table: Table) -> None:
    cache = mk.MarkerCache()
    assert mk.WATERMARK not in cache.read("t", table).carried_properties("g", {})  # none known yet
    commit(table, **{mk.WATERMARK: "5000"})
    commit(table, **{mk.WATERMARK: "not a number"})  # another writer's value counts as none
    markers = cache.read("t", table)
    assert markers.watermark_ms == 5000
    assert markers.carried_properties("g", {}, 4000)[mk.WATERMARK] == "5000"
    assert markers.carried_properties("g", {}, 7000)[mk.WATERMARK] == "7000"
    assert mk.MarkerCache().read("t", table).watermark_ms == 5000  # read afresh from the lineage


def test_the_cache_reads_only_snapshots_it_has_not_seen(table: Table, monkeypatch: pytest.MonkeyPatch) -> None:
    cache = mk.MarkerCache()
    commit(table, **{mk.EVENT_IDS: json.dumps(["e0"])})
    oldest = table.current_snapshot().snapshot_id  # type: ignore[union-attr]
    commit(table, **{mk.EVENT_IDS: json.dumps(["e1"])})
    first = cache.read("t", table)
    first_id = first.snapshot_id
    assert cache.read("t", table) is first  # same snapshot: nothing read again
    commit(table, **{mk.EVENT_IDS: json.dumps(["e2"])})
    seen: list[int] = []
    metadata_class = type(table.metadata)
    real = metadata_class.snapshot_by_id

    def counting(self, snapshot_id: int):  # type: ignore[no-untyped-def]
        seen.append(snapshot_id)
        return real(self, snapshot_id)

    monkeypatch.setattr(metadata_class, "snapshot_by_id", counting)
    assert cache.read("t", table).event_ids.known(["e0", "e1", "e2", "e3"]) == {"e0", "e1", "e2"}
    assert first_id in seen and oldest not in seen  # walked back to the cached snapshot, no further
