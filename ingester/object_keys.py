"""Objects that appear in a bucket, and the routes that turn their keys into file events.

Both bucket sources (notifications and listing) describe a finished object as an ``ObjectRef``
and hand it to ``KeyRouter``: the first route whose pattern matches the key names the table,
namespace, disposition and hints. The event id is the object's identity (location, etag, size),
so the ledger loads an object once however often and by whichever path it is announced; an
object written again under the same key with new content (another etag) loads again.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from ingester.events import IDENTIFIER_PATTERN, FileEvent, InvalidEvent, WriteDisposition
from ingester.settings import ObjectRoute

_SEGMENT = IDENTIFIER_PATTERN.strip("^$")


class Unroutable(InvalidEvent):
    """No route matches the object's key (dead-lettered with this reason)."""


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """A finished object: ``location`` is ``s3://bucket/key`` or a local absolute path."""

    location: str
    size: int
    etag: str | None = None
    sequencer: str | None = None
    """S3's ordering token for events of one key (newer is greater); informational."""

    @property
    def bucket(self) -> str | None:
        parts = urlsplit(self.location)
        return parts.netloc if parts.scheme in ("s3", "s3a") else None

    @property
    def key(self) -> str:
        parts = urlsplit(self.location)
        if parts.scheme in ("s3", "s3a"):
            return parts.path.lstrip("/")
        return self.location.lstrip("/")

    def event_id(self) -> str:
        """The object's identity, stable across announcements, listings and restarts."""
        etag = (self.etag or "").strip('"')
        digest = hashlib.sha256(f"{self.location}\0{etag}\0{self.size}".encode()).hexdigest()
        return "obj:" + digest[:40]


def compile_pattern(pattern: str) -> re.Pattern[str]:
    """``incoming/{table}/**`` -> an anchored regex with named groups ``table`` / ``namespace``."""
    out, i = [], 0
    for m in re.finditer(r"\*\*/?|\*|\{(table|namespace)\}", pattern):
        out.append(re.escape(pattern[i : m.start()]))
        token = m.group(0)
        if token.startswith("**"):
            out.append("(?:.*/)?" if token.endswith("/") else ".*")
        elif token == "*":
            out.append("[^/]*")
        else:
            out.append(f"(?P<{m.group(1)}>{_SEGMENT})")
        i = m.end()
    out.append(re.escape(pattern[i:]))
    return re.compile("".join(out))


class KeyRouter:
    """Object -> ``FileEvent`` by the configured routes."""

    def __init__(self, routes: Sequence[ObjectRoute], buckets: Sequence[str] = ()) -> None:
        self._routes = [(r, compile_pattern(r.pattern)) for r in routes]
        self._buckets = frozenset(buckets)
        for r, regex in self._routes:
            if r.table is None and "table" not in regex.groupindex:
                raise ValueError(f"route {r.pattern!r}: needs {{table}} in the pattern or a fixed 'table'")

    def watches(self, ref: ObjectRef) -> bool:
        """False for objects of buckets that are not watched (skipped, not dead-lettered)."""
        return not self._buckets or ref.bucket is None or ref.bucket in self._buckets

    def route(self, ref: ObjectRef) -> FileEvent | None:
        """The event for ``ref``; ``None`` when its route skips it (another suffix, empty
        object); raises ``Unroutable`` naming the key when no route matches."""
        key = ref.key
        for r, regex in self._routes:
            if r.bucket is not None and ref.bucket != r.bucket:
                continue
            m = regex.fullmatch(key)
            if m is None:
                continue
            if ref.size == 0 or not key.endswith(tuple(r.suffixes)):
                return None
            groups = m.groupdict()
            disposition = WriteDisposition(r.write_disposition)
            if disposition is WriteDisposition.MERGE and not (r.primary_key or r.merge_key):
                raise Unroutable(f"route {r.pattern!r}: merge needs a primary_key or merge_key")
            return FileEvent(
                table=groups.get("table") or r.table or "",
                namespace=groups.get("namespace") or r.namespace,
                location=ref.location,
                byte_size=ref.size,
                event_id=ref.event_id(),
                write_disposition=disposition,
                primary_key=tuple(r.primary_key),
                merge_key=tuple(r.merge_key),
                columns=r.columns,
            )
        where = f" in bucket {ref.bucket!r}" if ref.bucket else ""
        patterns = ", ".join(repr(r.pattern) for r, _ in self._routes) or "none configured"
        raise Unroutable(f"no route matches key {key!r}{where} (routes: {patterns})")
