"""The dlt destination factories, their configuration and the adapter: no servers."""

from __future__ import annotations

import inspect
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dlt
import pytest
from dlt.common.configuration.container import Container
from dlt.common.configuration.exceptions import ConfigFieldMissingException, ConfigurationValueError
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext
from dlt.destinations.impl.filesystem.iceberg_adapter import iceberg_partition as dlt_iceberg_partition
from pyiceberg.exceptions import WaitingForLockException

from ingester import PartitionTransform, iceberg, iceberg_adapter, iceberg_partition, iceberg_rest
from ingester.catalog import catalog_properties
from ingester.dlt.adapter import partition_hints
from ingester.dlt.configuration import physical_table_name
from ingester.dlt.sql_client import s3_secret_sql
from ingester.settings import Settings

REFERENCE_DEFAULTS = {  # dlt-iceberg 0.6.4's IcebergRestConfiguration: every field, its default
    "catalog_uri": None, "warehouse": None, "namespace": "default", "credential": None, "oauth2_server_uri": None,
    "scope": "PRINCIPAL_ROLE:ALL", "token": None, "sigv4_enabled": False, "signing_region": None,
    "signing_name": "execute-api", "s3_endpoint": None, "s3_access_key_id": None, "s3_secret_access_key": None,
    "s3_region": None, "py_io_impl": None, "max_retries": 5, "retry_backoff_base": 2.0, "strict_casting": False,
    "merge_batch_size": None, "table_location_layout": None, "register_new_tables": False,
    "hard_delete_column": "_dlt_deleted_at", "internal_table_prefix": "_dlt",
}
EXPLICIT = {
    "catalog_uri": "http://cat", "namespace": "ns", "warehouse": "wh", "credential": "id:secret",
    "oauth2_server_uri": "http://auth/token", "scope": "catalog", "token": "tok", "sigv4_enabled": True,
    "signing_region": "eu-west-1", "signing_name": "s3tables", "s3_endpoint": "http://s3", "s3_access_key_id": "key",
    "s3_secret_access_key": "secret", "s3_region": "eu-west-1", "py_io_impl": "pyiceberg.io.fsspec.FsspecFileIO",
    "max_retries": 2, "retry_backoff_base": 3.0, "strict_casting": True, "merge_batch_size": 10,
    "table_location_layout": "{namespace}/{table_name}", "register_new_tables": False, "hard_delete_column": "gone",
    "internal_table_prefix": "dlt",
}
SECTIONS = {"theirs": "DESTINATION__ICEBERG_REST_CLASS_BASED__", "ours": "DESTINATION__ICEBERG_REST__"}


def resolved(factory: Any) -> Any:
    """The configuration dlt resolves for a pipeline with dataset ``ds``."""
    return factory.configuration(factory.spec()._bind_dataset_name("ds"))


@pytest.fixture
def dlt_project(tmp_path: Path) -> Iterator[Callable[[str, str], None]]:
    """``write(name, text)``: a ``.dlt/<name>`` file dlt reads while the test runs."""
    (tmp_path / ".dlt").mkdir()
    context = Container()[PluggableRunContext]
    previous = context.context.run_dir

    def write(name: str, text: str) -> None:
        (tmp_path / ".dlt" / name).write_text(text)
        context.reload(str(tmp_path))

    try:
        yield write
    finally:
        context.reload(previous)


def test_every_dlt_iceberg_parameter_with_its_default() -> None:
    params = inspect.signature(iceberg_rest.__init__).parameters
    assert {name: params[name].default for name in REFERENCE_DEFAULTS if name != "namespace"} == {
        k: v for k, v in REFERENCE_DEFAULTS.items() if k != "namespace"}
    config = resolved(iceberg_rest(catalog_uri="http://cat"))
    assert {name: getattr(config, name) for name in REFERENCE_DEFAULTS} == {**REFERENCE_DEFAULTS, "catalog_uri": "http://cat"}
    explicit = resolved(iceberg_rest(**EXPLICIT))
    assert {name: getattr(explicit, name) for name in EXPLICIT} == EXPLICIT


def test_dataset_name_is_not_the_namespace() -> None:
    """As dlt-iceberg: the tables go to ``namespace`` (default ``default``), whatever the dataset."""
    dest = iceberg_rest(catalog_uri="http://cat")
    assert dest.configuration(dest.spec()).namespace == "default"  # no dataset bound: nothing missing
    assert resolved(dest).namespace_for(dlt.Schema("s")) == "default"


@pytest.mark.parametrize("section", ["theirs", "ours"])
def test_both_config_sections(monkeypatch: pytest.MonkeyPatch, section: str) -> None:
    """dlt-iceberg's ``destination.iceberg_rest_class_based`` and this factory's ``destination.iceberg_rest``."""
    prefix = SECTIONS[section]
    monkeypatch.setenv(f"{prefix}CATALOG_URI", "http://catalog:8181/")
    monkeypatch.setenv(f"{prefix}CREDENTIAL", "client:secret")
    monkeypatch.setenv(f"{prefix}WAREHOUSE", "tables")
    monkeypatch.setenv(f"{prefix}MERGE_BATCH_SIZE", "7")
    monkeypatch.setenv(f"{prefix}SIGV4_ENABLED", "false")
    monkeypatch.setenv(f"{prefix}S3_ENDPOINT", "http://s3:9000")
    config = resolved(iceberg_rest())
    assert config.merge_batch_size == 7 and config.warehouse == "tables"
    props = config.catalog_props()
    assert props["type"] == "rest" and props["uri"] == "http://catalog:8181" and props["warehouse"] == "tables"
    # the credential works without oauth2_server_uri: the catalog's own token endpoint
    assert props["credential"] == "client:secret" and props["scope"] == "PRINCIPAL_ROLE:ALL"
    assert props["oauth2-server-uri"] == "http://catalog:8181/v1/oauth/tokens"
    # an S3 endpoint gets path-style access and a region (dlt-iceberg sets only what is given)
    assert props["s3.endpoint"] == "http://s3:9000" and props["s3.path-style-access"] == "true" and props["s3.region"] == "us-east-1"
    # explicit arguments win over the environment
    assert resolved(iceberg_rest(catalog_uri="http://other")).catalog_props()["uri"] == "http://other"


def test_own_section_wins_over_dlt_icebergs(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(f"{SECTIONS['theirs']}CATALOG_URI", "http://theirs")
    monkeypatch.setenv(f"{SECTIONS['theirs']}NAMESPACE", "from_theirs")
    monkeypatch.setenv(f"{SECTIONS['ours']}CATALOG_URI", "http://ours")
    config = resolved(iceberg_rest())
    assert (config.catalog_uri, config.namespace) == ("http://ours", "from_theirs")
    # a destination_name is a section of its own, as in dlt
    monkeypatch.setenv("DESTINATION__LAKE__CATALOG_URI", "http://lake")
    assert resolved(iceberg_rest(destination_name="lake")).catalog_uri == "http://lake"


def test_dlt_iceberg_section_from_secrets_toml(dlt_project: Callable[[str, str], None]) -> None:
    dlt_project(
        "secrets.toml",
        '[destination.iceberg_rest_class_based]\ncatalog_uri = "https://polaris.example.com/api/catalog"\n'
        'credential = "id:from-toml"\noauth2_server_uri = "https://polaris.example.com/api/catalog/v1/oauth/tokens"\n'
    )
    props = resolved(iceberg_rest()).catalog_props()
    assert props["credential"] == "id:from-toml"
    assert props["oauth2-server-uri"] == "https://polaris.example.com/api/catalog/v1/oauth/tokens"


def test_iceberg_rest_needs_a_catalog_uri() -> None:
    with pytest.raises(ConfigFieldMissingException):
        resolved(iceberg_rest())


@pytest.mark.parametrize(("signing_name", "expected"), [(None, "execute-api"), ("s3tables", "s3tables")])
def test_sigv4(signing_name: str | None, expected: str) -> None:
    extra = {"signing_name": signing_name} if signing_name else {}
    props = resolved(iceberg_rest(catalog_uri="http://127.0.0.1:8181", sigv4_enabled=True, signing_region="us-east-1",
                                  s3_access_key_id="k", s3_secret_access_key="s", **extra)).catalog_props()
    assert props["rest.sigv4-enabled"] == "true" and props["rest.signing-region"] == "us-east-1"
    assert props["rest.signing-name"] == expected
    assert props["client.access-key-id"] == "k" and "credential" not in props and "scope" not in props


def test_py_io_impl_reaches_the_catalog() -> None:
    props = resolved(iceberg_rest(catalog_uri="http://cat", py_io_impl="pyiceberg.io.fsspec.FsspecFileIO")).catalog_props()
    assert props["py-io-impl"] == "pyiceberg.io.fsspec.FsspecFileIO"


def test_sql_uri_is_a_sql_catalog_named_as_dlt_iceberg_names_it(tmp_path: Path) -> None:
    """The name scopes a SQL catalog's tables: dlt-iceberg's ``dlt_catalog`` finds its tables."""
    config = resolved(iceberg_rest(catalog_uri=f"sqlite:///{tmp_path}/c.db", warehouse=(tmp_path / "wh").as_uri()))
    props = config.catalog_props()
    assert props["type"] == "sql" and props["uri"] == f"sqlite:///{tmp_path}/c.db"
    assert config.resolved_catalog_name() == "dlt_catalog"
    for uri in ("postgresql://h/db", "postgresql+psycopg2://h/db", "mysql+pymysql://h/db"):  # dlt-iceberg: the first only
        assert resolved(iceberg_rest(catalog_uri=uri)).catalog_props()["type"] == "sql"
    assert resolved(iceberg_rest(catalog_uri="http://cat")).resolved_catalog_name() == "dlt_catalog"
    assert resolved(iceberg_rest(catalog_uri="http://cat", catalog_name="mine")).resolved_catalog_name() == "mine"


def test_iceberg_without_arguments_is_the_daemons_catalog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INGESTER_HOME", str(tmp_path / "home"))
    settings = Settings()
    config = resolved(iceberg())
    assert config.catalog_props() == catalog_properties(settings.catalog, settings.home_dir)
    assert config.catalog_props()["uri"] == f"sqlite:///{tmp_path / 'home' / 'catalog.db'}"
    assert config.resolved_catalog_name() == settings.catalog.name
    assert config.namespace_for(dlt.Schema("s")) == "ds" and config.internal_table_prefix == "dlt"
    # dlt maps field names to env vars: INGESTER_HOME is read the daemon's way, $HOME never
    monkeypatch.delenv("INGESTER_HOME")
    monkeypatch.chdir(tmp_path)
    default = resolved(iceberg())
    assert default.ingester_home is None
    assert default.catalog_props()["uri"] == f"sqlite:///{tmp_path / '.ingester' / 'catalog.db'}"


def test_iceberg_with_any_pyiceberg_catalog_properties() -> None:
    props = {"type": "rest", "uri": "http://cat", "token": "t", "s3.endpoint": "http://s3"}
    config = resolved(iceberg(catalog_properties=props, catalog_name="mine", namespace="ns"))
    assert config.catalog_props() == props and config.resolved_catalog_name() == "mine"


def test_physical_table_names_as_dlt_iceberg() -> None:
    assert physical_table_name("_dlt_loads", "_dlt") == "_dlt_loads"
    assert physical_table_name("_dlt_pipeline_state", "dlt") == "dlt_pipeline_state"
    assert physical_table_name("_dlt_version", "meta_") == "meta_version"
    assert physical_table_name("_dlt_anything", "x") == "x_anything"
    for user_table in ("orders__items", "_private", "dlt_loads"):
        assert physical_table_name(user_table, "dlt") == user_table


@pytest.mark.parametrize(("arguments", "names"), [
    ({"internal_table_prefix": "_"}, "internal_table_prefix"),
    ({"table_location_layout": "{bucket}/{table_name}"}, "table_location_layout.*'bucket'"),
    ({"register_new_tables": True, "warehouse": "iceberg-tables"}, "register_new_tables"),
    ({"merge_batch_size": 0}, "merge_batch_size"),
])
def test_options_that_cannot_apply_fail_when_resolved(arguments: dict[str, Any], names: str) -> None:
    with pytest.raises(ConfigurationValueError, match=names):
        resolved(iceberg_rest(catalog_uri="http://cat", **arguments))


def test_table_location_layout(tmp_path: Path) -> None:
    sql = resolved(iceberg_rest(catalog_uri=f"sqlite:///{tmp_path}/c.db", warehouse="file:///wh/",
                                table_location_layout="custom/{dataset_name}/{table_name}"))
    assert sql.table_location("ns", "events") == "file:///wh/custom/ns/events"
    absolute = resolved(iceberg_rest(catalog_uri="http://cat", warehouse="tables", table_location_layout="s3://b/{namespace}/{table_name}"))
    assert absolute.table_location("ns", "events") == "s3://b/ns/events"
    assert resolved(iceberg_rest(catalog_uri="http://cat")).table_location("ns", "events") is None
    local = resolved(iceberg_rest(catalog_uri=f"sqlite:///{tmp_path}/c.db", warehouse=str(tmp_path), register_new_tables=True))
    assert local.local_warehouse() == tmp_path


def test_retries_a_catalog_lock_held_by_another_writer() -> None:
    policy = resolved(iceberg_rest(catalog_uri="http://cat")).retry_policy()
    assert policy.is_retryable(WaitingForLockException("locked")) and not policy.is_retryable(ValueError("x"))


def test_merge_strategies() -> None:
    caps = iceberg_rest(catalog_uri="http://cat").capabilities()
    assert caps.supported_merge_strategies == ["delete-insert", "upsert"]  # dlt-iceberg's default first
    assert caps.preferred_loader_file_format == "parquet" and caps.wei_precision == (38, 0)
    # ingester's own factory: upsert first (root row ids from the key, as ingester_queue)
    assert iceberg().capabilities().supported_merge_strategies == ["upsert", "delete-insert"]


def test_partition_hints_forms() -> None:
    assert partition_hints("region") == {"region": {"name": "region", "x-partition": True}}
    assert partition_hints({"ts": "DAY", "region": None}) == {
        "ts": {"name": "ts", "x-partition": True, "x-partition-transform": "day"},
        "region": {"name": "region", "x-partition": True},
    }
    assert partition_hints([("id", "bucket[8]"), iceberg_partition.truncate(4, "name", "prefix"),
                            dlt_iceberg_partition.year("d", "y"), iceberg_partition.identity("k")]) == {
        "id": {"name": "id", "x-partition": True, "x-partition-transform": "bucket[8]"},
        "name": {"name": "name", "x-partition": True, "x-partition-transform": "truncate[4]", "x-partition-name": "prefix"},
        "d": {"name": "d", "x-partition": True, "x-partition-transform": "year", "x-partition-name": "y"},
        "k": {"name": "k", "x-partition": True, "x-partition-transform": "identity"},
    }
    with pytest.raises(ValueError, match="unknown partition transform"):
        partition_hints({"ts": "fortnight"})


def test_iceberg_partition_as_dlt_iceberg() -> None:
    assert iceberg_partition.bucket(10, "user_id") == PartitionTransform("user_id", "bucket", 10)
    assert iceberg_partition.month("created_at", "event_month") == PartitionTransform("created_at", "month", None, "event_month")
    assert iceberg_partition.truncate(3, "s").to_hint_value() == "truncate[3]"
    assert iceberg_partition.hour("ts").to_hint_value() == "hour"
    with pytest.raises(ValueError, match="num_buckets must be positive"):
        iceberg_partition.bucket(0, "id")
    with pytest.raises(ValueError, match="width must be positive"):
        iceberg_partition.truncate(-1, "s")


def test_iceberg_adapter_forms() -> None:
    @dlt.resource(columns={"ts": {"data_type": "timestamp"}})
    def rows() -> Any:
        yield {"ts": "2024-01-01T00:00:00Z", "k": 1}

    resource = rows()
    assert iceberg_adapter(resource) is resource and iceberg_adapter(resource, []) is resource
    assert "x-partition" not in resource.compute_table_schema()["columns"]["ts"]
    single = iceberg_adapter(rows(), iceberg_partition.month("ts", "event_month"))
    ts = single.compute_table_schema()["columns"]["ts"]
    assert ts["data_type"] == "timestamp" and ts["x-partition-transform"] == "month" and ts["x-partition-name"] == "event_month"
    raw = iceberg_adapter([{"id": 1}], partition="id")
    assert raw.name == "content" and raw.compute_table_schema()["columns"]["id"]["x-partition"] is True

    @dlt.source
    def one() -> Any:
        return rows().with_name("only")

    @dlt.source
    def two() -> Any:
        return rows().with_name("a"), rows().with_name("b")

    assert iceberg_adapter(one(), "k").name == "only"
    with pytest.raises(ValueError, match="exactly one selected resource"):
        iceberg_adapter(two(), "k")


def test_s3_secret_for_duckdb() -> None:
    sql = s3_secret_sql("s", "bkt", {"s3.access-key-id": "k", "s3.secret-access-key": "it's", "s3.endpoint": "http://127.0.0.1:9000"})
    assert sql is not None
    assert "KEY_ID 'k'" in sql and "SECRET 'it''s'" in sql and "ENDPOINT '127.0.0.1:9000'" in sql
    assert "USE_SSL false" in sql and "SCOPE 's3://bkt'" in sql and "URL_STYLE 'path'" in sql
    assert s3_secret_sql("s", "bkt", {}) is None


def test_import_is_lazy() -> None:
    code = (
        "import sys, ingester; assert 'dlt' not in sys.modules\n"
        "from ingester import iceberg_rest, iceberg_partition, PartitionTransform\n"
        "assert 'dlt' in sys.modules and 'ingester.dlt.client' not in sys.modules\n"
        "iceberg_rest(catalog_uri='http://x').client_class\n"
        "assert 'ingester.dlt.client' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_atomic_multi_table_follows_the_daemon_setting_unless_given(monkeypatch: pytest.MonkeyPatch) -> None:
    from ingester import iceberg

    assert resolved(iceberg()).atomic_setting() == "auto"
    monkeypatch.setenv("INGESTER_COMMIT__ATOMIC_MULTI_TABLE", "off")
    assert resolved(iceberg()).atomic_setting() == "off"
    assert resolved(iceberg(atomic_multi_table="auto")).atomic_setting() == "auto"
    monkeypatch.setenv("DESTINATION__ICEBERG__ATOMIC_MULTI_TABLE", "auto")
    assert resolved(iceberg()).atomic_setting() == "auto"
    with pytest.raises(ConfigurationValueError, match="atomic_multi_table"):
        resolved(iceberg(atomic_multi_table="always"))
