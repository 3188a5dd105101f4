"""The per-table freshness gauges, taken at scrape time."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from ingester.freshness import Freshness


def scrape(registry: CollectorRegistry) -> dict[tuple[str, str], float]:
    text = generate_latest(registry).decode()
    return {(s.name, s.labels["table"]): s.value for fam in text_string_to_metric_families(text) for s in fam.samples}


def test_ages_grow_between_scrapes_and_the_watermark_never_moves_back() -> None:
    now = [1000.0]
    registry = CollectorRegistry()
    fresh = Freshness(registry, clock=lambda: now[0])
    assert scrape(registry) == {}
    fresh.committed("ns.a", 990_000)
    fresh.committed("ns.b")  # a commit without any event time: no watermark
    now[0] = 1004.0
    assert scrape(registry) == {
        ("ingester_seconds_since_last_commit", "ns.a"): 4.0,
        ("ingester_seconds_since_last_commit", "ns.b"): 4.0,
        ("ingester_watermark_timestamp_seconds", "ns.a"): 990.0,
        ("ingester_watermark_age_seconds", "ns.a"): 14.0,
    }
    fresh.committed("ns.a", 980_000)  # older data committed later
    assert fresh.watermark("ns.a") == 990.0
    assert scrape(registry)[("ingester_seconds_since_last_commit", "ns.a")] == 0.0
