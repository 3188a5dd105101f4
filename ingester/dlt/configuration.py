"""Configuration specs of the dlt destinations (resolved by dlt from arguments, env, toml).

``IcebergClientConfiguration`` (destination ``iceberg``): with nothing set, the catalog and
warehouse of the daemon (``ingester.settings.Settings``: the embedded SQLite catalog under
``INGESTER_HOME``); or any pyiceberg catalog given by ``catalog_properties``.
``IcebergRestClientConfiguration`` (destination ``iceberg_rest``): the parameters of the
dlt-iceberg package, same names and defaults. Both are frozen after resolution by dlt and
hold secrets: never log ``catalog_props()``.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Dict, Final, Optional

from dlt.common.configuration import configspec
from dlt.common.destination.client import DestinationClientDwhConfiguration
from dlt.common.schema import Schema
from dlt.common.typing import TSecretStrValue
from pydantic import SecretStr

from ingester.retry import RetryPolicy
from ingester.settings import DEFAULT_MERGE_BATCH_SIZE, CatalogSettings, Settings

DEFAULT_MAX_RETRIES = 5
DEFAULT_RETRY_BACKOFF_BASE = 2.0
SQL_URI_PREFIXES = ("sqlite:", "postgresql:", "postgresql+", "mysql:", "mysql+")


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
    merge_batch_size: int = DEFAULT_MERGE_BATCH_SIZE
    strict_casting: bool = False

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

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(max_retries=self.max_retries, backoff_base=self.retry_backoff_base)

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
    with the parameters of dlt-iceberg's ``iceberg_rest``."""

    destination_type: Final[str] = dataclasses.field(  # type: ignore[misc]
        default="iceberg_rest", init=False, repr=False, compare=False
    )
    catalog_uri: str = None  # type: ignore[assignment]  # required: dlt raises when missing
    warehouse: Optional[str] = None
    credential: Optional[TSecretStrValue] = None
    """OAuth2 client credentials ``id:secret``; the token endpoint defaults to
    ``<catalog_uri>/v1/oauth/tokens``."""
    oauth2_server_uri: Optional[str] = None
    scope: Optional[str] = None
    token: Optional[TSecretStrValue] = None
    sigv4_enabled: bool = False
    signing_region: Optional[str] = None
    signing_name: Optional[str] = None
    """SigV4 service name; default ``glue`` for Glue endpoints, ``s3tables`` otherwise."""
    s3_endpoint: Optional[str] = None
    s3_access_key_id: Optional[TSecretStrValue] = None
    s3_secret_access_key: Optional[TSecretStrValue] = None
    s3_region: Optional[str] = None

    def catalog_settings(self) -> CatalogSettings:
        uri = self.catalog_uri.rstrip("/")
        is_sql = uri.startswith(SQL_URI_PREFIXES)
        oauth2 = self.oauth2_server_uri
        if self.credential and not oauth2 and not is_sql:
            oauth2 = f"{uri}/v1/oauth/tokens"
        signing_name = self.signing_name or ("glue" if "glue" in uri else "s3tables")
        return CatalogSettings(
            type="sql" if is_sql else "rest",
            name=self.resolved_catalog_name(),
            uri=uri,
            warehouse=self.warehouse,
            credential=_secret(self.credential),
            oauth2_server_uri=oauth2,
            scope=self.scope,
            token=_secret(self.token),
            sigv4_enabled=self.sigv4_enabled,
            signing_region=self.signing_region,
            signing_name=signing_name if self.sigv4_enabled else None,
            s3_endpoint=self.s3_endpoint,
            s3_access_key_id=_secret(self.s3_access_key_id),
            s3_secret_access_key=_secret(self.s3_secret_access_key),
            s3_region=self.s3_region,
            properties={k: SecretStr(str(v)) for k, v in (self.catalog_properties or {}).items()},
        )

    def catalog_props(self) -> Dict[str, str]:
        from ingester.catalog import catalog_properties

        return catalog_properties(self.catalog_settings(), self.settings().home_dir)

    def resolved_catalog_name(self) -> str:
        """``catalog_name``; default ``iceberg_rest``, or the daemon's name for a SQL catalog
        (SQL catalogs scope tables by name: ``ingester tables`` then lists them)."""
        if self.catalog_name:
            return self.catalog_name
        return self.settings().catalog.name if self.catalog_uri.startswith(SQL_URI_PREFIXES) else "iceberg_rest"

    def data_location(self) -> str:
        return f"{self.catalog_uri.rstrip('/')}#{self.warehouse or ''}"


def _secret(value: Optional[str]) -> Optional[SecretStr]:
    return SecretStr(value) if value else None
