"""dlt destinations on the ingester engine: direct loads (``iceberg``, ``iceberg_rest``) and
queue-fed loads (``ingester_queue``)."""

from __future__ import annotations

from ingester.dlt.adapter import iceberg_adapter
from ingester.dlt.factory import iceberg, iceberg_rest
from ingester.dlt.queue import ingester_queue

__all__ = ["iceberg", "iceberg_adapter", "iceberg_rest", "ingester_queue"]
