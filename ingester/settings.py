"""Typed settings: env vars ``INGESTER_*`` (nested with ``__``) and an optional TOML file.

The TOML file is ``$INGESTER_CONFIG`` or ``./ingester.toml`` when present. Settings are frozen
and validated at construction. Secrets are ``SecretStr``: they never appear in reprs or logs;
nor do the password of a catalog URI or secret-looking ``kafka_options`` (masked in reprs and dumps).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_serializer, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

DEFAULT_HOME = Path(".ingester")
BRANCH_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,254}$"
DEFAULT_NAMESPACE = "default"
DEFAULT_TOPIC = "ingester-events"
DEFAULT_MAX_BATCH_FILES = 1_000
DEFAULT_MAX_BATCH_ROWS = 5_000_000
DEFAULT_MAX_BATCH_BYTES = 512 * 1024 * 1024
DEFAULT_MAX_BATCH_AGE_S = 10.0
DEFAULT_MAX_INFLIGHT_BYTES = 1024 * 1024 * 1024
DEFAULT_MERGE_BATCH_SIZE = 500_000
DEFAULT_WRITE_CHUNK_BYTES = 128 * 1024 * 1024
DEFAULT_MAINTENANCE_INTERVAL_S = 600.0
DEFAULT_EXPIRE_OLDER_THAN_S = 6 * 3600.0
DEFAULT_RETAIN_LAST = 100
DEFAULT_MAX_SNAPSHOTS = 200
DEFAULT_TARGET_FILE_SIZE_BYTES = 128 * 1024 * 1024
DEFAULT_MIN_INPUT_FILES = 5
DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0
DEFAULT_LISTING_INTERVAL_S = 60.0
DEFAULT_MAX_INFLIGHT_FILES = 1_000
CONFIG_ENV = "INGESTER_CONFIG"
MASK = "**********"
SECRET_OPTION = re.compile(r"pass|secret|token|credential|private|oauth", re.IGNORECASE)


def mask_uri(uri: str | None) -> str | None:
    """``scheme://user:**********@host/...``: a URI's password never shows."""
    if not uri:
        return uri
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    user, _, host = parts.netloc.rpartition("@")
    return urlunsplit(parts._replace(netloc=f"{user.partition(':')[0]}:{MASK}@{host}"))


def mask_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """Raw client options with the values of secret-looking keys (password, token...) masked."""
    return {k: MASK if SECRET_OPTION.search(k) else v for k, v in options.items()}


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class CatalogSettings(_Section):
    """Which Iceberg catalog to write to. ``sql`` with no uri is the embedded SQLite catalog."""

    type: Literal["sql", "rest"] = "sql"
    name: str = "ingester"
    uri: str | None = Field(None, description="REST catalog URI, or SQLAlchemy URI for sql")
    warehouse: str | None = Field(None, description="warehouse location or REST warehouse name")
    credential: SecretStr | None = Field(None, description="OAuth2 client credentials id:secret")
    oauth2_server_uri: str | None = Field(None, description="OAuth2 token endpoint")
    scope: str | None = Field(None, description="OAuth2 scope")
    token: SecretStr | None = Field(None, description="bearer token")
    sigv4_enabled: bool = False
    signing_region: str | None = None
    signing_name: str | None = Field(None, description="SigV4 service name, e.g. s3tables, glue")
    s3_endpoint: str | None = None
    s3_access_key_id: SecretStr | None = None
    s3_secret_access_key: SecretStr | None = None
    s3_region: str | None = None
    properties: dict[str, SecretStr] = Field(
        default_factory=dict, description="extra pyiceberg catalog properties, passed through"
    )

    @field_serializer("uri")
    def _masked_uri(self, uri: str | None) -> str | None:
        return mask_uri(uri)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        return [(k, mask_uri(v) if k == "uri" else v) for k, v in super().__repr_args__()]


class SourceSettings(_Section):
    """Where file events come from: the embedded spool (default), Kafka, an SQS queue of S3
    notifications, or listings of ``objects.prefixes``."""

    kind: Literal["spool", "kafka", "sqs", "listing"] = "spool"
    format: Literal["ingester", "s3-events", "seaweedfs-filer"] = Field(
        "ingester",
        description="what a message holds: our event envelope, S3-format object notifications (S3 via SQS/SNS/EventBridge, "
        "MinIO, Ceph), or SeaweedFS filer events; objects are routed by objects.routes",
    )
    spool_path: Path | None = Field(None, description="SQLite queue file; default <home>/queue.db")
    bootstrap_servers: str = "127.0.0.1:9092"
    topics: list[str] = Field(default_factory=lambda: [DEFAULT_TOPIC])
    topic_pattern: str | None = None
    group_id: str = "ingester"
    poll_max_records: int = Field(500, ge=1)
    poll_timeout_s: float = Field(0.2, gt=0)
    session_timeout_ms: int = Field(10_000, ge=1000)
    revoke_timeout_s: float = Field(
        20.0, gt=0, le=50, description="how long a member losing partitions commits before the group goes on"
    )
    kafka_options: dict[str, Any] = Field(default_factory=dict, description="raw aiokafka options")
    sqs_queue_url: str | None = Field(None, description="SQS queue of S3 notifications (kind sqs; AWS credentials from the usual chain)")
    sqs_endpoint: str | None = Field(None, description="SQS endpoint (default: AWS's, from the queue's region)")
    sqs_region: str | None = Field(None, description="SQS region (default: the AWS chain's)")
    sqs_wait_time_s: int = Field(1, ge=0, le=20, description="long-poll wait of a receive that finds nothing")
    sqs_visibility_timeout_s: int = Field(
        300, ge=1, le=43_200, description="a received message not deleted by then is delivered again: above the commit time"
    )
    sqs_max_messages: int = Field(10, ge=1, le=10, description="messages per receive (SQS allows 10)")

    @model_validator(mode="after")
    def _sqs(self) -> SourceSettings:
        if self.kind == "sqs" and not self.sqs_queue_url:
            raise ValueError("source.sqs_queue_url is required for source.kind = 'sqs' (INGESTER_SOURCE__SQS_QUEUE_URL)")
        if self.kind == "sqs" and self.format != "s3-events":
            raise ValueError("source.kind = 'sqs' carries S3 notifications: set source.format = 's3-events' (SQS positions "
                             "do not outlive a restart, so only events with an object identity are deduplicated)")
        return self

    @field_serializer("kafka_options")
    def _masked_options(self, options: dict[str, Any]) -> dict[str, Any]:
        return mask_options(options)

    def __repr_args__(self) -> Iterable[tuple[str | None, Any]]:
        return [(k, mask_options(v) if k == "kafka_options" else v) for k, v in super().__repr_args__()]


class WindowSettings(_Section):
    """When a per-table micro-batch closes, and how much may be in flight."""

    max_batch_files: int = Field(DEFAULT_MAX_BATCH_FILES, ge=1)
    max_batch_rows: int = Field(DEFAULT_MAX_BATCH_ROWS, ge=1)
    max_batch_bytes: int = Field(DEFAULT_MAX_BATCH_BYTES, ge=1)
    max_batch_age_s: float = Field(DEFAULT_MAX_BATCH_AGE_S, gt=0)
    max_inflight_bytes: int = Field(DEFAULT_MAX_INFLIGHT_BYTES, ge=1)


class CommitSettings(_Section):
    """How batches become snapshots."""

    workers: int = Field(4, ge=1, description="tables committing concurrently")
    max_retries: int | None = Field(None, ge=0, description="None: retry transient errors until shutdown")
    retry_backoff_base: float = Field(2.0, ge=1.0)
    retry_min_wait_s: float = Field(0.2, ge=0)
    retry_max_wait_s: float = Field(30.0, ge=0)
    strict_casting: bool = False
    merge_batch_size: int = Field(DEFAULT_MERGE_BATCH_SIZE, ge=1)
    zero_copy: bool = Field(True, description="register parquet files as-is when their schema fits")
    verify_pages: Literal["unverified", "all"] = Field(
        "unverified",
        description="which files registered as-is have every page decoded first: those whose producer did not (events without 'verified', e.g. bucket sources), or all",
    )
    atomic_multi_table: Literal["auto", "off"] = Field(
        "auto",
        description="auto: the tables of a dlt load (data tables and dlt_loads), and the batches of different tables waiting "
        "together in one daemon worker, commit in one atomic commit on the SQL catalog (one database transaction) and on REST "
        "catalogs serving POST /v1/{prefix}/transactions/commit, one table after another elsewhere; off: each table on its own",
    )
    ledger_lag_s: float = Field(
        60.0, ge=0,
        description="write a table's ledger at most this often from its commits (the snapshots' markers hold what it lacks, "
                    "and maintenance writes it before expiring any snapshot); 0: after every commit",
    )
    ledger_lag_files: int = Field(
        10_000, ge=1,
        description="or as soon as this many committed files wait for their tables' ledgers (the rows held until then, all tables together)",
    )
    write_chunk_bytes: int = Field(
        DEFAULT_WRITE_CHUNK_BYTES, ge=1024 * 1024,
        description="arrow bytes per rewritten data file (unpartitioned tables stream row groups; partitioned ones hold up to 3 such chunks)",
    )
    table_properties: dict[str, dict[str, str]] = Field(
        default_factory=dict,
        description="ns.table, event table or * -> Iceberg table properties set on create and whenever they differ "
                    "(e.g. write.parquet.compression-codec, write.target-file-size-bytes, write.metadata.previous-versions-max, "
                    "write.metadata.delete-after-commit.enabled)",
    )
    sort_orders: dict[str, list[str]] = Field(
        default_factory=dict,
        description="ns.table, event table or * -> the table's sort order, columns in order (\"ts\" ascending, \"ts desc\" "
                    "descending); it wins over the files' sort hints (x-sort / sort). New rewritten and compacted files are sorted by it",
    )

    @field_validator("sort_orders")
    @classmethod
    def _sort_terms(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for table, terms in value.items():
            for term in terms:
                name, _, direction = term.strip().partition(" ")
                if not name or direction.strip().lower() not in ("", "asc", "desc"):
                    raise ValueError(f"sort order of {table!r}: {term!r} is not 'column', 'column asc' or 'column desc'")
        return value


class RoutingSettings(_Section):
    """Event table -> Iceberg table."""

    namespace: str = DEFAULT_NAMESPACE
    namespace_prefix: str = ""
    table_map: dict[str, str] = Field(default_factory=dict, description="event table -> ns.table")
    branches: dict[str, str] = Field(
        default_factory=dict,
        description="event table or ns.table -> the branch its commits go to (write-audit-publish; an event's own branch wins)",
    )

    @model_validator(mode="after")
    def _branch_names(self) -> RoutingSettings:
        for table, branch in self.branches.items():
            if not re.match(BRANCH_PATTERN, branch):
                raise ValueError(f"routing.branches[{table!r}]: {branch!r} is not a valid branch name")
        return self


class ObjectRoute(_Section):
    """Object key -> table: the first route whose ``pattern`` matches the key wins.

    ``pattern`` is matched against the whole key (without the bucket): ``{table}`` and
    ``{namespace}`` match one path segment (a plain identifier), ``*`` any text within a segment,
    ``**`` any number of segments (hive folders such as ``dt=2026-12-01/`` included)."""

    pattern: str = Field(description="key pattern, e.g. incoming/{table}/**")
    bucket: str | None = Field(None, description="only keys of this bucket (default: any watched bucket)")
    table: str | None = Field(None, description="table when the pattern has no {table}")
    namespace: str | None = Field(None, description="namespace when the pattern has no {namespace}")
    write_disposition: Literal["append", "replace", "merge"] = "append"
    primary_key: list[str] = Field(default_factory=list)
    merge_key: list[str] = Field(default_factory=list)
    columns: dict[str, dict[str, Any]] = Field(default_factory=dict, description="dlt column hints")
    suffixes: list[str] = Field(
        default_factory=lambda: [".parquet"], description="keys with another ending are skipped (e.g. _SUCCESS)"
    )


class ObjectSettings(_Section):
    """Bucket sources: files that appear under a prefix, announced by the object store or listed."""

    routes: list[ObjectRoute] = Field(default_factory=list, description="object key -> table; no match: dead letter")
    buckets: list[str] = Field(default_factory=list, description="buckets watched; objects of others are skipped (default: all)")
    prefixes: list[str] = Field(
        default_factory=list,
        description="listed by source.kind=listing and relist_interval_s: s3://bucket/prefix/ or a local folder (readable without an allowed_prefixes entry)",
    )
    listing_interval_s: float = Field(DEFAULT_LISTING_INTERVAL_S, gt=0, description="source.kind=listing: time between listing rounds")
    max_inflight_files: int = Field(
        DEFAULT_MAX_INFLIGHT_FILES, ge=1, description="listed files handed on and not yet committed, at most"
    )
    relist_interval_s: float = Field(
        0.0, ge=0,
        description="beside a queue source (kafka): list the prefixes on start and then this often, to catch lost notifications (0: off)",
    )


class StorageSettings(_Section):
    """Reading the parquet files that events name."""

    allowed_prefixes: list[str] = Field(
        default_factory=list, description="locations events may name; default: <home>/staging"
    )
    staging: str | None = Field(None, description="where `publish` copies files; default <home>/staging")
    read_concurrency: int = Field(8, ge=1, description="files of a batch opened at once when one is in S3: footers read, and files copied when registered as-is, in parallel (local files and tables: one at a time, which is faster)")
    read_timeout_s: float = Field(120.0, gt=0, description="S3 connect / request timeout; a slower request is retried")


class DeadLetterSettings(_Section):
    folder: Path | None = Field(None, description="default <home>/deadletter")
    topic: str | None = Field(None, description="Kafka dead-letter topic")


class MetricsSettings(_Section):
    host: str = "127.0.0.1"
    port: int = Field(0, ge=0, le=65535, description="0 disables the HTTP endpoint")


class MaintenanceSettings(_Section):
    """Snapshot expiry and small-file compaction, run by each table's commit worker when due."""

    enabled: bool = Field(True, description="run maintenance from the daemon on a schedule")
    interval_s: float = Field(DEFAULT_MAINTENANCE_INTERVAL_S, gt=0, description="time between rounds per table")
    expire_older_than_s: float = Field(
        DEFAULT_EXPIRE_OLDER_THAN_S, ge=0,
        description="expire snapshots older than this (time travel only: dedupe reads the table's ledger, it has no horizon)",
    )
    retain_last: int = Field(DEFAULT_RETAIN_LAST, ge=1, description="always keep this many newest snapshots")
    max_snapshots: int = Field(
        DEFAULT_MAX_SNAPSHOTS, ge=2,
        description="a table holding more snapshots is maintained at once and keeps only the newest retain_last, whatever their age: the bound on its metadata",
    )
    target_file_size_bytes: int = Field(
        DEFAULT_TARGET_FILE_SIZE_BYTES, ge=1, description="compacted data file size (on disk, estimated)"
    )
    min_input_files: int = Field(
        DEFAULT_MIN_INPUT_FILES, ge=1, description="compact a partition once it has this many small files"
    )

    @model_validator(mode="after")
    def _bounds(self) -> MaintenanceSettings:
        if self.max_snapshots <= self.retain_last:
            raise ValueError(f"maintenance.max_snapshots ({self.max_snapshots}) must be above maintenance.retain_last "
                             f"({self.retain_last})")
        return self


class Settings(BaseSettings):
    """All settings of one ingester process."""

    model_config = SettingsConfigDict(
        env_prefix="INGESTER_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    home: Path = DEFAULT_HOME
    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    shutdown_timeout_s: float = Field(
        DEFAULT_SHUTDOWN_TIMEOUT_S, gt=0, le=600,
        description="after SIGTERM/SIGINT, exit within this: what is not committed by then stays unacked (delivered again)",
    )
    catalog: CatalogSettings = CatalogSettings()
    source: SourceSettings = SourceSettings()
    window: WindowSettings = WindowSettings()
    commit: CommitSettings = CommitSettings()
    routing: RoutingSettings = RoutingSettings()
    objects: ObjectSettings = ObjectSettings()
    storage: StorageSettings = StorageSettings()
    deadletter: DeadLetterSettings = DeadLetterSettings()
    metrics: MetricsSettings = MetricsSettings()
    maintenance: MaintenanceSettings = MaintenanceSettings()

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if self.catalog.type == "rest" and not self.catalog.uri:
            raise ValueError("catalog.uri is required for a REST catalog (INGESTER_CATALOG__URI)")
        if self.source.format != "ingester" and not self.objects.routes:
            raise ValueError(f"source.format = {self.source.format!r} needs objects.routes (key pattern -> table)")
        if self.source.format == "seaweedfs-filer" and not self.objects.buckets:
            raise ValueError("source.format = 'seaweedfs-filer' needs objects.buckets: the filer announces every bucket's "
                             "files, the Iceberg tables' own too")
        if (self.source.kind == "listing" or self.objects.relist_interval_s) and not self.objects.prefixes:
            raise ValueError("objects.prefixes is required for listing (INGESTER_OBJECTS__PREFIXES)")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        path = os.environ.get(CONFIG_ENV) or "ingester.toml"
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if Path(path).is_file():
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=path))
        return tuple(sources)

    @property
    def home_dir(self) -> Path:
        return self.home.expanduser().resolve()

    @property
    def spool_file(self) -> Path:
        return self.source.spool_path or self.home_dir / "queue.db"

    @property
    def staging_location(self) -> str:
        return self.storage.staging or (self.home_dir / "staging").as_uri()

    @property
    def allowed_prefixes(self) -> list[str]:
        """``storage.allowed_prefixes`` (default: the staging location) and the listed prefixes."""
        return [*(self.storage.allowed_prefixes or [self.staging_location]), *self.objects.prefixes]

    @property
    def deadletter_folder(self) -> Path:
        return self.deadletter.folder or self.home_dir / "deadletter"
