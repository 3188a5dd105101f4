"""Codecs of object-store notifications: a message -> the finished objects it announces.

- ``decode_s3_notification``: the AWS S3 event format (``Records[].eventName = ObjectCreated:*``)
  as S3 sends it to SQS, wrapped by SNS (``Type: Notification``, the event as the ``Message``
  string), as EventBridge sends it (``detail-type: Object Created``), and as MinIO / Ceph send it
  to Kafka (MinIO adds ``EventName`` / ``Key`` around the same ``Records``).
- ``decode_filer_event``: SeaweedFS filer events (``filer_pb.EventNotification`` protobuf, the
  Kafka key the filer path), objects of S3 buckets (``/buckets/<bucket>/<key>``) only.

Only finished objects come out: test events, removals, directories, multipart parts (under
``/.uploads/``) and deletes give ``[]``. Malformed input raises ``InvalidEvent``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import posixpath
from collections.abc import Mapping
from typing import Any
from urllib.parse import unquote_plus

from google.protobuf.message import DecodeError

from ingester.events import MAX_ENVELOPE_BYTES, InvalidEvent
from ingester.filer_pb import EventNotification
from ingester.object_keys import ObjectRef

BUCKETS_DIR = "/buckets"
"""Where SeaweedFS's S3 gateway keeps buckets (the filer's ``-dirBuckets`` default)."""
UPLOADS_DIR = ".uploads"
"""SeaweedFS's folder of multipart parts in a bucket; the completed object is its own entry."""
ETAG_KEY = "Seaweed-X-Amz-ETag"
"""The entry attribute where the S3 gateway keeps an object's ETag (multipart objects, copies)."""


def decode_s3_notification(raw: bytes) -> list[ObjectRef]:
    """Objects created, from one S3-format notification (any of the wrappers above)."""
    doc = _json(raw, "S3 notification")
    if doc.get("Type") == "Notification" and isinstance(doc.get("Message"), str):  # SNS (to SQS)
        doc = _json(doc["Message"].encode(), "SNS Message")
    if "detail-type" in doc:
        return _eventbridge(doc)
    if doc.get("Event") == "s3:TestEvent":
        return []
    records = doc.get("Records")
    if not isinstance(records, list):
        raise InvalidEvent("S3 notification: no 'Records' list (nor an SNS, EventBridge or test event)")
    return [ref for n, record in enumerate(records) if (ref := _record(record, n)) is not None]


def _json(raw: bytes, what: str) -> dict[str, Any]:
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise InvalidEvent(f"{what} is {len(raw)} bytes, over the {MAX_ENVELOPE_BYTES} limit")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise InvalidEvent(f"{what}: not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidEvent(f"{what}: must be a JSON object, got {type(doc).__name__}")
    return doc


def _record(record: Any, n: int) -> ObjectRef | None:
    if not isinstance(record, dict):
        raise InvalidEvent(f"S3 notification: Records[{n}] is not an object")
    name = str(record.get("eventName", ""))
    if not name.removeprefix("s3:").startswith("ObjectCreated:"):
        return None
    s3 = _field(record, "s3", dict, f"Records[{n}]")
    bucket = _field(_field(s3, "bucket", dict, f"Records[{n}].s3"), "name", str, f"Records[{n}].s3.bucket")
    obj = _field(s3, "object", dict, f"Records[{n}].s3")
    key = unquote_plus(_field(obj, "key", str, f"Records[{n}].s3.object"))
    return _ref(bucket, key, obj.get("size"), obj.get("eTag"), obj.get("sequencer"), f"Records[{n}].s3.object")


def _eventbridge(doc: dict[str, Any]) -> list[ObjectRef]:
    if doc.get("detail-type") != "Object Created":
        return []
    detail = _field(doc, "detail", dict, "EventBridge event")
    bucket = _field(_field(detail, "bucket", dict, "detail"), "name", str, "detail.bucket")
    obj = _field(detail, "object", dict, "detail")
    key = _field(obj, "key", str, "detail.object")  # EventBridge keys are not URL-encoded
    return [_ref(bucket, key, obj.get("size"), obj.get("etag"), obj.get("sequencer"), "detail.object")]


def _ref(bucket: str, key: str, size: Any, etag: Any, sequencer: Any, where: str) -> ObjectRef:
    if not bucket or not key:
        raise InvalidEvent(f"S3 notification: {where}: empty bucket or key")
    if size is None:
        size = 0
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidEvent(f"S3 notification: {where}.size of key {key!r}: not a byte count: {size!r}")
    return ObjectRef(f"s3://{bucket}/{key}", size, str(etag).strip('"') if etag else None,
                     str(sequencer) if sequencer is not None else None)


def _field(obj: Mapping[str, Any], name: str, kind: type, where: str) -> Any:
    value = obj.get(name)
    if not isinstance(value, kind):
        what = "an object" if kind is dict else "a string"
        raise InvalidEvent(f"S3 notification: field '{where}.{name}' missing or not {what}")
    return value


def decode_filer_event(key: bytes | None, value: bytes) -> list[ObjectRef]:
    """The finished S3 object a SeaweedFS filer event announces (``[]`` for anything else).

    ``key`` is the filer path the filer sends as the Kafka key (the old path of a rename); the
    object's path is ``new_parent_path`` + the new entry's name. The etag is the one S3 HEAD and
    ListObjects report for the object, so the listing path names it by the same identity."""
    try:
        event = EventNotification.FromString(value)
    except DecodeError as exc:
        raise InvalidEvent(f"filer event at key {_text(key)!r}: not a filer_pb.EventNotification: {exc}") from None
    if not event.HasField("new_entry") or event.new_entry.is_directory:
        return []  # a delete, or a folder
    entry = event.new_entry
    parent = event.new_parent_path or posixpath.dirname(_text(key))
    path = posixpath.join(parent, entry.name)
    bucket, _, object_key = path.removeprefix(BUCKETS_DIR + "/").partition("/")
    if not path.startswith(BUCKETS_DIR + "/") or bucket.startswith(".") or not object_key:
        return []  # not an object of an S3 bucket (``/buckets/.system/`` is SeaweedFS's own)
    if object_key.startswith(UPLOADS_DIR + "/"):
        return []  # a part of a multipart upload; the completed object is an entry of its own
    return [ObjectRef(f"s3://{bucket}/{object_key}", _size(entry), _etag(entry))]


def _text(key: bytes | None) -> str:
    return (key or b"").decode("utf-8", "replace")


def _size(entry: Any) -> int:
    chunks = max((c.offset + c.size for c in entry.chunks), default=0)
    return max(entry.attributes.file_size, chunks, len(entry.content))


def _etag(entry: Any) -> str | None:
    """As SeaweedFS's S3 gateway (``getObjectETag``): the stored ETag, else the content md5, else
    from the chunks: one chunk's md5, or the md5 of the chunks' md5s and ``-<count>``."""
    stored = entry.extended.get(ETAG_KEY, b"").decode(errors="replace").strip('"')
    if stored:
        return stored
    if entry.attributes.md5:
        return str(entry.attributes.md5.hex())
    if not entry.chunks:
        return None
    digests = [_b64(c.e_tag) for c in entry.chunks]
    if len(digests) == 1:
        return digests[0].hex()
    return f"{hashlib.md5(b''.join(digests)).hexdigest()}-{len(digests)}"


def _b64(text: str) -> bytes:
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return b""  # as SeaweedFS: an etag that is not base64 contributes nothing
