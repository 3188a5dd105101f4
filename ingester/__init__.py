"""ingester: stream dlt-normalized parquet into Apache Iceberg.

The dlt destination factories are imported lazily (they pull in dlt)::

    from ingester import iceberg_rest   # drop-in for dlt-iceberg
    from ingester import iceberg        # embedded default, or any pyiceberg catalog
"""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "iceberg": "ingester.dlt.factory",
    "iceberg_rest": "ingester.dlt.factory",
    "iceberg_adapter": "ingester.dlt.adapter",
    "iceberg_partition": "ingester.dlt.adapter",
    "PartitionTransform": "ingester.dlt.adapter",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'ingester' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
