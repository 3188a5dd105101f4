"""``ingester top``'s view from two readings of a metrics page (no daemon); a live one in tmux
runs in tests/integration/test_terminal.py."""

from __future__ import annotations

import json

from prometheus_client import generate_latest
from rich.console import Console

from ingester.cli.top import Reading, as_json, endpoint_url, render, view
from ingester.metrics import Metrics


def reading(metrics: Metrics, at: float, endpoint: str = "d:9108") -> Reading:
    from prometheus_client.parser import text_string_to_metric_families

    text = generate_latest(metrics.registry).decode()
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return Reading(endpoint, at, samples)


def test_endpoint_urls() -> None:
    assert endpoint_url("10.0.0.7:9108") == "http://10.0.0.7:9108/metrics"
    assert endpoint_url("http://h:1") == endpoint_url("http://h:1/") == "http://h:1/metrics"
    assert endpoint_url("https://h/custom/path") == "https://h/custom/path"


def test_rates_ages_and_daemon_columns_from_two_readings() -> None:
    m = Metrics()
    m.rows.labels("ns.a").inc(100)
    m.events.labels("ns.a").inc(10)
    m.events.labels("ns.b").inc(1)
    m.last_commit.labels("ns.a").set(1000.0)
    m.set_lag({"t/0": 5, "t/1": 7})
    m.ready.set(1)
    before = reading(m, 1010.0)
    m.rows.labels("ns.a").inc(50)
    m.snapshots.labels("ns.a").inc(2)
    m.dead_letters.labels("invalid_event").inc()
    m.paused.set(1)
    d = view(before, reading(m, 1012.0))
    assert (d.up, d.ready, d.lag, d.paused, d.dead_letters) == (True, True, 12, True, 1)
    a, b = d.tables
    assert (a.table, a.rows_per_s, a.events_per_s, a.rows, a.snapshots, a.last_commit_age_s) == ("ns.a", 25.0, 0.0, 150, 2, 12.0)
    assert (b.table, b.rows, b.last_commit_age_s) == ("ns.b", 0, None)
    assert view(None, before).tables[0].rows_per_s is None  # one reading: no rate yet

    console = Console(width=160, record=True)
    console.print(render([d], 2.0))
    screen = console.export_text()
    assert "ns.a" in screen and "25.0" in screen and "12s ago" in screen and "never" in screen
    assert json.loads(as_json([d]))[0]["tables"][0]["rows_per_s"] == 25.0


def test_a_counter_reset_shows_no_rate_and_a_down_endpoint_its_error() -> None:
    m = Metrics()
    m.rows.labels("ns.a").inc(100)
    before = reading(m, 1.0)
    restarted = Metrics()
    restarted.rows.labels("ns.a").inc(3)
    assert view(before, reading(restarted, 2.0)).tables[0].rows_per_s is None
    down = view(None, Reading("d:1", 3.0, {}, "URLError: refused"))
    console = Console(width=160, record=True)
    console.print(render([down], 2.0))
    assert not down.up and "down: URLError: refused" in console.export_text()
