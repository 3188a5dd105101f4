"""How fresh each table is, computed at every scrape: seconds since its last commit, and how far
its watermark (the newest event time committed, ``ingester.watermark-ms`` in the snapshot
summary) is behind now."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector


class Freshness(Collector):
    """Per table: ``ingester_watermark_timestamp_seconds``, ``ingester_watermark_age_seconds`` and
    ``ingester_seconds_since_last_commit`` (the ages are taken when scraped, so they grow while
    nothing commits: what a freshness alert needs)."""

    NAMES = ("ingester_seconds_since_last_commit", "ingester_watermark_timestamp_seconds", "ingester_watermark_age_seconds")

    def __init__(self, registry: CollectorRegistry, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._committed: dict[str, float] = {}
        self._watermarks: dict[str, float] = {}
        registry.register(self)

    def committed(self, table: str, watermark_ms: int = -1) -> None:
        """``table`` committed now; its watermark is ``watermark_ms`` (-1: none known)."""
        with self._lock:
            self._committed[table] = self._clock()
            if watermark_ms >= 0:
                self._watermarks[table] = max(watermark_ms / 1000, self._watermarks.get(table, 0.0))

    def watermark(self, table: str) -> float | None:
        with self._lock:
            return self._watermarks.get(table)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        now = self._clock()
        with self._lock:
            committed, watermarks = dict(self._committed), dict(self._watermarks)
        since_name, mark_name, age_name = self.NAMES
        since = GaugeMetricFamily(since_name, "Seconds since the table's last commit", labels=["table"])
        mark = GaugeMetricFamily(mark_name, "Newest event time the table's data covers (Unix time)", labels=["table"])
        age = GaugeMetricFamily(age_name, "How far the table's watermark is behind now", labels=["table"])
        for table, at in sorted(committed.items()):
            since.add_metric([table], max(0.0, now - at))
        for table, wm in sorted(watermarks.items()):
            mark.add_metric([table], wm)
            age.add_metric([table], max(0.0, now - wm))
        yield from (since, mark, age)
