"""In-memory source for unit tests: partitions of payloads, commits recorded."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import anyio

from ingester.sources.base import Message, Position, RevokeCallback


class MemorySource:
    """A fixed set of partitions; ``add`` appends payloads; ``committed`` records acks."""

    def __init__(self, group: str = "memory") -> None:
        self.group = group
        self._log: dict[str, list[bytes]] = {}
        self._cursor: dict[str, int] = {}
        self.committed: dict[str, int] = {}
        self.paused = False
        self.pause_count = 0
        self._callbacks: list[RevokeCallback] = []

    def add(self, payloads: Iterable[bytes], partition: str = "p0") -> None:
        self._log.setdefault(partition, []).extend(payloads)

    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        out: list[Message] = []
        if not self.paused:
            for part, log in self._log.items():
                start = self._cursor.get(part, self.committed.get(part, 0))
                for off in range(start, min(len(log), start + max_records - len(out))):
                    out.append(Message(log[off], Position(part, off)))
                self._cursor[part] = start + len([m for m in out if m.position.partition == part])
        if not out:
            await anyio.sleep(min(timeout_s, 0.01))
        return out

    def pause(self) -> None:
        if not self.paused:
            self.pause_count += 1
        self.paused = True

    def resume(self) -> None:
        self.paused = False

    async def commit(self, offsets: Mapping[str, int]) -> None:
        for part, off in offsets.items():
            self.committed[part] = max(off, self.committed.get(part, 0))

    def on_revoke(self, callback: RevokeCallback) -> None:
        self._callbacks.append(callback)

    async def is_idle(self) -> bool:
        return all(self._cursor.get(p, self.committed.get(p, 0)) >= len(log) for p, log in self._log.items())

    async def aclose(self) -> None:
        return None
