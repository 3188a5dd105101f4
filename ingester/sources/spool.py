"""Embedded durable queue: a SQLite file in WAL mode, one partition, acked by deletion.

Survives ``kill -9``: a message is removed only by ``commit`` after its snapshot is in
Iceberg. Each spool has a random id that names its partition, so markers recorded in
tables never match a new spool created at the same path.
"""

from __future__ import annotations

import sqlite3
import threading
import uuid
from collections.abc import Iterable, Mapping
from pathlib import Path

import anyio

from ingester.sources.base import Message, Pausable, Position, RevokeCallback

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL);
"""


class SpoolQueue:
    """Producer and consumer side of the spool file. Thread-safe; calls block briefly."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.Lock()
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=30)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        with self._lock:
            self._db.executescript(_SCHEMA)
            self._db.execute(
                "INSERT OR IGNORE INTO meta VALUES ('queue_id', ?)", (uuid.uuid4().hex[:12],)
            )
            (qid,) = self._db.execute("SELECT value FROM meta WHERE key='queue_id'").fetchone()
        self.partition = f"spool-{qid}"

    def put_many(self, payloads: Iterable[bytes], keys: Iterable[bytes] | None = None) -> int:
        """Append payloads in one transaction (keys are ignored: one partition)."""
        rows = [(p,) for p in payloads]
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            self._db.executemany("INSERT INTO events (payload) VALUES (?)", rows)
            self._db.execute("COMMIT")
        return len(rows)

    def read(self, after: int, limit: int) -> list[tuple[int, bytes]]:
        with self._lock:
            return self._db.execute(
                "SELECT id, payload FROM events WHERE id > ? ORDER BY id LIMIT ?", (after, limit)
            ).fetchall()

    def delete_below(self, offset: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM events WHERE id < ?", (offset,))

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.close()


class SpoolSource(Pausable):
    """``Source`` over a ``SpoolQueue`` (single consumer)."""

    def __init__(self, queue: SpoolQueue, group: str = "spool") -> None:
        self.group = group
        self._queue = queue
        self._cursor = 0

    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        if not self._paused:
            rows = await anyio.to_thread.run_sync(self._queue.read, self._cursor, max_records)
            if rows:
                self._cursor = rows[-1][0]
                part = self._queue.partition
                return [Message(bytes(payload), Position(part, i)) for i, payload in rows]
        await anyio.sleep(timeout_s)
        return []

    async def commit(self, offsets: Mapping[str, int]) -> None:
        offset = offsets.get(self._queue.partition)
        if offset is not None:
            await anyio.to_thread.run_sync(self._queue.delete_below, offset)

    def on_revoke(self, callback: RevokeCallback) -> None:
        """A spool is never revoked."""

    async def is_idle(self) -> bool:
        rows = await anyio.to_thread.run_sync(self._queue.read, self._cursor, 1)
        return not rows

    async def aclose(self) -> None:
        return None
