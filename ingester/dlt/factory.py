"""dlt destination factories: ``iceberg`` (embedded default or any pyiceberg catalog) and
``iceberg_rest`` (a drop-in for dlt-iceberg's ``iceberg_rest``). The job client is imported
lazily, in ``client_class``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from dlt.common.configuration import known_sections, resolve_configuration
from dlt.common.configuration.container import Container
from dlt.common.configuration.providers import EnvironProvider
from dlt.common.configuration.specs.config_section_context import ConfigSectionContext
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext
from dlt.common.destination import Destination, DestinationCapabilitiesContext
from dlt.common.schema.typing import TLoaderMergeStrategy
from dlt.common.typing import AnyType

from ingester.dlt.configuration import (
    DEFAULT_HARD_DELETE_COLUMN,
    DEFAULT_MAX_RETRIES,
    DEFAULT_RETRY_BACKOFF_BASE,
    REST_INTERNAL_TABLE_PREFIX,
    REST_SCOPE,
    REST_SIGNING_NAME,
    IcebergClientConfiguration,
    IcebergRestClientConfiguration,
)

if TYPE_CHECKING:
    from ingester.dlt.client import IcebergJobClient

TIMESTAMP_PRECISION = 6  # Iceberg v2 timestamps are microseconds
DECIMAL_PRECISION = (38, 9)  # as ingester.schema.DLT_TYPES
WEI_PRECISION = (38, 0)  # Iceberg decimals end at 38 digits (dlt's default is 76)
# dlt-iceberg's order (``iceberg_rest``): delete-insert first, so a merge without a key appends;
# with a primary key both strategies upsert (last row per key wins), and the nested rows of
# replaced parents go whatever row ids the parents have (client._replaced_root_ids)
DLT_ICEBERG_MERGE_STRATEGIES: list[TLoaderMergeStrategy] = ["delete-insert", "upsert"]
# ``iceberg`` and ``ingester_queue``: upsert first, so dlt derives root row ids from the primary
# key and the daemon replaces a queue-fed parent's nested rows by the row ids of the load alone
KEY_HASH_MERGE_STRATEGIES: list[TLoaderMergeStrategy] = ["upsert", "delete-insert"]
DLT_ICEBERG_SECTION = "iceberg_rest_class_based"  # dlt-iceberg's factory class: its config section


def capabilities(merge_strategies: list[TLoaderMergeStrategy] = KEY_HASH_MERGE_STRATEGIES) -> DestinationCapabilitiesContext:
    caps = DestinationCapabilitiesContext.generic_capabilities(
        preferred_loader_file_format="parquet",
        supported_table_formats=["iceberg"],
        supported_merge_strategies=merge_strategies,
    )
    caps.supported_loader_file_formats = ["parquet", "reference"]
    caps.preferred_table_format = "iceberg"
    caps.supported_replace_strategies = ["truncate-and-insert"]
    caps.has_case_sensitive_identifiers = True
    caps.enforces_nulls_on_alter = False
    caps.sqlglot_dialect = "duckdb"
    caps.timestamp_precision = TIMESTAMP_PRECISION
    caps.max_timestamp_precision = TIMESTAMP_PRECISION
    caps.decimal_precision, caps.wei_precision = DECIMAL_PRECISION, WEI_PRECISION
    caps.supports_transactions = False
    caps.supports_ddl_transactions = False
    return caps


def _arguments(given: dict[str, Any]) -> dict[str, Any]:
    """A factory's ``locals()`` at the top of its ``__init__``: its parameters, and its extra
    keyword arguments, as dlt's ``Destination.__init__`` takes them."""
    extra = given.pop("kwargs")
    return {k: v for k, v in given.items() if k not in ("self", "__class__")} | extra


class _EngineDestination:
    """What both factories share: the job client (imported lazily) and the capabilities
    (``iceberg_rest`` with dlt-iceberg's merge strategies)."""

    @property
    def client_class(self) -> type[IcebergJobClient]:
        from ingester.dlt.client import IcebergJobClient

        return IcebergJobClient

    def _raw_capabilities(self) -> DestinationCapabilitiesContext:
        return capabilities(DLT_ICEBERG_MERGE_STRATEGIES if isinstance(self, iceberg_rest) else KEY_HASH_MERGE_STRATEGIES)


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
        merge_batch_size: int | None = None,
        strict_casting: bool = False,
        internal_table_prefix: str = "dlt",
        hard_delete_column: str | None = DEFAULT_HARD_DELETE_COLUMN,
        table_location_layout: str | None = None,
        register_new_tables: bool = False,
        atomic_multi_table: str | None = None,
        destination_name: str | None = None,
        environment: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**_arguments(locals()))


class iceberg_rest(_EngineDestination, Destination[IcebergRestClientConfiguration, "IcebergJobClient"]):
    """dlt-iceberg's ``iceberg_rest`` (same parameters, names and defaults), on the ingester's
    commit path. Every parameter can also come from dlt config / secrets: dlt-iceberg's section
    ``[destination.iceberg_rest_class_based]`` (``DESTINATION__ICEBERG_REST_CLASS_BASED__*``)
    and this factory's own ``[destination.iceberg_rest]``, which wins where both set a value.
    With ``destination_name`` set, only that name's section is read (as in dlt)."""

    spec = IcebergRestClientConfiguration

    def __init__(
        self,
        catalog_uri: str | None = None,
        namespace: str | None = None,
        warehouse: str | None = None,
        credential: str | None = None,
        oauth2_server_uri: str | None = None,
        scope: str | None = REST_SCOPE,
        token: str | None = None,
        sigv4_enabled: bool = False,
        signing_region: str | None = None,
        signing_name: str = REST_SIGNING_NAME,
        s3_endpoint: str | None = None,
        s3_access_key_id: str | None = None,
        s3_secret_access_key: str | None = None,
        s3_region: str | None = None,
        py_io_impl: str | None = None,
        max_retries: int = DEFAULT_MAX_RETRIES,
        retry_backoff_base: float = DEFAULT_RETRY_BACKOFF_BASE,
        strict_casting: bool = False,
        merge_batch_size: int | None = None,
        table_location_layout: str | None = None,
        register_new_tables: bool = False,
        hard_delete_column: str | None = DEFAULT_HARD_DELETE_COLUMN,
        internal_table_prefix: str = REST_INTERNAL_TABLE_PREFIX,
        atomic_multi_table: str | None = None,
        destination_name: str | None = None,
        environment: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**_arguments(locals()))

    def configuration(self, initial_config: IcebergRestClientConfiguration, accept_partial: bool = False) -> IcebergRestClientConfiguration:
        """Resolve as dlt does, with the values of dlt-iceberg's section as defaults (so this
        factory's section, generic keys and arguments override them)."""
        config = initial_config or self.spec()
        if self.configured_name is None and _dlt_iceberg_section_present():
            theirs = resolve_configuration(self.spec(), sections=(known_sections.DESTINATION, DLT_ICEBERG_SECTION), accept_partial=True)
            for key in theirs.__resolved_fields_set__:
                if key != "credentials":
                    setattr(config, key, getattr(theirs, key))
        return super().configuration(config, accept_partial)


def _dlt_iceberg_section_present() -> bool:
    """Whether any config provider has ``destination.iceberg_rest_class_based`` (also under the
    pipeline's name): a cheap look, so most resolutions skip the second pass."""
    context = Container()[ConfigSectionContext]
    marker = f"{known_sections.DESTINATION}__{DLT_ICEBERG_SECTION}__".upper()
    for provider in Container()[PluggableRunContext].providers.providers:
        if isinstance(provider, EnvironProvider):
            if any(marker in key for key in os.environ):
                return True
            continue
        for pipeline_name in {None, context.pipeline_name}:
            value, _ = provider.get_value(DLT_ICEBERG_SECTION, AnyType, pipeline_name, known_sections.DESTINATION)
            if value is not None:
                return True
    return False


iceberg.register()
iceberg_rest.register()
