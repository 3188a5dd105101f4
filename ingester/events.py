"""``FileEvent``: one parquet file (by location or inline) for one destination table.

The queue carries a JSON envelope (version 1)::

    {"v": 1, "table": "orders", "namespace": "shop",
     "location": "s3://bucket/load/orders.0.parquet",    # or "data": "<base64 parquet>"
     "rows": 1000, "bytes": 52311, "load_id": "1732540000.12", "event_id": "c0ffee...",
     "write_disposition": "append" | "replace" | "merge",
     "primary_key": ["id"], "merge_key": [], "keys_only": false, "verified": true,
     "columns": {"id": {"data_type": "bigint", "nullable": false, "primary_key": true}},
     "branch": "audit", "event_time": 1732540000.5}

Only ``table`` and one of ``location`` / ``data`` are required. ``event_id`` makes
re-publishing the same file idempotent. ``columns`` are dlt column hints (``data_type``,
``nullable``, ``partition``, ``x-partition-transform``, ``hard_delete``, ...).
``verified``: the producer decoded every page of the file or wrote it itself (set by
``ingester publish`` and ``ingester_queue``; see ``commit.verify_pages``).
``keys_only`` (merge only): the file lists merge-key values; the table's rows with those
keys are deleted and the file's rows are not inserted (the dlt queue destination sends the
parents of a load this way to each nested table, ahead of the load's nested rows).
``branch``: the table branch the file is committed to (write-audit-publish; created from
``main`` when missing); without it the route's branch (``routing.branches``), else ``main``.
``event_time``: when the file's data was made (Unix seconds; ``ingester publish`` and the dlt
destinations set the file's modification time). The newest a snapshot covers is its watermark
(``ingester.watermark-ms``); without it the queue's time of the message counts (Kafka's record
timestamp, SQS's sent time, a listed object's last-modified time).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from ingester.errors import describe_validation_error
from ingester.settings import BRANCH_PATTERN

ENVELOPE_VERSION = 1
MAX_ENVELOPE_BYTES = 16 * 1024 * 1024
IDENTIFIER_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_]{0,254}$"
BRANCH_HINT = "x-iceberg-branch"
"""The dlt table hint naming the branch a table's loads commit to (``iceberg_adapter(branch=)``)."""
PROPERTIES_HINT = "x-iceberg-table-properties"
"""The dlt table hint holding Iceberg table properties (``iceberg_adapter(table_properties=)``)."""


class InvalidEvent(ValueError):
    """The message is not a valid file event; the text names the field and the problem."""


class WriteDisposition(StrEnum):
    APPEND = "append"
    REPLACE = "replace"
    MERGE = "merge"


@dataclass(frozen=True, slots=True)
class FileEvent:
    """One parquet file for one table. Exactly one of ``location`` and ``data`` is set."""

    table: str
    namespace: str | None = None
    location: str | None = None
    data: bytes | None = None
    row_count: int | None = None
    byte_size: int = 0
    load_id: str | None = None
    event_id: str | None = None
    write_disposition: WriteDisposition = WriteDisposition.APPEND
    primary_key: tuple[str, ...] = ()
    merge_key: tuple[str, ...] = ()
    columns: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    keys_only: bool = False
    """Merge only: delete the rows whose keys the file lists; insert none of its rows."""
    verified: bool = False
    """The producer decoded every page of the file (``ingester publish``) or wrote it itself
    (``ingester_queue``): with ``commit.verify_pages = "unverified"`` it is not decoded again."""
    branch: str | None = None
    """The table branch to commit to (None: the route's, else ``main``)."""
    event_time: float | None = None
    """When the data was made (Unix seconds); the table's watermark follows the newest."""

    def describe(self) -> str:
        """Short human name for errors and logs (never the inline payload)."""
        what = self.location or f"<inline {len(self.data or b'')} bytes>"
        ident = f" event_id={self.event_id}" if self.event_id else ""
        return f"{self.table}:{what}{ident}"


class _Envelope(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: int = ENVELOPE_VERSION
    table: str = Field(pattern=IDENTIFIER_PATTERN)
    namespace: str | None = Field(None, pattern=IDENTIFIER_PATTERN)
    location: str | None = Field(None, min_length=1, max_length=4096)
    data: str | None = None
    rows: int | None = Field(None, ge=0)
    bytes: int | None = Field(None, ge=0)
    load_id: str | None = Field(None, max_length=256)
    event_id: str | None = Field(None, max_length=256)
    write_disposition: WriteDisposition = WriteDisposition.APPEND
    primary_key: list[str] = Field(default_factory=list, max_length=64)
    merge_key: list[str] = Field(default_factory=list, max_length=64)
    keys_only: bool = False
    verified: bool = False
    columns: dict[str, dict[str, Any]] = Field(default_factory=dict, max_length=10_000)
    branch: str | None = Field(None, pattern=BRANCH_PATTERN)
    event_time: float | None = Field(None, ge=0, allow_inf_nan=False)

    @field_validator("v")
    @classmethod
    def _version(cls, v: int) -> int:
        if v != ENVELOPE_VERSION:
            raise ValueError(f"unsupported envelope version {v}, expected {ENVELOPE_VERSION}")
        return v


def decode_event(raw: bytes) -> FileEvent:
    """Parse one queue message. Raises ``InvalidEvent`` naming the field that is wrong.

    A valid envelope is parsed and validated in one pass (pydantic's JSON parser); whatever that
    refuses is parsed again the way the errors are worded (``json``, then validation), so both
    paths accept the same envelopes and an invalid one gets the same reason either way."""
    if len(raw) > MAX_ENVELOPE_BYTES:
        raise InvalidEvent(f"envelope is {len(raw)} bytes, over the {MAX_ENVELOPE_BYTES} limit")
    try:
        env = _Envelope.model_validate_json(raw)
    except ValidationError:
        env = _validated(raw)
    if (env.location is None) == (env.data is None):
        raise InvalidEvent("exactly one of fields 'location' and 'data' must be set")
    data = None
    if env.data is not None:
        try:
            data = base64.b64decode(env.data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise InvalidEvent(f"field 'data': not base64: {exc}") from None
    if env.write_disposition is WriteDisposition.MERGE and not (env.primary_key or env.merge_key):
        raise InvalidEvent("field 'primary_key': merge needs a primary_key or merge_key")
    if env.keys_only and env.write_disposition is not WriteDisposition.MERGE:
        raise InvalidEvent("field 'keys_only': only a merge deletes by keys")
    return FileEvent(
        table=env.table,
        namespace=env.namespace,
        location=env.location,
        data=data,
        row_count=env.rows,
        byte_size=env.bytes if env.bytes is not None else len(data or b""),
        load_id=env.load_id,
        event_id=env.event_id,
        write_disposition=env.write_disposition,
        primary_key=tuple(env.primary_key),
        merge_key=tuple(env.merge_key),
        columns=env.columns,
        keys_only=env.keys_only,
        verified=env.verified,
        branch=env.branch,
        event_time=env.event_time,
    )


def _validated(raw: bytes) -> _Envelope:
    """The envelope in ``raw``, or ``InvalidEvent`` saying what is wrong with it."""
    try:
        obj = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, integers over the digit limit
        raise InvalidEvent(f"not JSON: {exc}") from None
    except RecursionError:
        raise InvalidEvent("not JSON: nested too deeply") from None
    if not isinstance(obj, dict):
        raise InvalidEvent(f"envelope must be a JSON object, got {type(obj).__name__}")
    try:
        return _Envelope.model_validate(obj)
    except ValidationError as exc:
        raise InvalidEvent(describe_validation_error(exc)) from None


def encode_event(event: FileEvent) -> bytes:
    """Serialise to the JSON envelope; ``decode_event(encode_event(e)) == e``."""
    body: dict[str, Any] = {"v": ENVELOPE_VERSION, "table": event.table}
    optional: dict[str, Any] = {
        "namespace": event.namespace,
        "location": event.location,
        "data": base64.b64encode(event.data).decode() if event.data is not None else None,
        "rows": event.row_count,
        "bytes": event.byte_size,
        "load_id": event.load_id,
        "event_id": event.event_id,
        "primary_key": list(event.primary_key) or None,
        "merge_key": list(event.merge_key) or None,
        "columns": {k: dict(v) for k, v in event.columns.items()} or None,
        "branch": event.branch,
        "event_time": event.event_time,
    }
    body.update({k: v for k, v in optional.items() if v is not None})
    if event.write_disposition is not WriteDisposition.APPEND:
        body["write_disposition"] = event.write_disposition.value
    if event.keys_only:
        body["keys_only"] = True
    if event.verified:
        body["verified"] = True
    return json.dumps(body, separators=(",", ":"), default=str).encode()
