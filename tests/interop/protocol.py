"""What a reader script is asked (a request file) and what it answers (one JSON object on stdout).

Imported by the reader scripts inside their venvs, so: stdlib, pyarrow and `canonical` only.
"""

from __future__ import annotations

import json
import operator
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass
from importlib import metadata
from typing import Any

import pyarrow as pa

OPS: dict[str, Callable[[Any, Any], Any]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


SAMPLE_ROWS = 200
"""A table of at most this many rows is also answered row by row (canonical JSON, `"sample"`),
so a disagreement can be shown value by value."""


@dataclass(frozen=True)
class S3:
    """An S3-compatible store (path-style addressing)."""

    endpoint: str
    access_key_id: str
    secret_access_key: str
    region: str = "us-east-1"

    def pyiceberg_properties(self) -> dict[str, str]:
        """The store as pyiceberg FileIO properties."""
        return {
            "s3.endpoint": self.endpoint,
            "s3.access-key-id": self.access_key_id,
            "s3.secret-access-key": self.secret_access_key,
            "s3.region": self.region,
            "s3.force-virtual-addressing": "false",  # pyiceberg
            "s3.path-style-access": "true",  # iceberg-rust
        }


@dataclass(frozen=True)
class Filter:
    """A predicate `column op value`, value a JSON scalar (a date or timestamp as ISO text)."""

    column: str
    op: str
    value: Any

    def apply(self, left: Any, right: Any) -> Any:
        """`left op right` with Python operators (engine expressions overload them)."""
        return OPS[self.op](left, right)

    def sql(self) -> str:
        """The predicate as standard SQL (quoted identifier, inlined literal)."""
        ident = '"' + self.column.replace('"', '""') + '"'
        value = self.value
        if isinstance(value, bool):
            literal = "TRUE" if value else "FALSE"
        elif isinstance(value, (int, float)):
            literal = repr(value)
        else:
            literal = "'" + str(value).replace("'", "''") + "'"
        return f"{ident} {'=' if self.op == '==' else self.op} {literal}"


@dataclass(frozen=True)
class Request:
    """Which table to read (its metadata.json), where it is stored, and an optional filter."""

    metadata_location: str
    s3: S3 | None = None
    filter: Filter | None = None

    @property
    def path(self) -> str:
        """The location as a plain path when local (file:// stripped), else unchanged."""
        return self.metadata_location.removeprefix("file://")

    def dumps(self) -> str:
        """The request as the JSON a reader script is given."""
        return json.dumps(asdict(self))

    @classmethod
    def loads(cls, text: str) -> Request:
        """The inverse of `dumps`."""
        return cls.from_dict(json.loads(text))

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> Request:
        """The request from its JSON object."""
        return cls(
            metadata_location=raw["metadata_location"],
            s3=S3(**raw["s3"]) if raw.get("s3") else None,
            filter=Filter(**raw["filter"]) if raw.get("filter") else None,
        )


@dataclass
class Read:
    """What an engine read: the rows (as Arrow), its own type names, and its own row counts."""

    table: pa.Table
    types: dict[str, str]
    count: int
    filtered: pa.Table | None = None
    filtered_count: int | None = None


def versions(*packages: str) -> str:
    """`name version` of each installed distribution among `packages`."""
    found = []
    for name in packages:
        try:
            found.append(f"{name} {metadata.version(name)}")
        except metadata.PackageNotFoundError:
            pass
    return ", ".join(found)


def _answer(reader: str, packages: tuple[str, ...], request: Request, read: Callable[[Request], Read]) -> dict[str, Any]:
    """The JSON answer to one request (any exception becomes ``"error"``)."""
    from canonical import (  # a neighbour of the running script (this module is imported by the harness too)
        canonical_rows,
        summarize,
    )

    answer: dict[str, Any] = {
        "reader": reader,
        "version": versions(*packages),
        "rows": None,
        "count": None,
        "columns": {},
        "filtered_rows": None,
        "filtered_count": None,
        "sample": None,
        "error": None,
    }
    try:
        result = read(request)
        answer["rows"] = result.table.num_rows
        answer["count"] = result.count
        answer["columns"] = summarize(result.table, result.types)
        if result.table.num_rows <= SAMPLE_ROWS:
            answer["sample"] = canonical_rows(result.table)
        problems = []
        if result.count != result.table.num_rows:
            problems.append(f"count says {result.count} rows, the scan returned {result.table.num_rows}")
        if result.filtered is not None:
            answer["filtered_rows"] = result.filtered.num_rows
            answer["filtered_count"] = result.filtered_count
            if result.filtered_count != result.filtered.num_rows:
                problems.append(
                    f"filtered count says {result.filtered_count} rows, the filtered scan returned {result.filtered.num_rows}"
                )
        answer["error"] = "; ".join(problems) or None
    except Exception as exc:  # noqa: BLE001 - every failure is reported, never raised
        traceback.print_exc()
        answer["error"] = f"{type(exc).__name__}: {exc}"[:2000]
    return answer


def serve(reader: str, packages: tuple[str, ...], read: Callable[[Request], Read]) -> None:
    """Run `read` on the request(s) named in argv[1] and print one JSON answer per line.

    The file holds one request or a JSON list of them (answered in order, one line each, flushed
    as it goes, so a crash or timeout keeps the answers before it). Whatever the engine prints goes
    to stderr (fd 1 is pointed there), any exception becomes `"error"`, and a count path that
    disagrees with the rows it read is an error too (`"count"` / `"filtered_count"` say what it said).
    """
    stdout = os.fdopen(os.dup(1), "w", encoding="utf-8")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    with open(sys.argv[1], encoding="utf-8") as f:
        raw = json.load(f)
    for item in raw if isinstance(raw, list) else [raw]:
        answer = _answer(reader, packages, Request.from_dict(item), read)
        stdout.write(json.dumps(answer, ensure_ascii=False) + "\n")
        stdout.flush()
