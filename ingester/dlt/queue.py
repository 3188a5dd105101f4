"""Queue-fed loads: a dlt destination that stages each normalized parquet file and
publishes one event per file instead of committing; the daemon commits them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dlt
from dlt.common.destination import Destination
from dlt.common.schema.typing import TTableSchema
from dlt.common.typing import TDataItems
from dlt.common.storages.load_package import load_package_state

from ingester.publish import file_event, publish, table_hints
from ingester.settings import Settings


def ingester_queue(settings: Settings | None = None, namespace: str | None = None, name: str = "ingester_queue") -> Destination[Any, Any]:
    """``dlt.pipeline(destination=ingester_queue())``: publish to the configured queue."""
    from ingester.wiring import build_queue, build_stager

    cfg = settings or Settings()

    def sink(items: TDataItems, table: TTableSchema) -> None:
        name_ = str(table["name"])
        if name_.startswith("_dlt"):
            return
        load_id = load_package_state()["load_id"]
        event = file_event(Path(str(items)), name_, load_id=load_id, namespace=namespace, **table_hints(dict(table)))
        queue = build_queue(cfg)
        try:
            publish([event], build_stager(cfg), queue)
        finally:
            queue.close()

    factory = dlt.destination(
        sink,
        batch_size=0,
        loader_file_format="parquet",
        name=name,
        naming_convention="snake_case",
        skip_dlt_columns_and_tables=False,
        max_table_nesting=1000,
    )
    return factory()
