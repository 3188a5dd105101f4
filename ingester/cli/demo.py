"""Realistic demo data as a dlt source: customers (merge), orders with nested items
(append), page views partitioned by day (append). Deterministic for a seed."""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from typing import Any

import dlt

COUNTRIES = ["DE", "FR", "US", "BR", "JP", "IN", "NG", "SE"]
PRODUCTS = ["keyboard", "monitor", "mouse", "laptop stand", "usb-c hub", "webcam", "headset"]
START = datetime(2026, 1, 1, tzinfo=timezone.utc)


@dlt.source(name="shop")
def shop(seed: int = 7, customers: int = 500, orders: int = 2_000, page_views: int = 10_000) -> Any:
    rng = random.Random(seed)

    @dlt.resource(name="customers", write_disposition="merge", primary_key="customer_id")
    def customer_rows() -> Iterator[dict[str, Any]]:
        for i in range(1, customers + 1):
            yield {
                "customer_id": i,
                "name": f"customer {i}",
                "email": f"c{i}@example.com",
                "country": rng.choice(COUNTRIES),
                "signed_up_at": START + timedelta(minutes=rng.randrange(500_000)),
                "lifetime_value": round(rng.uniform(0, 5000), 2),
            }

    @dlt.resource(name="orders", write_disposition="append", primary_key="order_id")
    def order_rows() -> Iterator[dict[str, Any]]:
        for i in range(1, orders + 1):
            items = [
                {"sku": rng.choice(PRODUCTS), "quantity": rng.randint(1, 4), "price": round(rng.uniform(5, 900), 2)}
                for _ in range(rng.randint(1, 4))
            ]
            yield {
                "order_id": i,
                "customer_id": rng.randint(1, customers),
                "ordered_at": START + timedelta(seconds=rng.randrange(30_000_000)),
                "status": rng.choice(["placed", "paid", "shipped", "returned"]),
                "note": rng.choice(["", "gift wrap please", "leave at the door " * rng.randint(1, 20)]),
                "items": items,
            }

    @dlt.resource(  # type: ignore[call-overload]  # dlt's column typing has no x- hint keys
        name="page_views",
        write_disposition="append",
        columns={"viewed_at": {"data_type": "timestamp", "partition": True, "x-partition-transform": "day"}},
    )
    def page_view_rows() -> Iterator[dict[str, Any]]:
        for i in range(1, page_views + 1):
            yield {
                "view_id": i,
                "customer_id": rng.randint(1, customers),
                "path": f"/product/{rng.choice(PRODUCTS).replace(' ', '-')}",
                "viewed_at": START + timedelta(seconds=rng.randrange(2_000_000)),
                "duration_ms": rng.randint(50, 120_000),
            }

    return customer_rows, order_rows, page_view_rows
