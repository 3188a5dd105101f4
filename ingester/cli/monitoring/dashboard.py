"""The Grafana dashboard, declared once as panels of PromQL queries on ``ingester.metrics``.

Variables ``namespace``, ``pod`` and ``table`` (multi-value, "All" = ``.*``) filter every query;
rates use Grafana's ``$__rate_interval``. The freshness panel shows seconds since each table's
last commit; panels for an event-time watermark or the oldest unloaded file come with their
metrics (none exist yet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DAEMON = '{namespace=~"$namespace", pod=~"$pod"}'
TABLE = '{namespace=~"$namespace", pod=~"$pod", table=~"$table"}'
RATE = "[$__rate_interval]"
PANEL_WIDTH, PANEL_HEIGHT, COLUMNS = 12, 8, 2


@dataclass(frozen=True, slots=True)
class Query:
    expr: str
    legend: str


@dataclass(frozen=True, slots=True)
class Panel:
    title: str
    description: str
    unit: str
    queries: tuple[Query, ...]


def _per_table_rate(metric: str, scale: str = "") -> Query:
    return Query(f"sum by (table) (rate({metric}{TABLE}{RATE})){scale}", "{{table}}")


def _quantile(q: float) -> Query:
    return Query(f"histogram_quantile({q}, sum by (table, le) (rate(ingester_commit_seconds_bucket{TABLE}{RATE})))",
                 f"p{round(q * 100)} {{{{table}}}}")


PANELS: tuple[Panel, ...] = (
    Panel("Events admitted", "file events admitted per second: the input", "suffix: events/s",
          (_per_table_rate("ingester_events_total"),)),
    Panel("Rows committed", "rows committed to Iceberg per second", "suffix: rows/s",
          (_per_table_rate("ingester_rows_total"),)),
    Panel("Bytes committed", "event bytes committed per second", "Bps", (_per_table_rate("ingester_bytes_total"),)),
    Panel("Snapshots", "snapshots committed per minute (one per table per window)", "suffix: /min",
          (_per_table_rate("ingester_snapshots_total", " * 60"),)),
    Panel("Commit latency", "read + commit time of one batch, from the histogram", "s", (_quantile(0.5), _quantile(0.99))),
    Panel("Seconds since last commit", "freshness: time since each table's last committed batch", "s",
          (Query(f"time() - max by (table) (ingester_last_commit_timestamp_seconds{TABLE})", "{{table}}"),)),
    Panel("Watermark age", "freshness of the data: how far the newest committed event time is behind now", "s",
          (Query(f"min by (table) (ingester_watermark_age_seconds{TABLE})", "{{table}}"),)),
    Panel("Partition lag", "messages behind the end, per partition and in all", "short",
          (Query(f"sum by (partition) (ingester_partition_lag{DAEMON})", "{{partition}}"),
           Query(f"sum(ingester_partition_lag{DAEMON})", "all partitions"))),
    Panel("In-flight bytes", "admitted, not yet committed, against the limit that pauses the source", "bytes",
          (Query(f"sum by (pod) (ingester_inflight_bytes{DAEMON})", "{{pod}}"),
           Query(f"max by (pod) (ingester_max_inflight_bytes{DAEMON})", "limit {{pod}}"))),
    Panel("Source paused", "1 while backpressure pauses the source", "short",
          (Query(f"max by (pod) (ingester_source_paused{DAEMON})", "{{pod}}"),)),
    Panel("Daemons", "daemons answering scrapes, and those ready (consuming)", "short",
          (Query(f"count(ingester_ready{DAEMON})", "up"), Query(f"sum(ingester_ready{DAEMON})", "ready"))),
    Panel("Retries", "retried operations per second, by cause", "suffix: /s",
          (Query(f"sum by (what) (rate(ingester_retries_total{DAEMON}{RATE}))", "{{what}}"),)),
    Panel("Dead letters", "events set aside, by kind", "short",
          (Query(f"sum by (kind) (increase(ingester_dead_letters_total{DAEMON}{RATE}))", "{{kind}}"),)),
    Panel("Duplicates skipped", "replayed events recognised and skipped, per second", "suffix: events/s",
          (_per_table_rate("ingester_duplicate_events_total"),)),
)


def _variable(name: str, query: str) -> dict[str, Any]:
    return {
        "name": name, "label": name, "type": "query", "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "query": {"query": query, "refId": name}, "definition": query, "refresh": 2, "sort": 1,
        "multi": True, "includeAll": True, "allValue": ".*", "current": {"text": "All", "value": "$__all"},
    }


def _panel(n: int, panel: Panel) -> dict[str, Any]:
    return {
        "id": n + 1, "type": "timeseries", "title": panel.title, "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": (n % COLUMNS) * PANEL_WIDTH, "y": (n // COLUMNS) * PANEL_HEIGHT, "w": PANEL_WIDTH, "h": PANEL_HEIGHT},
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                    "tooltip": {"mode": "multi", "sort": "desc"}},
        "targets": [{"refId": chr(ord("A") + i), "expr": q.expr, "legendFormat": q.legend}
                    for i, q in enumerate(panel.queries)],
    }


def dashboard() -> dict[str, Any]:
    """The dashboard JSON (Grafana 10+, importable or provisioned)."""
    return {
        "uid": "ingester", "title": "ingester", "tags": ["ingester", "iceberg"], "editable": True,
        "schemaVersion": 39, "version": 1, "time": {"from": "now-1h", "to": "now"}, "refresh": "30s",
        "templating": {"list": [
            {"name": "datasource", "label": "data source", "type": "datasource", "query": "prometheus"},
            _variable("namespace", "label_values(ingester_ready, namespace)"),
            _variable("pod", 'label_values(ingester_ready{namespace=~"$namespace"}, pod)'),
            _variable("table", f"label_values(ingester_events_total{DAEMON}, table)"),
        ]},
        "panels": [_panel(n, p) for n, p in enumerate(PANELS)],
    }
