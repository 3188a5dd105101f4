"""Configuration specs of the dlt destinations (resolved by dlt from arguments, env, toml).

``IcebergClientConfiguration`` (destination ``iceberg``): with nothing set, the catalog and
warehouse of the daemon (``ingester.settings.Settings``: the embedded SQLite catalog under
``INGESTER_HOME``); or any pyiceberg catalog given by ``catalog_properties``.
``IcebergRestClientConfiguration`` (destination ``iceberg_rest``): the parameters of
dlt-iceberg 0.6.4's ``iceberg_rest``, same names and defaults, so a switched pipeline finds
the same catalog (``dlt_catalog``), namespace (``default``) and table names. Both are checked
when dlt resolves them (``on_resolved``: a value that cannot apply fails there, naming the
option) and hold secrets: never log ``catalog_props()``.
"""

from __future__ import annotations

import dataclasses
import string
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Dict, Final, Optional
from urllib.parse import urlparse

from dlt.common.configuration import NotResolved, configspec
from dlt.common.configuration.exceptions import ConfigurationValueError
from dlt.common.destination.client import DestinationClientDwhConfiguration
from dlt.common.schema import Schema
from dlt.common.typing import TSecretStrValue
from pydantic import SecretStr

from ingester.errors import is_transient
from ingester.retry import RetryPolicy
from ingester.settings import DEFAULT_MERGE_BATCH_SIZE, CatalogSettings, Settings

if TYPE_CHECKING:
    from ingester.iceberg_layer.multi_commit import AtomicSetting

DEFAULT_MAX_RETRIES = 5
DEFAULT_RETRY_BACKOFF_BASE = 2.0
SQL_URI_PREFIXES = ("sqlite:", "postgresql:", "postgresql+", "mysql:", "mysql+")
DLT_TABLE_PREFIX = "_dlt_"
DEFAULT_HARD_DELETE_COLUMN = "_dlt_deleted_at"
REST_CATALOG_NAME = "dlt_catalog"  # dlt-iceberg's: SQL catalogs keep tables apart by it
REST_NAMESPACE = "default"
REST_INTERNAL_TABLE_PREFIX = "_dlt"  # dlt's own names: _dlt_loads, _dlt_version, _dlt_pipeline_state
REST_SCOPE = "PRINCIPAL_ROLE:ALL"
REST_SIGNING_NAME = "execute-api"
LAYOUT_FIELDS = ("namespace", "dataset_name", "table_name")
ABSOLUTE_LOCATIONS = ("s3://", "gs://", "az://", "file://", "hdfs://")


def is_retryable(exc: BaseException) -> bool:
    """Transient errors, plus pyiceberg's ``WaitingForLockException`` (a catalog lock held by
    another writer), which dlt-iceberg retries too."""
    from pyiceberg.exceptions import WaitingForLockException

    return isinstance(exc, WaitingForLockException) or is_transient(exc)


def physical_table_name(table_name: str, internal_table_prefix: str) -> str:
    """The Iceberg name of dlt table ``table_name``: dlt's own tables (``_dlt_*``) take
    ``internal_table_prefix`` instead of ``_dlt`` (``"dlt"``: ``_dlt_loads`` -> ``dlt_loads``),
    as in dlt-iceberg; every other name is kept."""
    if not table_name.startswith(DLT_TABLE_PREFIX):
        return table_name
    return f"{internal_table_prefix.rstrip('_')}_{table_name.removeprefix(DLT_TABLE_PREFIX)}"


@configspec
class IcebergClientConfiguration(DestinationClientDwhConfiguration):
    """Any pyiceberg catalog; with no ``catalog_properties`` the daemon's own catalog."""

    destination_type: Final[str] = dataclasses.field(  # type: ignore[misc]
        default="iceberg", init=False, repr=False, compare=False
    )
    namespace: Optional[str] = None
    """Iceberg namespace of the tables; default: the pipeline's dataset name."""
    catalog_name: Optional[str] = None
    """pyiceberg catalog name; default: the daemon's (``ingester``)."""
    catalog_properties: Optional[Dict[str, Any]] = None
    """pyiceberg catalog properties (``type``, ``uri``, ``warehouse``, ``s3.*``, ...)."""
    ingester_home: Optional[str] = None
    """INGESTER_HOME override for the embedded catalog (not ``home``: dlt would read $HOME)."""
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_backoff_base: float = DEFAULT_RETRY_BACKOFF_BASE
    merge_batch_size: Optional[int] = None
    """Keys per hash probe of a merge (bounds its memory); None: ``DEFAULT_MERGE_BATCH_SIZE``."""
    strict_casting: bool = False
    internal_table_prefix: str = "dlt"
    """Prefix of dlt's own tables in the catalog (``dlt`` -> ``dlt_loads``): names every catalog takes."""
    hard_delete_column: Optional[str] = DEFAULT_HARD_DELETE_COLUMN
    """Merge rows where this column is set delete their key (a bool column: true; any other
    type: not null), as dlt's ``hard_delete`` hint; None: off."""
    table_location_layout: Optional[str] = None
    """Location of new tables, with ``{namespace}``, ``{dataset_name}`` (the namespace too) and
    ``{table_name}``; relative layouts go under the warehouse. None: the catalog decides."""
    register_new_tables: bool = False
    """Register tables found under ``<warehouse>/<namespace>/`` (local warehouse) that the
    catalog does not list yet, before loading."""
    atomic_multi_table: Optional[str] = None
    """``auto``: the tables of a load (and ``_dlt_loads``) commit atomically where the catalog
    can (SQL catalogs; REST catalogs with the multi-table commit endpoint); ``off``: per table.
    None: the daemon's ``commit.atomic_multi_table`` (``INGESTER_COMMIT__ATOMIC_MULTI_TABLE``)."""

    def on_resolved(self) -> None:
        if not self.internal_table_prefix.rstrip("_"):
            raise ConfigurationValueError("internal_table_prefix must contain at least one character other than '_'")
        if self.merge_batch_size is not None and self.merge_batch_size < 1:
            raise ConfigurationValueError(f"merge_batch_size must be at least 1 (or None), got {self.merge_batch_size}")
        if self.table_location_layout is not None:
            names = {f for _, f, _, _ in string.Formatter().parse(self.table_location_layout) if f is not None}
            if unknown := names - set(LAYOUT_FIELDS):
                raise ConfigurationValueError(
                    f"table_location_layout {self.table_location_layout!r}: unknown placeholder "
                    f"{sorted(unknown)[0]!r} (use {{namespace}}, {{dataset_name}}, {{table_name}})"
                )
        if self.atomic_multi_table not in (None, "auto", "off"):
            raise ConfigurationValueError(f"atomic_multi_table must be 'auto' or 'off', got {self.atomic_multi_table!r}")
        if self.register_new_tables and self.local_warehouse() is None:
            raise ConfigurationValueError(
                "register_new_tables scans a local warehouse folder (a path or file:// URI of a SQL "
                f"catalog); warehouse {self.warehouse_location()!r} is not one"
            )

    def settings(self) -> Settings:
        """The daemon's settings (env ``INGESTER_*``, ``ingester.toml``), ``ingester_home`` applied."""
        return Settings(home=Path(self.ingester_home)) if self.ingester_home else Settings()

    def catalog_props(self) -> Dict[str, str]:
        """pyiceberg properties of the catalog. Holds secrets."""
        from ingester.catalog import catalog_properties  # pyiceberg: only when a client connects

        if self.catalog_properties:
            return {k: str(v) for k, v in self.catalog_properties.items() if v is not None}
        settings = self.settings()
        return catalog_properties(settings.catalog, settings.home_dir)

    def resolved_catalog_name(self) -> str:
        if self.catalog_name:
            return self.catalog_name
        return self.settings().catalog.name if not self.catalog_properties else "iceberg"

    def namespace_for(self, schema: Schema) -> str:
        """The Iceberg namespace the tables of ``schema`` go to."""
        return self.namespace or self.normalize_dataset_name(schema)

    def physical_table_name(self, table_name: str) -> str:
        return physical_table_name(table_name, self.internal_table_prefix)

    def warehouse_location(self) -> Optional[str]:
        """The catalog's warehouse (a location, or a REST catalog's warehouse name)."""
        return self.catalog_props().get("warehouse")

    def local_warehouse(self) -> Optional[Path]:
        """The folder of a local warehouse (``file://`` URI or, for a SQL catalog, a path)."""
        location = self.warehouse_location()
        if not location:
            return None
        parsed = urlparse(location)
        if parsed.scheme == "file":
            return Path(parsed.path)
        return Path(location) if not parsed.scheme and self.catalog_props().get("type") == "sql" else None

    def table_location(self, namespace: str, table_name: str) -> Optional[str]:
        """Where a new table goes under ``table_location_layout`` (None: the catalog decides)."""
        if not self.table_location_layout:
            return None
        location = self.table_location_layout.format(namespace=namespace, dataset_name=namespace, table_name=table_name)
        if location.startswith(ABSOLUTE_LOCATIONS):
            return location
        warehouse = self.warehouse_location() or ""
        return f"{warehouse.rstrip('/')}/{location}" if warehouse else location

    def atomic_setting(self) -> AtomicSetting:
        if self.atomic_multi_table is None:
            return self.settings().commit.atomic_multi_table
        return "off" if self.atomic_multi_table == "off" else "auto"

    def merge_batch(self) -> int:
        return self.merge_batch_size or DEFAULT_MERGE_BATCH_SIZE

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, backoff_base=self.retry_backoff_base, is_retryable=is_retryable)

    def data_location(self) -> str:
        props = self.catalog_props()
        return str(props.get("uri") or props.get("warehouse") or self.resolved_catalog_name())

    def fingerprint(self) -> str:
        from dlt.common.utils import digest128

        return digest128(self.data_location())

    def __str__(self) -> str:
        return f"{self.data_location()} namespace {self.namespace or self.dataset_name}"


@configspec
class IcebergRestClientConfiguration(IcebergClientConfiguration):
    """A REST catalog (or a SQL catalog when ``catalog_uri`` is a SQLAlchemy URI), configured
    with the parameters of dlt-iceberg's ``iceberg_rest``: names and defaults as there."""

    destination_type: Final[str] = dataclasses.field(  # type: ignore[misc]
        default="iceberg_rest", init=False, repr=False, compare=False
    )
    dataset_name: Annotated[Optional[str], NotResolved()] = dataclasses.field(  # type: ignore[assignment]
        default=None, init=False, repr=False, compare=False
    )
    """Not used (``namespace`` places the tables), so not required: as dlt-iceberg's spec."""
    catalog_uri: str = None  # type: ignore[assignment]  # required: dlt raises when missing
    warehouse: Optional[str] = None
    namespace: str = REST_NAMESPACE  # type: ignore[assignment]  # as dlt-iceberg: the dataset name is not used
    credential: Optional[TSecretStrValue] = None
    """OAuth2 client credentials ``id:secret``; the token endpoint defaults to
    ``<catalog_uri>/v1/oauth/tokens``."""
    oauth2_server_uri: Optional[str] = None
    scope: Optional[str] = REST_SCOPE
    token: Optional[TSecretStrValue] = None
    sigv4_enabled: bool = False
    signing_region: Optional[str] = None
    signing_name: str = REST_SIGNING_NAME
    """SigV4 service name (``glue`` for Glue, ``s3tables`` for S3 Tables)."""
    s3_endpoint: Optional[str] = None
    s3_access_key_id: Optional[TSecretStrValue] = None
    s3_secret_access_key: Optional[TSecretStrValue] = None
    s3_region: Optional[str] = None
    py_io_impl: Optional[str] = None
    """pyiceberg FileIO class (``py-io-impl``), e.g. ``pyiceberg.io.fsspec.FsspecFileIO``."""
    internal_table_prefix: str = REST_INTERNAL_TABLE_PREFIX
    """Prefix of dlt's own tables (default: dlt's names); ``dlt`` for catalogs that refuse a
    leading ``_`` (S3 Tables)."""

    def is_sql(self) -> bool:
        return self.catalog_uri.startswith(SQL_URI_PREFIXES)

    def catalog_settings(self) -> CatalogSettings:
        uri = self.catalog_uri.rstrip("/")
        oauth2 = self.oauth2_server_uri
        if self.credential and not oauth2 and not self.is_sql():
            oauth2 = f"{uri}/v1/oauth/tokens"
        extra = {k: SecretStr(str(v)) for k, v in (self.catalog_properties or {}).items()}
        if self.py_io_impl:
            extra["py-io-impl"] = SecretStr(self.py_io_impl)
        return CatalogSettings(
            type="sql" if self.is_sql() else "rest",
            name=self.resolved_catalog_name(),
            uri=uri,
            warehouse=self.warehouse,
            credential=_secret(self.credential),
            oauth2_server_uri=oauth2,
            scope=self.scope if self.credential else None,
            token=_secret(self.token),
            sigv4_enabled=self.sigv4_enabled,
            signing_region=self.signing_region,
            signing_name=self.signing_name if self.sigv4_enabled else None,
            s3_endpoint=self.s3_endpoint,
            s3_access_key_id=_secret(self.s3_access_key_id),
            s3_secret_access_key=_secret(self.s3_secret_access_key),
            s3_region=self.s3_region,
            properties=extra,
        )

    def catalog_props(self) -> Dict[str, str]:
        from ingester.catalog import catalog_properties

        return catalog_properties(self.catalog_settings(), self.settings().home_dir)

    def resolved_catalog_name(self) -> str:
        """``catalog_name``; default ``dlt_catalog``, as dlt-iceberg (a SQL catalog lists only
        the tables stored under its name)."""
        return self.catalog_name or REST_CATALOG_NAME

    def data_location(self) -> str:
        return f"{self.catalog_uri.rstrip('/')}#{self.warehouse or ''}"


def _secret(value: Optional[str]) -> Optional[SecretStr]:
    return SecretStr(value) if value else None
