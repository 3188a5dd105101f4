"""dlt destination factories: ``iceberg`` (embedded default or any pyiceberg catalog) and
``iceberg_rest`` (a drop-in for dlt-iceberg's ``iceberg_rest``). The job client is imported
lazily, in ``client_class``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dlt.common.destination import Destination, DestinationCapabilitiesContext

from ingester.dlt.configuration import (
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF_BASE,
    IcebergClientConfiguration,
    IcebergRestClientConfiguration,
)
from ingester.settings import DEFAULT_MERGE_BATCH_SIZE

if TYPE_CHECKING:
    from ingester.dlt.client import IcebergJobClient

TIMESTAMP_PRECISION = 6  # Iceberg v2 timestamps are microseconds
DECIMAL_PRECISION = (38, 9)  # as ingester.schema.DLT_TYPES


def capabilities() -> DestinationCapabilitiesContext:
    caps = DestinationCapabilitiesContext.generic_capabilities(
        preferred_loader_file_format="parquet",
        supported_table_formats=["iceberg"],
        # upsert is the default: dlt then derives root row ids from the primary key, so the
        # nested rows of an updated parent are replaced. delete-insert serves merge keys.
        supported_merge_strategies=["upsert", "delete-insert"],
    )
    caps.supported_loader_file_formats = ["parquet", "reference"]
    caps.preferred_table_format = "iceberg"
    caps.supported_replace_strategies = ["truncate-and-insert"]
    caps.has_case_sensitive_identifiers = True
    caps.enforces_nulls_on_alter = False
    caps.sqlglot_dialect = "duckdb"
    caps.timestamp_precision = TIMESTAMP_PRECISION
    caps.max_timestamp_precision = TIMESTAMP_PRECISION
    caps.decimal_precision = DECIMAL_PRECISION
    caps.supports_transactions = False
    caps.supports_ddl_transactions = False
    return caps


class _EngineDestination:
    """What both factories share: the job client (imported lazily) and the capabilities."""

    @property
    def client_class(self) -> type[IcebergJobClient]:
        from ingester.dlt.client import IcebergJobClient

        return IcebergJobClient

    def _raw_capabilities(self) -> DestinationCapabilitiesContext:
        return capabilities()


class iceberg(_EngineDestination, Destination[IcebergClientConfiguration, "IcebergJobClient"]):
    """Load into Apache Iceberg through the ingester's commit path.

    With no arguments: the daemon's catalog and warehouse (the embedded SQLite catalog under
    ``INGESTER_HOME``), so ``ingester tables`` lists what was loaded. ``catalog_properties``
    selects any pyiceberg catalog instead. One snapshot per table per load; a load killed at
    any moment and resumed lands every row once.
    """

    spec = IcebergClientConfiguration

    def __init__(
        self,
        namespace: str | None = None,
        catalog_properties: dict[str, Any] | None = None,
        catalog_name: str | None = None,
        ingester_home: str | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff_base: float = DEFAULT_RETRY_BACKOFF_BASE,
        merge_batch_size: int = DEFAULT_MERGE_BATCH_SIZE,
        strict_casting: bool = False,
        destination_name: str | None = None,
        environment: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            namespace=namespace,
            catalog_properties=catalog_properties,
            catalog_name=catalog_name,
            ingester_home=ingester_home,
            max_retries=max_retries,
            retry_backoff_base=retry_backoff_base,
            merge_batch_size=merge_batch_size,
            strict_casting=strict_casting,
            destination_name=destination_name,
            environment=environment,
            **kwargs,
        )


class iceberg_rest(_EngineDestination, Destination[IcebergRestClientConfiguration, "IcebergJobClient"]):
    """dlt-iceberg's ``iceberg_rest`` (same parameters, names and defaults), on the ingester's
    commit path. Every parameter can also come from dlt config / secrets
    (``[destination.iceberg_rest]``, ``DESTINATION__ICEBERG_REST__CATALOG_URI``)."""

    spec = IcebergRestClientConfiguration

    def __init__(
        self,
        catalog_uri: str | None = None,
        namespace: str | None = None,
        warehouse: str | None = None,
        credential: str | None = None,
        oauth2_server_uri: str | None = None,
        token: str | None = None,
        sigv4_enabled: bool = False,
        signing_region: str | None = None,
        s3_endpoint: str | None = None,
        s3_access_key_id: str | None = None,
        s3_secret_access_key: str | None = None,
        s3_region: str | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff_base: float = DEFAULT_RETRY_BACKOFF_BASE,
        merge_batch_size: int = DEFAULT_MERGE_BATCH_SIZE,
        strict_casting: bool = False,
        destination_name: str | None = None,
        environment: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            catalog_uri=catalog_uri,
            namespace=namespace,
            warehouse=warehouse,
            credential=credential,
            oauth2_server_uri=oauth2_server_uri,
            token=token,
            sigv4_enabled=sigv4_enabled,
            signing_region=signing_region,
            s3_endpoint=s3_endpoint,
            s3_access_key_id=s3_access_key_id,
            s3_secret_access_key=s3_secret_access_key,
            s3_region=s3_region,
            max_retries=max_retries,
            retry_backoff_base=retry_backoff_base,
            merge_batch_size=merge_batch_size,
            strict_casting=strict_casting,
            destination_name=destination_name,
            environment=environment,
            **kwargs,
        )


iceberg.register()
iceberg_rest.register()
