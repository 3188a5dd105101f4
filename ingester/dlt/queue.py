"""Queue-fed loads: a dlt destination that stages each normalized parquet file and
publishes one event per file instead of committing; the daemon commits them."""

from __future__ import annotations

import atexit
import threading
from pathlib import Path
from typing import Any

import dlt
from dlt.common.destination import Destination
from dlt.common.schema.typing import TTableSchema
from dlt.common.storages.load_package import load_package_state
from dlt.common.typing import TDataItems

from ingester.publish import file_event, publish, table_hints
from ingester.settings import Settings
from ingester.sources.base import EventQueue


class SharedQueue:
    """One producer for every file the destination publishes (dlt calls the sink once per
    file, from several threads): opened on first use, closed at exit, reopened after a failure."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._queue: EventQueue | None = None
        self._lock = threading.Lock()

    def get(self) -> EventQueue:
        from ingester.wiring import build_queue

        with self._lock:
            if self._queue is None:
                self._queue = build_queue(self._settings)
                atexit.register(self.close)
            return self._queue

    def close(self) -> None:
        with self._lock:
            queue, self._queue = self._queue, None
        if queue is not None:
            queue.close()


def ingester_queue(settings: Settings | None = None, namespace: str | None = None, name: str = "ingester_queue") -> Destination[Any, Any]:
    """``dlt.pipeline(destination=ingester_queue())``: publish to the configured queue."""
    from ingester.wiring import build_stager

    cfg = settings or Settings()
    queue, stager = SharedQueue(cfg), build_stager(cfg)

    def sink(items: TDataItems, table: TTableSchema) -> None:
        name_ = str(table["name"])
        if name_.startswith("_dlt"):
            return
        load_id = load_package_state()["load_id"]
        event = file_event(Path(str(items)), name_, load_id=load_id, namespace=namespace, **table_hints(dict(table)))
        try:
            publish([event], stager, queue.get())
        except Exception:
            queue.close()  # a broken connection is not reused; dlt retries the job
            raise

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
