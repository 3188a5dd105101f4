"""The producer side: staging files, events for files and dlt load packages, publishing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingester.dlt.package import load_package_events
from ingester.events import WriteDisposition, decode_event, encode_event
from ingester.publish import Stager, event_id, file_event, publish, table_hints
from tests.support import flip_page_bytes, write_parquet


class ListQueue:
    def __init__(self) -> None:
        self.sent: list[tuple[bytes, bytes]] = []

    def put_many(self, payloads: Sequence[bytes], keys: Sequence[bytes] | None = None) -> int:
        self.sent += list(zip(payloads, keys or [b""] * len(payloads)))
        return len(payloads)

    def close(self) -> None:
        pass


def test_event_ids_are_stable_per_load_table_and_file() -> None:
    assert event_id("l1", "orders", "a.parquet", 10) == event_id("l1", "orders", "a.parquet", 99)
    assert event_id("l1", "orders", "a.parquet", 10) != event_id("l2", "orders", "a.parquet", 10)
    assert event_id(None, "orders", "a.parquet", 10) != event_id(None, "orders", "a.parquet", 11)


def test_file_event_counts_rows_and_bytes(tmp_path: Path) -> None:
    path = write_parquet(tmp_path, {"id": pa.array(range(7), pa.int64())})
    ev = file_event(path, "t", load_id="l1", primary_key=["id"], write_disposition=WriteDisposition.MERGE)
    assert (ev.row_count, ev.byte_size, ev.primary_key, ev.write_disposition) == (7, path.stat().st_size, ("id",), "merge")


def test_publish_stages_each_file_and_keys_events_by_table(tmp_path: Path) -> None:
    files = [write_parquet(tmp_path / "src", {"id": [i]}, f"f{i}.parquet") for i in range(2)]
    queue, stager = ListQueue(), Stager((tmp_path / "staging").as_uri())
    events = [file_event(f, t, load_id="l1") for f, t in zip(files, ["a", "b"])]
    assert publish(events, stager, queue) == 2
    for (payload, key), table, src in zip(queue.sent, ["a", "b"], files):
        ev = decode_event(payload)
        staged = tmp_path / "staging" / "l1" / table / src.name
        assert key == table.encode() and ev.location == staged.as_uri() and staged.read_bytes() == src.read_bytes()
    assert not list((tmp_path / "staging").rglob("*.part"))  # staged atomically


def test_staging_on_s3_without_a_store_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="needs S3 settings"):
        Stager("s3://bucket/staging").stage(write_parquet(tmp_path, {"id": [1]}), "x.parquet")


def test_table_hints_take_keys_and_fall_back_for_merge_without_keys() -> None:
    merge = {"write_disposition": "merge", "columns": {"id": {"name": "id", "primary_key": True}, "v": {"name": "v"}}}
    assert table_hints(merge)["primary_key"] == ["id"] and table_hints(merge)["columns"] == {"id": {"primary_key": True}, "v": {}}
    nested = {"write_disposition": "merge", "columns": {"_dlt_root_id": {"root_key": True}}}
    assert table_hints(nested)["merge_key"] == ["_dlt_root_id"]
    assert table_hints({"write_disposition": "merge", "columns": {"v": {}}})["write_disposition"] is WriteDisposition.APPEND


def test_load_package_events_skip_dlt_tables_and_unknown_files(tmp_path: Path) -> None:
    package = tmp_path / "1700000000.1"
    (package / "new_jobs").mkdir(parents=True)
    (package / "schema.json").write_text(json.dumps({"tables": {
        "orders": {"write_disposition": "append", "columns": {"id": {"data_type": "bigint"}}},
        "_dlt_loads": {"columns": {}},
    }}))
    for name in ("orders.abc.0.parquet", "_dlt_loads.abc.0.parquet", "stray.abc.0.parquet"):
        write_parquet(package / "new_jobs", {"id": [1]}, name)
    (event,) = load_package_events(package, namespace="shop")
    assert (event.table, event.namespace, event.load_id) == ("orders", "shop", "1700000000.1")


def test_a_nested_table_of_a_merge_gets_its_parents_keys_first_then_its_files_as_appends(tmp_path: Path) -> None:
    package = tmp_path / "1700000000.2"
    (package / "completed_jobs").mkdir(parents=True)
    (package / "schema.json").write_text(json.dumps({"tables": {
        "orders": {"write_disposition": "merge", "columns": {
            "id": {"primary_key": True}, "_dlt_id": {"row_key": True, "data_type": "text"}}},
        "orders__items": {"parent": "orders", "columns": {
            "sku": {"data_type": "text", "partition": True}, "_dlt_root_id": {"root_key": True, "data_type": "text"}}},
        "orders__tags": {"parent": "orders", "columns": {"_dlt_root_id": {"root_key": True}, "value": {}}},
    }}))
    write_parquet(package / "completed_jobs", {"id": [1, 2], "_dlt_id": ["r1", "r2"]}, "orders.a1.0.parquet")
    write_parquet(package / "completed_jobs", {"sku": ["x"], "qty": [3], "_dlt_root_id": ["r1"]}, "orders__items.b1.0.parquet")
    events = {}
    for ev in load_package_events(package):
        events.setdefault(ev.table, []).append(ev)
    assert [(e.write_disposition, e.primary_key) for e in events["orders"]] == [(WriteDisposition.MERGE, ("id",))]
    keys, rows = events["orders__items"]
    assert (keys.keys_only, keys.write_disposition, keys.merge_key, keys.row_count) == (True, "merge", ("_dlt_root_id",), 2)
    assert (rows.keys_only, rows.write_disposition, rows.merge_key) == (False, "append", ())
    assert keys.location is not None and pq.read_table(keys.location).to_pylist() == [
        {"sku": None, "qty": None, "_dlt_root_id": "r1"}, {"sku": None, "qty": None, "_dlt_root_id": "r2"}]
    (tags,) = events["orders__tags"]  # no nested rows in this load: the parents' old ones still go
    assert tags.keys_only and tags.location is not None
    assert pq.read_table(tags.location).to_pylist() == [{"_dlt_root_id": "r1"}, {"_dlt_root_id": "r2"}]
    assert tags.columns == {"_dlt_root_id": {"root_key": True}}

    queue, stager = ListQueue(), Stager((tmp_path / "staging").as_uri())
    assert publish([ev for evs in events.values() for ev in evs], stager, queue) == 4
    sent = [decode_event(payload) for payload, _ in queue.sent]
    assert [e.keys_only for e in sent] == [True, True, False, False]


def test_file_event_decodes_the_file_and_marks_it_verified(tmp_path: Path) -> None:
    path = write_parquet(tmp_path, pa.table({"id": list(range(5000)), "v": [str(i) for i in range(5000)]}))
    event = file_event(path, "t")
    assert event.verified and decode_event(encode_event(event)).verified
    flip_page_bytes(path, column=1)
    with pytest.raises(ValueError, match=f"{path.name}: not a readable parquet file"):
        file_event(path, "t")
    assert file_event(path, "t", written_here=True).verified  # a dlt package's file: dlt wrote it, not decoded again
