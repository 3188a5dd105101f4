"""dlt destinations on the ingester engine: direct loads (``iceberg``, ``iceberg_rest``) and
queue-fed loads (``ingester_queue``)."""

from __future__ import annotations

from ingester.dlt.adapter import PartitionTransform, iceberg_adapter, iceberg_partition
from ingester.dlt.factory import iceberg, iceberg_rest
from ingester.dlt.queue import ingester_queue

__all__ = ["PartitionTransform", "iceberg", "iceberg_adapter", "iceberg_partition", "iceberg_rest", "ingester_queue"]
