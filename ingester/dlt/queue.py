"""Queue-fed loads: a dlt destination that stages each table's normalized parquet files and
publishes one event per file instead of committing; the daemon commits them.

Like the ``iceberg`` destination, every file job finishes without work and each table
publishes once its table chain is complete (``jobs.table_followups``): a nested table of a
merge then publishes its parents' keys ahead of its files (``package.load_events``), so the
daemon replaces a parent's nested rows as the direct destination does. ``upsert`` is the
default merge strategy here (the direct destination's is dlt-iceberg's ``delete-insert``): dlt
then derives the root row ids from the primary key and carries them into the nested rows
(``_dlt_root_id``), so the keys of the load alone reach a parent's old nested rows.
"""

from __future__ import annotations

import atexit
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from dlt.common.destination import Destination
from dlt.common.destination.client import FollowupJobRequest, LoadJob, PreparedTableSchema
from dlt.common.schema.typing import TTableSchema
from dlt.common.storages.load_package import LoadJobInfo, destination_state, load_package_state
from dlt.common.typing import TDataItems
from dlt.destinations import destination
from dlt.destinations.impl.destination.destination import DestinationClient
from dlt.destinations.job_impl import DestinationParquetLoadJob, FinalizedLoadJob, ReferenceFollowupJobRequest

from ingester.dlt.factory import KEY_HASH_MERGE_STRATEGIES
from ingester.dlt.jobs import StagedFileJob, table_followups
from ingester.dlt.package import load_events
from ingester.publish import publish
from ingester.settings import Settings
from ingester.sources.base import EventQueue


class SharedQueue:
    """One producer for every file the destination publishes (dlt runs the publishing jobs
    from several threads): opened on first use, closed at exit, reopened after a failure."""

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


class QueueClient(DestinationClient):
    """dlt's sink client, with the ``iceberg`` destination's jobs: parquet jobs are staged,
    each table's reference job calls the sink once with the reference file."""

    def create_load_job(self, table: PreparedTableSchema, file_path: str, load_id: str, restore: bool = False) -> LoadJob:
        if ReferenceFollowupJobRequest.is_reference_job(file_path):
            return DestinationParquetLoadJob(file_path, self.config, destination_state(), self.destination_callable)
        if table["name"] in self.schema.dlt_table_names():
            return FinalizedLoadJob(file_path)
        return StagedFileJob(file_path)

    def create_table_chain_completed_followup_jobs(
        self, table_chain: Sequence[PreparedTableSchema], completed_table_chain_jobs: Sequence[LoadJobInfo] | None = None
    ) -> list[FollowupJobRequest]:
        jobs = super().create_table_chain_completed_followup_jobs(table_chain, completed_table_chain_jobs)
        return [*jobs, *table_followups(table_chain, completed_table_chain_jobs)]


class QueueDestination(destination):
    """dlt's sink destination factory with ``QueueClient`` as its client."""

    @property
    def client_class(self) -> type[QueueClient]:
        return QueueClient


def ingester_queue(settings: Settings | None = None, namespace: str | None = None, name: str = "ingester_queue") -> Destination[Any, Any]:
    """``dlt.pipeline(destination=ingester_queue())``: publish to the configured queue."""
    from ingester.wiring import build_stager

    cfg = settings or Settings()
    queue, stager = SharedQueue(cfg), build_stager(cfg)

    def sink(items: TDataItems, table: TTableSchema) -> None:
        reference = Path(str(items))  # the table's reference job, in <package>/started_jobs/
        paths = [Path(p) for p in ReferenceFollowupJobRequest.resolve_references(str(reference)) if p]
        load_id = load_package_state()["load_id"]
        events = load_events(reference.resolve().parent.parent, dict(table), paths, load_id, namespace)
        try:
            publish(events, stager, queue.get())
        except Exception:
            queue.close()  # a broken connection is not reused; dlt retries the job
            raise

    return QueueDestination(
        destination_callable=sink,
        destination_name=name,
        loader_file_format="parquet",
        batch_size=0,
        naming_convention="snake_case",
        skip_dlt_columns_and_tables=False,
        max_table_nesting=1000,
        supported_loader_file_formats=["parquet", "reference"],
        supported_merge_strategies=KEY_HASH_MERGE_STRATEGIES,
    )
