from __future__ import annotations

import base64
import json

import pytest

from ingester.events import FileEvent, InvalidEvent, WriteDisposition, decode_event, encode_event


def test_roundtrip_location_and_inline() -> None:
    a = FileEvent("orders", "shop", location="s3://b/k.parquet", row_count=3, byte_size=10, load_id="1.2",
                  event_id="e1", write_disposition=WriteDisposition.MERGE, primary_key=("id",),
                  columns={"id": {"data_type": "bigint"}})
    assert decode_event(encode_event(a)) == a
    b = FileEvent("t", data=b"PAR1xyz", byte_size=7)
    assert decode_event(encode_event(b)) == b
    keys = FileEvent("items", location="k.parquet", write_disposition=WriteDisposition.MERGE, merge_key=("root",), keys_only=True)
    assert decode_event(encode_event(keys)) == keys and b'"keys_only":true' in encode_event(keys)


@pytest.mark.parametrize(
    ("raw", "needle"),
    [
        (b"{not json", "not JSON"),
        (b"[1,2]", "JSON object"),
        (b'{"location": "x"}', "field 'table'"),
        (b'{"table": "t"}', "exactly one of fields 'location' and 'data'"),
        (b'{"table": "t", "location": "a", "data": "AA=="}', "exactly one of"),
        (b'{"table": "../etc", "location": "a"}', "field 'table'"),
        (b'{"table": "t", "data": "!!!"}', "field 'data'"),
        (b'{"table": "t", "location": "a", "rows": -1}', "field 'rows'"),
        (b'{"table": "t", "location": "a", "rows": "many"}', "field 'rows'"),
        (b'{"table": "t", "location": "a", "write_disposition": "upsert"}', "field 'write_disposition'"),
        (b'{"table": "t", "location": "a", "write_disposition": "merge"}', "field 'primary_key'"),
        (b'{"table": "t", "location": "a", "surprise": 1}', "field 'surprise'"),
        (b'{"table": "t", "location": "a", "keys_only": true}', "field 'keys_only': only a merge"),
        (b'{"v": 9, "table": "t", "location": "a"}', "field 'v'"),
        (b'{"table": "t", "location": "a", "event_time": -1}', "field 'event_time'"),
        (b'{"table": "t", "location": "a", "event_time": "soon"}', "field 'event_time'"),
        (b'{"table": "t", "location": "a", "event_time": 1e999}', "field 'event_time'"),
        (b"\xff\xfe", "not JSON"),
    ],
)
def test_invalid_events_name_the_field(raw: bytes, needle: str) -> None:
    with pytest.raises(InvalidEvent, match=needle.replace("(", r"\(").replace(")", r"\)")):
        decode_event(raw)


def test_inline_bytes_count_as_size() -> None:
    raw = json.dumps({"table": "t", "data": base64.b64encode(b"12345").decode()}).encode()
    assert decode_event(raw).byte_size == 5


def test_the_branch_travels_in_the_envelope_and_is_checked() -> None:
    ev = FileEvent(table="t", location="s3://b/x.parquet", branch="audit")
    assert decode_event(encode_event(ev)) == ev and b'"branch":"audit"' in encode_event(ev)
    assert b"branch" not in encode_event(FileEvent(table="t", location="s3://b/x.parquet"))
    with pytest.raises(InvalidEvent, match="branch"):
        decode_event(b'{"v":1,"table":"t","location":"x","branch":"a b"}')


def test_the_event_time_travels_in_the_envelope() -> None:
    ev = FileEvent(table="t", location="s3://b/x.parquet", event_time=1_760_000_000.25)
    assert decode_event(encode_event(ev)) == ev and b'"event_time":1760000000.25' in encode_event(ev)
    assert b"event_time" not in encode_event(FileEvent(table="t", location="s3://b/x.parquet"))
