"""dlt destinations on the ingester engine."""

from __future__ import annotations

from ingester.dlt.queue import ingester_queue

__all__ = ["ingester_queue"]
