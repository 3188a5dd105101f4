"""Object-store notification codecs: the S3 format and its wrappers, SeaweedFS filer events."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from typing import Any

import pytest

from ingester.events import InvalidEvent
from ingester.filer_pb import Entry, EventNotification
from ingester.object_events import ETAG_KEY, decode_filer_event, decode_s3_notification
from ingester.object_keys import ObjectRef


def s3_record(key: str, size: int = 10, etag: str = "0123abcd", name: str = "ObjectCreated:Put",
              bucket: str = "lake") -> dict[str, Any]:
    return {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": name,
            "s3": {"bucket": {"name": bucket}, "object": {"key": key, "size": size, "eTag": etag, "sequencer": "0A1B"}}}


def test_s3_records_url_decoded_keys() -> None:
    raw = json.dumps({"Records": [s3_record("in/orders/dt%3D1/my+file%C3%A9.parquet"),
                                  s3_record("in/x.parquet", name="ObjectRemoved:Delete")]}).encode()
    assert decode_s3_notification(raw) == [ObjectRef("s3://lake/in/orders/dt=1/my fileé.parquet", 10, "0123abcd", "0A1B")]


def test_s3_wrappers_give_the_same_object() -> None:
    inner = json.dumps({"Records": [s3_record("a/b.parquet", etag='"e1"')]})
    sns = json.dumps({"Type": "Notification", "MessageId": "m", "TopicArn": "arn:aws:sns:x", "Message": inner}).encode()
    bridge = json.dumps({"version": "0", "detail-type": "Object Created", "source": "aws.s3",
                         "detail": {"bucket": {"name": "lake"},
                                    "object": {"key": "a/b.parquet", "size": 10, "etag": "e1", "sequencer": "0A1B"}}}).encode()
    minio = json.dumps({"EventName": "s3:ObjectCreated:Put", "Key": "lake/a/b.parquet",
                        "Records": [s3_record("a/b.parquet", etag="e1", name="s3:ObjectCreated:Put")]}).encode()
    expected = [ObjectRef("s3://lake/a/b.parquet", 10, "e1", "0A1B")]
    assert decode_s3_notification(sns) == decode_s3_notification(bridge) == decode_s3_notification(minio) == expected
    assert decode_s3_notification(inner.encode())[0].event_id() == expected[0].event_id()


def test_s3_skips_test_events_and_removals() -> None:
    assert decode_s3_notification(json.dumps({"Service": "Amazon S3", "Event": "s3:TestEvent"}).encode()) == []
    assert decode_s3_notification(json.dumps({"detail-type": "Object Deleted", "detail": {}}).encode()) == []
    assert decode_s3_notification(json.dumps({"Records": [s3_record("k", name="ObjectRemoved:Delete")]}).encode()) == []


@pytest.mark.parametrize(("raw", "reason"), [
    (b"not json", "not JSON"),
    (b"[1]", "must be a JSON object"),
    (b'{"foo": 1}', "no 'Records' list"),
    (json.dumps({"Records": [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "b"}}}]}).encode(),
     "Records[0].s3.object"),
    (json.dumps({"Records": [s3_record("in/k.parquet", size=-1)]}).encode(), "size of key 'in/k.parquet'"),
])
def test_s3_bad_input_names_the_field(raw: bytes, reason: str) -> None:
    with pytest.raises(InvalidEvent, match=re.escape(reason)):
        decode_s3_notification(raw)


def filer_event(path: str, **entry: Any) -> tuple[bytes, bytes]:
    parent, _, name = path.rpartition("/")
    event = EventNotification(new_entry=Entry(name=name, **entry), new_parent_path=parent)
    return path.encode(), event.SerializeToString()


def test_filer_put_with_md5() -> None:
    md5 = hashlib.md5(b"hello").digest()
    key, value = filer_event("/buckets/lake/in/a.parquet", attributes={"file_size": 5, "md5": md5})
    assert decode_filer_event(key, value) == [ObjectRef("s3://lake/in/a.parquet", 5, md5.hex())]


def test_filer_etag_from_chunks_and_stored_etag() -> None:
    d1, d2 = hashlib.md5(b"a").digest(), hashlib.md5(b"b").digest()
    chunks = [{"offset": 0, "size": 3, "e_tag": base64.b64encode(d1).decode()},
              {"offset": 3, "size": 4, "e_tag": base64.b64encode(d2).decode()}]
    key, value = filer_event("/buckets/lake/k.parquet", chunks=chunks)
    assert decode_filer_event(key, value) == [ObjectRef("s3://lake/k.parquet", 7, f"{hashlib.md5(d1 + d2).hexdigest()}-2")]
    key, value = filer_event("/buckets/lake/k.parquet", chunks=chunks[:1])
    assert decode_filer_event(key, value)[0].etag == d1.hex()
    key, value = filer_event("/buckets/lake/k.parquet", chunks=chunks, extended={ETAG_KEY: b'"abc-2"'})
    assert decode_filer_event(key, value)[0].etag == "abc-2"


def test_filer_rename_uses_the_new_path() -> None:
    event = EventNotification(old_entry=Entry(name="tmp"), new_entry=Entry(name="final.parquet", attributes={"file_size": 1}),
                              new_parent_path="/buckets/lake/out")
    refs = decode_filer_event(b"/buckets/lake/tmp", event.SerializeToString())
    assert [r.location for r in refs] == ["s3://lake/out/final.parquet"]


def test_filer_skips_what_is_not_a_finished_object() -> None:
    assert decode_filer_event(*filer_event("/buckets/lake/in", is_directory=True)) == []
    assert decode_filer_event(*filer_event("/buckets/lake/.uploads/u1/0001_x.part", attributes={"file_size": 3})) == []
    assert decode_filer_event(*filer_event("/etc/config.toml", attributes={"file_size": 3})) == []
    assert decode_filer_event(*filer_event("/buckets/.system/owners/.complete")) == []
    assert decode_filer_event(*filer_event("/buckets/lake", is_directory=True)) == []
    delete = EventNotification(old_entry=Entry(name="a.parquet"), delete_chunks=True)
    assert decode_filer_event(b"/buckets/lake/a.parquet", delete.SerializeToString()) == []


def test_filer_garbage_is_invalid() -> None:
    with pytest.raises(InvalidEvent, match="key '/buckets/x'.*EventNotification"):
        decode_filer_event(b"/buckets/x", b"\xff\xff\xff")
