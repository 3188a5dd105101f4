"""Assemble catalog, reader, source, dead letters and engine from ``Settings``.

Test-only fault hook: ``INGESTER_TEST_CRASH=before-commit:<n>`` (or ``after-commit:<n>``),
read once when the engine is built, SIGKILLs the process when a batch is about to be
committed (or was just committed, before its ack) once at least ``n`` snapshots are
committed; crash tests use it to hit a point exactly.
"""

from __future__ import annotations

import os
import signal
from typing import Any

from pyarrow import fs as pafs
from pyiceberg.catalog import Catalog

from ingester.allocator import use_daemon_pool
from ingester.catalog import open_catalog
from ingester.commit.committer import SnapshotCommitter
from ingester.commit.ledger_writes import LedgerLag
from ingester.commit.options import WriteOptions
from ingester.decoding import build_decoder
from ingester.deadletter import DeadLetterSink, FolderDeadLetters, KafkaDeadLetters
from ingester.engine import CommitHook, Engine
from ingester.iceberg_layer.ledger import Ledger
from ingester.iceberg_layer.multi_commit import MultiTableCommit
from ingester.maintenance.maintainer import TableMaintainer
from ingester.maintenance.planning import MaintenancePolicy
from ingester.maintenance.schedule import MaintenanceSchedule
from ingester.metrics import Metrics
from ingester.publish import Stager
from ingester.retry import RetryPolicy
from ingester.routing import Router
from ingester.settings import Settings
from ingester.sources.base import EventQueue, Source
from ingester.sources.spool import SpoolQueue, SpoolSource
from ingester.storage import FileReader, s3_filesystem
from ingester.window import BatchLimits


def s3_for(settings: Settings) -> pafs.S3FileSystem | None:
    c = settings.catalog
    if not (c.s3_endpoint or c.s3_access_key_id):
        return None
    return s3_filesystem(
        c.s3_endpoint,
        c.s3_access_key_id.get_secret_value() if c.s3_access_key_id else None,
        c.s3_secret_access_key.get_secret_value() if c.s3_secret_access_key else None,
        c.s3_region,
        timeout_s=settings.storage.read_timeout_s,
    )


def build_committer(settings: Settings, group: str | None) -> SnapshotCommitter:
    """The daemon's committer: dedupe by the snapshots' markers and the ledger beside each table."""
    catalog = open_catalog(settings.catalog, settings.home_dir)
    return SnapshotCommitter(
        catalog,
        FileReader(settings.allowed_prefixes, s3_for(settings), settings.storage.read_concurrency),
        group=group,
        options=WriteOptions.from_settings(settings.commit, settings.storage.read_concurrency),
        ledger=Ledger(catalog),
        ledger_lag=LedgerLag(settings.commit.ledger_lag_s, settings.commit.ledger_lag_files),
        multi_commit=MultiTableCommit(catalog, settings.commit.atomic_multi_table),
    )


def build_source(settings: Settings, metrics: Metrics | None = None, *, listing_rounds: int | None = None) -> Source:
    """The configured queue; with ``objects.relist_interval_s``, merged with a listing of
    ``objects.prefixes`` on that schedule. ``listing_rounds``: stop listing after that many rounds
    (``ingester backfill``: one)."""
    if settings.source.kind == "listing":
        return build_listing(settings, settings.objects.listing_interval_s, metrics, rounds=listing_rounds)
    queue: Source
    if settings.source.kind == "kafka":
        from ingester.sources.kafka import KafkaSource

        queue = KafkaSource.from_settings(settings.source)
    elif settings.source.kind == "sqs":
        from ingester.sources.sqs import SqsSource

        queue = SqsSource.from_settings(settings.source)
    else:
        queue = SpoolSource(SpoolQueue(settings.spool_file))
    if not settings.objects.relist_interval_s:
        return queue
    from ingester.sources.merged import MergedSource

    return MergedSource([queue, build_listing(settings, settings.objects.relist_interval_s, metrics, group=queue.group)])


def build_listing(
    settings: Settings, interval_s: float, metrics: Metrics | None, rounds: int | None = None, group: str | None = "",
) -> Source:
    """``group``: the queue's it is merged with (SQS has none), default ``source.group_id``."""
    from ingester.object_keys import KeyRouter
    from ingester.sources.listers import StoreLister
    from ingester.sources.listing import CommittedIds, ListingSource

    o = settings.objects
    return ListingSource(
        o.prefixes, StoreLister(lambda: s3_client(settings)), KeyRouter(o.routes, o.buckets), Router(settings.routing),
        CommittedIds(open_catalog(settings.catalog, settings.home_dir)),
        group=settings.source.group_id if group == "" else group,
        interval_s=interval_s, max_inflight_files=o.max_inflight_files, rounds=rounds, metrics=metrics,
    )


def s3_client(settings: Settings) -> Any:
    """A boto3 S3 client for the configured store (path-style; the read timeout of ``storage``)."""
    import boto3
    from botocore.config import Config

    c = settings.catalog
    return boto3.client(
        "s3", endpoint_url=c.s3_endpoint, region_name=c.s3_region or "us-east-1",
        aws_access_key_id=c.s3_access_key_id.get_secret_value() if c.s3_access_key_id else None,
        aws_secret_access_key=c.s3_secret_access_key.get_secret_value() if c.s3_secret_access_key else None,
        config=Config(s3={"addressing_style": "path"}, connect_timeout=settings.storage.read_timeout_s,
                      read_timeout=settings.storage.read_timeout_s, retries={"mode": "standard"}),
    )


def build_queue(settings: Settings) -> EventQueue:
    """The producer side of the configured queue."""
    if settings.source.kind == "kafka":
        from ingester.sources.kafka import KafkaEventQueue

        return KafkaEventQueue.from_settings(settings.source)
    if settings.source.kind == "sqs":
        raise ValueError("source.kind = 'sqs' is fed by the object store's notifications: there is nothing to publish to")
    return SpoolQueue(settings.spool_file)


def build_stager(settings: Settings) -> Stager:
    return Stager(settings.staging_location, s3_for(settings))


def build_deadletters(settings: Settings) -> DeadLetterSink:
    if settings.deadletter.topic and settings.source.kind == "kafka":
        return KafkaDeadLetters.from_settings(settings.source, settings.deadletter.topic)
    return FolderDeadLetters(settings.deadletter_folder)


def retry_policy(settings: Settings) -> RetryPolicy:
    c = settings.commit
    return RetryPolicy(
        max_retries=c.max_retries,
        backoff_base=c.retry_backoff_base,
        min_wait_s=c.retry_min_wait_s,
        max_wait_s=c.retry_max_wait_s,
    )


def build_maintenance(settings: Settings, catalog: Catalog, ledger: Ledger | None = None) -> MaintenanceSchedule:
    """``ledger``: the committer's, to share its cache (default: a new one on ``catalog``)."""
    m = settings.maintenance
    policy = MaintenancePolicy(m.expire_older_than_s, m.retain_last, m.target_file_size_bytes, m.min_input_files, m.max_snapshots)
    return MaintenanceSchedule(catalog, TableMaintainer(policy, ledger=ledger or Ledger(catalog)), m.interval_s)


CRASH_ENV = "INGESTER_TEST_CRASH"


def crash_hook(spec: str) -> CommitHook:
    """The crash tests' ``CommitHook`` for ``<point>:<n>`` (see the module docstring)."""
    wanted, _, after = spec.partition(":")
    threshold = int(after)

    def crash(point: str, snapshots: int) -> None:
        if point == wanted and snapshots >= threshold:
            os.kill(os.getpid(), signal.SIGKILL)

    return crash


def build_engine(
    settings: Settings, source: Source | None = None, metrics: Metrics | None = None, *, listing_rounds: int | None = None
) -> Engine:
    """The daemon: also makes jemalloc arrow's pool (``ingester.allocator``)."""
    use_daemon_pool()
    metrics = metrics or Metrics()
    source = source or build_source(settings, metrics, listing_rounds=listing_rounds)
    w = settings.window
    committer = build_committer(settings, source.group)
    return Engine(
        source,
        committer,
        build_deadletters(settings),
        limits=BatchLimits(w.max_batch_files, w.max_batch_rows, w.max_batch_bytes, w.max_batch_age_s),
        max_inflight_bytes=w.max_inflight_bytes,
        router=Router(settings.routing),
        workers=settings.commit.workers,
        retry=retry_policy(settings),
        poll_max_records=settings.source.poll_max_records,
        poll_timeout_s=settings.source.poll_timeout_s,
        revoke_timeout_s=settings.source.revoke_timeout_s,
        metrics=metrics,
        maintenance=build_maintenance(settings, committer.catalog, committer.ledger) if settings.maintenance.enabled else None,
        commit_hook=crash_hook(spec) if (spec := os.environ.get(CRASH_ENV)) else None,
        decoder=build_decoder(settings),
    )
