"""Several sources as one (a notification queue and the listing that catches what it lost).

Partition names of the sources must differ (``topic/3`` vs ``listing/<prefix>``): offsets are
kept per partition, and each ack goes to the source the partition came from. Every source
shares the engine's consumer group (one set of offset markers in the snapshots).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from ingester.metrics import ReportsLag
from ingester.sources.base import Message, RevokeCallback, Source


class MergedSource:
    """``Source`` polling each of ``sources`` in turn (the first with the poll's wait, the others
    only when it returned nothing, so that none starves another)."""

    def __init__(self, sources: Sequence[Source]) -> None:
        if len(sources) < 2:
            raise ValueError("a merged source needs two sources or more")
        groups = {s.group for s in sources}
        if len(groups) > 1:
            raise ValueError(f"merged sources must share one consumer group, got {sorted(groups, key=str)}")
        self.group = sources[0].group
        self.sources = tuple(sources)
        self._owner: dict[str, Source] = {}
        self._turn = 0

    async def poll(self, max_records: int, timeout_s: float) -> list[Message]:
        out: list[Message] = []
        n = len(self.sources)
        for i in range(n):
            source = self.sources[(self._turn + i) % n]
            wait = 0.0 if out else timeout_s / n
            for m in await source.poll(max_records - len(out), wait):
                self._owner.setdefault(m.position.partition, source)
                out.append(m)
            if len(out) >= max_records:
                break
        self._turn = (self._turn + 1) % n
        return out

    def pause(self) -> None:
        for s in self.sources:
            s.pause()

    def resume(self) -> None:
        for s in self.sources:
            s.resume()

    async def commit(self, offsets: Mapping[str, int]) -> None:
        """Each partition's offset to the source it came from."""
        for source in self.sources:
            mine = {p: o for p, o in offsets.items() if self._owner.get(p) is source}
            if mine:
                await source.commit(mine)

    def on_revoke(self, callback: RevokeCallback) -> None:
        for s in self.sources:
            s.on_revoke(callback)

    async def is_idle(self) -> bool:
        for s in self.sources:
            if not await s.is_idle():
                return False
        return True

    def lag(self) -> dict[str, int]:
        """The lag of the sources that report one."""
        out: dict[str, int] = {}
        for s in self.sources:
            if isinstance(s, ReportsLag):
                out.update(s.lag())
        return out

    async def aclose(self) -> None:
        """Close every source, also when one fails (the first failure is raised)."""
        failures: list[Exception] = []
        for s in self.sources:
            try:
                await s.aclose()
            except Exception as exc:
                failures.append(exc)
        if failures:
            raise failures[0]
