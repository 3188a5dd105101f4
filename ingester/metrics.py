"""Prometheus metrics and the ``/metrics``, ``/healthz``, ``/readyz`` HTTP endpoint.

The dashboard and alert rules in ``deploy/`` are built on these names (``ingester.cli.monitoring``).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from socketserver import ThreadingMixIn
from typing import Any, Protocol, runtime_checkable
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from ingester.freshness import Freshness

DEAD_LETTER_KINDS = ("invalid_event", "rejected_file")
"""Created at 0, so that the first dead letter of a kind is an increase an alert can see."""
SKIP_REASONS = ("already_loaded", "in_flight", "unroutable", "suffix", "unwatched")
"""Why a listed object is not handed on (``ingester_objects_skipped_total{reason}``)."""


class Metrics:
    """All metrics of one engine, in their own registry (several engines per process in tests)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.events = Counter("ingester_events", "File events admitted", ["table"], registry=r)
        self.rows = Counter("ingester_rows", "Rows committed", ["table"], registry=r)
        self.bytes = Counter("ingester_bytes", "Event bytes committed", ["table"], registry=r)
        self.snapshots = Counter("ingester_snapshots", "Snapshots committed", ["table"], registry=r)
        self.duplicates = Counter("ingester_duplicate_events", "Replayed events skipped", ["table"], registry=r)
        self.dead_letters = Counter("ingester_dead_letters", "Events set aside", ["kind"], registry=r)
        self.retries = Counter("ingester_retries", "Retried operations", ["what"], registry=r)
        self.commit_seconds = Histogram(
            "ingester_commit_seconds", "Read + commit time of one batch", ["table"], registry=r,
            buckets=(0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60),
        )
        self.inflight_bytes = Gauge("ingester_inflight_bytes", "Bytes admitted, not yet committed", registry=r)
        self.paused = Gauge("ingester_source_paused", "1 while the source is paused (backpressure)", registry=r)
        self.lag = Gauge("ingester_partition_lag", "Messages behind the end of the partition", ["partition"], registry=r)
        self.max_inflight_bytes = Gauge(
            "ingester_max_inflight_bytes", "Limit of in-flight bytes (past it the source is paused)", registry=r
        )
        self.last_commit = Gauge(
            "ingester_last_commit_timestamp_seconds", "When the table's last batch was committed (Unix time)",
            ["table"], registry=r,
        )
        self.last_admitted = Gauge(
            "ingester_last_admitted_timestamp_seconds", "When the table last admitted an event (Unix time)",
            ["table"], registry=r,
        )
        self.objects_discovered = Counter(
            "ingester_objects_discovered", "Finished objects announced, or listed and not loaded yet (once per process)", ["source"], registry=r
        )
        self.objects_skipped = Counter(
            "ingester_objects_skipped", "Objects not loaded: already loaded, in flight, not a finished object, other bucket, "
            "not a data file, unroutable (listings count each round)", ["source", "reason"], registry=r,
        )
        self.objects_loaded = Counter("ingester_objects_loaded", "Objects committed to a table", ["source"], registry=r)
        self.ready = Gauge("ingester_ready", "1 while the daemon consumes (what /readyz answers)", registry=r)
        self.listing_seconds = Histogram(
            "ingester_listing_duration_seconds", "Listing + ledger look-ups of one round (waits for room excluded)",
            ["source"], registry=r, buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300),
        )
        self.listing_last_round = Gauge(
            "ingester_listing_last_round_timestamp_seconds", "When the last listing round finished (Unix time)",
            ["source"], registry=r,
        )
        self.oldest_unloaded_age = Gauge(
            "ingester_objects_oldest_unloaded_age_seconds",
            "Age (by its mtime) of the oldest object discovered and not committed yet; 0 when none", ["source"],
            registry=r,
        )
        self.freshness = Freshness(r)
        for kind in DEAD_LETTER_KINDS:
            self.dead_letters.labels(kind)
        self._lag_partitions: set[str] = set()

    def set_lag(self, lag: Mapping[str, int]) -> None:
        """Lag of the partitions the source holds now; partitions it no longer reports are dropped."""
        for gone in self._lag_partitions - lag.keys():
            self.lag.remove(gone)
        for partition, behind in lag.items():
            self.lag.labels(partition).set(behind)
        self._lag_partitions = set(lag)


@runtime_checkable
class ReportsLag(Protocol):
    """A source that knows how far behind the end of each partition it reads (Kafka)."""

    def lag(self) -> Mapping[str, int]: ...


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        return None


def serve(
    metrics: Metrics, host: str, port: int, healthy: Callable[[], bool], ready: Callable[[], bool]
) -> _Server:
    """Start the endpoint in a daemon thread; ``server.shutdown()`` stops it. ``ingester_ready``
    reports ``ready()`` at each scrape."""
    metrics.ready.set_function(lambda: float(ready()))
    prom = make_wsgi_app(metrics.registry)

    def app(environ: dict[str, Any], start: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path in ("/healthz", "/readyz"):
            ok = healthy() if path == "/healthz" else ready()
            start("200 OK" if ok else "503 Service Unavailable", [("Content-Type", "text/plain")])
            return [b"ok\n" if ok else b"not ok\n"]
        return prom(environ, start)  # type: ignore[no-any-return]

    server = make_server(host, port, app, server_class=_Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="ingester-metrics", daemon=True).start()
    return server


class Heartbeat:
    """The consume loop beats; health fails when it stalls for ``stale_s``."""

    def __init__(self, stale_s: float = 60.0) -> None:
        self.stale_s = stale_s
        self._last = time.monotonic()

    def beat(self) -> None:
        self._last = time.monotonic()

    def alive(self) -> bool:
        return time.monotonic() - self._last < self.stale_s
