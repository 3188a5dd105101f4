"""``EventIds``: the event ids committed to one table, 16 bytes each, for the table's whole life.

An id is kept as its 128-bit blake2b digest: the newest ids in a Python set, the rest in two
numpy arrays (the digests' two 64-bit halves, ordered by the first), merged when the set grows
past a quarter of the arrays. Memory: 16 bytes per id in the arrays (16 MB per million ids),
about 100 bytes per id while it is in the set (at most ``max(MERGE_MIN, n / 4)`` of them), and
twice the arrays for a moment while merging. Two different ids match only if their digests
collide: about 1e-20 at a billion ids.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

import numpy as np
import numpy.typing as npt

DIGEST_BYTES = 16
MERGE_MIN = 65_536

Digests = npt.NDArray[np.uint64]
"""Digests as an ``(n, 2)`` array of their 64-bit halves (``as_digests``)."""


def digest(event_id: str) -> bytes:
    return hashlib.blake2b(event_id.encode(), digest_size=DIGEST_BYTES).digest()


def as_digests(raw: bytes | memoryview) -> Digests:
    """Concatenated 16-byte digests as an ``(n, 2)`` array (no copy)."""
    return np.frombuffer(raw, dtype=np.uint64).reshape(-1, 2)


class EventIds:
    """A set of event ids (``add``, ``in``, ``len``). Not thread-safe: one writer per table."""

    def __init__(self, ids: Iterable[str] = (), digests: Digests | None = None) -> None:
        self._high: npt.NDArray[np.uint64] = np.empty(0, np.uint64)
        self._low: npt.NDArray[np.uint64] = np.empty(0, np.uint64)
        self._recent: set[bytes] = set()
        if digests is not None and len(digests):
            self._merge(digests)
        for event_id in ids:
            self.add(event_id)

    def add(self, event_id: str) -> None:
        self._recent.add(digest(event_id))
        if len(self._recent) > max(MERGE_MIN, len(self._high) // 4):
            self._merge(as_digests(b"".join(self._recent)))
            self._recent.clear()

    def add_digests(self, digests: Digests) -> None:
        """Add ids already digested (as the ledger stores them)."""
        if len(digests):
            self._merge(digests)

    def __contains__(self, event_id: object) -> bool:
        return isinstance(event_id, str) and bool(self.known([event_id]))

    def known(self, event_ids: Iterable[str]) -> set[str]:
        """The ones of ``event_ids`` in the set (one vectorised lookup for all of them)."""
        ids = list(event_ids)
        digests = [digest(i) for i in ids]
        found = {i for i, d in zip(ids, digests) if d in self._recent}
        if not len(self._high) or len(found) == len(ids):
            return found
        pairs = as_digests(b"".join(digests))
        n = len(self._high)
        at = np.minimum(np.searchsorted(self._high, pairs[:, 0]), n - 1)
        same_high = self._high[at] == pairs[:, 0]
        hit = same_high & (self._low[at] == pairs[:, 1])
        found.update(ids[k] for k in np.flatnonzero(hit))
        for k in np.flatnonzero(same_high & ~hit):  # equal high halves, another low one first: rare
            i = int(at[k]) + 1
            while i < n and self._high[i] == pairs[k, 0]:
                if self._low[i] == pairs[k, 1]:
                    found.add(ids[k])
                    break
                i += 1
        return found

    def __len__(self) -> int:
        """Ids added, counting an id added twice twice until the next merge (merges drop repeats)."""
        return len(self._high) + len(self._recent)

    def _merge(self, digests: Digests) -> None:
        high = np.concatenate([self._high, digests[:, 0]])
        low = np.concatenate([self._low, digests[:, 1]])
        order = np.lexsort((low, high))  # by the high half, then the low one
        high, low = high[order], low[order]
        keep = np.ones(len(high), bool)
        keep[1:] = (high[1:] != high[:-1]) | (low[1:] != low[:-1])
        self._high, self._low = high[keep], low[keep]
