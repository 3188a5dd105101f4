"""What the parity tests compare: each side's tables in a form both sides can agree on.

A table's rows drop what differs by nature between two runs (load ids, random ``_dlt_id``s,
timestamps of dlt's own tables); a nested row names its parent by the parent's data instead of
its ``_dlt_id``. Everything else is compared exactly.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

RANDOM_COLUMNS = ("_dlt_load_id", "_dlt_id")
LINK_COLUMNS = ("_dlt_parent_id", "_dlt_root_id")
SYSTEM_KEYS = {  # columns of dlt's own tables that mean the same on both sides
    "loads": ("schema_name", "status"),
    "version": ("schema_name", "version", "engine_version"),
    "pipeline_state": ("pipeline_name", "version", "engine_version"),
}


def jsonable(value: Any) -> Any:
    """``value`` as JSON: timezone-aware timestamps in UTC with a ``Z``, bytes as base64,
    decimals, dates and times as their text."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, bytes):
        return "b64:" + base64.b64encode(value).decode()
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, datetime) and value.tzinfo is not None:
        return value.astimezone(timezone.utc).replace(tzinfo=None).isoformat() + "Z"
    return str(value)


def _key(row: Any) -> str:
    return json.dumps(row, sort_keys=True, default=str)


def by_dlt_id(tables: dict[str, Any]) -> dict[str, str]:
    """``_dlt_id`` -> the row's data (what a nested row's link points at)."""
    out = {}
    for name, table in tables.items():
        for row in table.get("rows") or ():
            if "_dlt_id" in row:
                out[row["_dlt_id"]] = f"{name}:{_key(data_of(row, {}))}"
    return out


def data_of(row: dict[str, Any], ids: dict[str, str]) -> dict[str, Any]:
    clean = {k: v for k, v in row.items() if k not in RANDOM_COLUMNS}
    for link in LINK_COLUMNS:
        if link in clean:
            clean[link] = ids.get(clean[link], "?unknown parent")
    return clean


def rows(tables: dict[str, Any], name: str, source: list[dict[str, Any]] | None = None) -> list[Any]:
    """The table's rows, comparable across sides, sorted."""
    raw = tables[name]["rows"] if source is None else source
    assert raw is not None, f"{name}: {tables[name].get('rows_error')}"
    kind = tables[name]["system"]
    if kind is not None:
        return sorted(([r.get(c) for c in SYSTEM_KEYS[kind]] for r in raw), key=_key)
    ids = by_dlt_id(tables)
    return sorted((data_of(r, ids) for r in raw), key=_key)


@dataclass(frozen=True)
class View:
    """A table as compared: columns (name, type), docs, partition fields, location under the
    warehouse, snapshot count, rows."""

    columns: list[Any]
    docs: dict[str, str]
    partition: list[Any]
    location: str
    snapshots: int
    rows: list[Any]


def relative_location(location: str, warehouse_marker: str) -> str:
    """The table's location below its warehouse (``.../warehouse/<here>`` or ``s3://<bucket>/<here>``)."""
    if warehouse_marker in location:
        return location.split(warehouse_marker, 1)[1].lstrip("/")
    return location.split("://", 1)[-1].split("/", 1)[-1]


def view(tables: dict[str, Any], name: str) -> View:
    t = tables[name]
    system = t["system"] is not None
    return View(
        columns=[c[0] if system else [c[0], c[1]] for c in t["schema"]],
        docs={} if system else {c[0]: c[3] for c in t["schema"] if c[3]},
        partition=t["partition"],
        location=relative_location(t["location"], "/warehouse/"),
        snapshots=t["snapshots"],
        rows=rows(tables, name),
    )
