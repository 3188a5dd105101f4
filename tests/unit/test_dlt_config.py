"""The dlt destination factories, their configuration and the adapter: no servers."""

from __future__ import annotations

import inspect
import subprocess
import sys
from pathlib import Path
from typing import Any

import dlt
import pytest
from dlt.common.configuration.container import Container
from dlt.common.configuration.exceptions import ConfigFieldMissingException
from dlt.common.configuration.specs.pluggable_run_context import PluggableRunContext
from dlt.destinations.impl.filesystem.iceberg_adapter import iceberg_partition

from ingester import iceberg, iceberg_adapter, iceberg_rest
from ingester.catalog import catalog_properties
from ingester.dlt.adapter import partition_hints
from ingester.dlt.client import iceberg_table_name
from ingester.dlt.sql_client import s3_secret_sql
from ingester.settings import Settings

REFERENCE_PARAMETERS = {  # dlt-iceberg's README: names and defaults
    "catalog_uri": None, "namespace": None, "warehouse": None, "credential": None, "oauth2_server_uri": None,
    "token": None, "sigv4_enabled": False, "signing_region": None, "s3_endpoint": None, "s3_access_key_id": None,
    "s3_secret_access_key": None, "s3_region": None, "max_retries": 5, "retry_backoff_base": 2.0,
    "merge_batch_size": 500_000, "strict_casting": False,
}


def resolved(factory: Any) -> Any:
    """The configuration dlt resolves for a pipeline with dataset ``ds``."""
    return factory.configuration(factory.spec()._bind_dataset_name("ds"))


def test_iceberg_rest_takes_every_reference_parameter_with_its_default() -> None:
    params = inspect.signature(iceberg_rest.__init__).parameters
    assert {name: params[name].default for name in REFERENCE_PARAMETERS} == REFERENCE_PARAMETERS
    explicit = {"catalog_uri": "http://cat", "namespace": "ns", "warehouse": "wh", "credential": "id:secret",
                "oauth2_server_uri": "http://auth/token", "token": "tok", "sigv4_enabled": True, "signing_region": "eu-west-1",
                "s3_endpoint": "http://s3", "s3_access_key_id": "key", "s3_secret_access_key": "secret", "s3_region": "eu-west-1",
                "max_retries": 2, "retry_backoff_base": 3.0, "merge_batch_size": 10, "strict_casting": True}
    config = resolved(iceberg_rest(**explicit))
    assert {name: getattr(config, name) for name in explicit} == explicit


def test_iceberg_rest_from_env_with_oauth2_credential_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DESTINATION__ICEBERG_REST__CATALOG_URI", "http://catalog:8181/")
    monkeypatch.setenv("DESTINATION__ICEBERG_REST__CREDENTIAL", "client:secret")
    monkeypatch.setenv("DESTINATION__ICEBERG_REST__WAREHOUSE", "tables")
    monkeypatch.setenv("DESTINATION__ICEBERG_REST__S3_ENDPOINT", "http://s3:9000")
    monkeypatch.setenv("DESTINATION__ICEBERG_REST__S3_ACCESS_KEY_ID", "key")
    monkeypatch.setenv("DESTINATION__ICEBERG_REST__S3_SECRET_ACCESS_KEY", "s3secret")
    props = resolved(iceberg_rest()).catalog_props()
    assert props["type"] == "rest" and props["uri"] == "http://catalog:8181" and props["warehouse"] == "tables"
    # the credential works without oauth2_server_uri: the catalog's own token endpoint
    assert props["credential"] == "client:secret"
    assert props["oauth2-server-uri"] == "http://catalog:8181/v1/oauth/tokens"
    assert props["s3.endpoint"] == "http://s3:9000" and props["s3.secret-access-key"] == "s3secret"
    assert props["s3.path-style-access"] == "true"
    # explicit arguments win over the environment
    assert resolved(iceberg_rest(catalog_uri="http://other")).catalog_props()["uri"] == "http://other"


def test_iceberg_rest_from_secrets_toml(tmp_path: Path) -> None:
    (tmp_path / ".dlt").mkdir()
    (tmp_path / ".dlt" / "secrets.toml").write_text(
        '[destination.iceberg_rest]\ncatalog_uri = "https://polaris.example.com/api/catalog"\n'
        'credential = "id:from-toml"\noauth2_server_uri = "https://polaris.example.com/api/catalog/v1/oauth/tokens"\n'
    )
    context = Container()[PluggableRunContext]
    previous = context.context.run_dir
    context.reload(str(tmp_path))
    try:
        props = resolved(iceberg_rest()).catalog_props()
    finally:
        context.reload(previous)
    assert props["credential"] == "id:from-toml"
    assert props["oauth2-server-uri"] == "https://polaris.example.com/api/catalog/v1/oauth/tokens"


def test_iceberg_rest_needs_a_catalog_uri() -> None:
    with pytest.raises(ConfigFieldMissingException):
        resolved(iceberg_rest())


@pytest.mark.parametrize(
    ("uri", "signing_name"),
    [("http://127.0.0.1:8181", "s3tables"), ("https://glue.us-east-1.amazonaws.com/iceberg", "glue")],
)
def test_sigv4(uri: str, signing_name: str) -> None:
    props = resolved(iceberg_rest(catalog_uri=uri, sigv4_enabled=True, signing_region="us-east-1",
                                  s3_access_key_id="k", s3_secret_access_key="s")).catalog_props()
    assert props["rest.sigv4-enabled"] == "true" and props["rest.signing-region"] == "us-east-1"
    assert props["rest.signing-name"] == signing_name
    assert props["client.access-key-id"] == "k" and "credential" not in props


def test_sql_uri_is_a_sql_catalog_under_the_daemon_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGESTER_HOME", str(tmp_path / "home"))
    config = resolved(iceberg_rest(catalog_uri=f"sqlite:///{tmp_path}/c.db", warehouse=(tmp_path / "wh").as_uri()))
    props = config.catalog_props()
    assert props["type"] == "sql" and props["uri"] == f"sqlite:///{tmp_path}/c.db"
    assert config.resolved_catalog_name() == Settings().catalog.name


def test_iceberg_without_arguments_is_the_daemons_catalog(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("INGESTER_HOME", str(tmp_path / "home"))
    settings = Settings()
    config = resolved(iceberg())
    assert config.catalog_props() == catalog_properties(settings.catalog, settings.home_dir)
    assert config.catalog_props()["uri"] == f"sqlite:///{tmp_path / 'home' / 'catalog.db'}"
    assert config.resolved_catalog_name() == settings.catalog.name
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


def test_iceberg_table_names_never_start_with_an_underscore() -> None:
    assert iceberg_table_name("_dlt_loads") == "dlt_loads"
    assert iceberg_table_name("_dlt_pipeline_state") == "dlt_pipeline_state"
    assert iceberg_table_name("orders__items") == "orders__items"


def test_merge_strategies() -> None:
    caps = iceberg().capabilities()
    assert caps.supported_merge_strategies == ["upsert", "delete-insert"]  # upsert is the default
    assert caps.preferred_loader_file_format == "parquet"


def test_partition_hints_forms() -> None:
    assert partition_hints("region") == {"region": {"partition": True}}
    assert partition_hints({"ts": "DAY", "region": None}) == {
        "ts": {"partition": True, "x-partition-transform": "day"}, "region": {"partition": True}
    }
    assert partition_hints([("id", "bucket[8]"), iceberg_partition.truncate(4, "name"), iceberg_partition.year("d")]) == {
        "id": {"partition": True, "x-partition-transform": "bucket[8]"},
        "name": {"partition": True, "x-partition-transform": "truncate[4]"},
        "d": {"partition": True, "x-partition-transform": "year"},
    }
    with pytest.raises(ValueError, match="unknown partition transform"):
        partition_hints({"ts": "fortnight"})


def test_iceberg_adapter_sets_column_hints_on_the_resource() -> None:
    @dlt.resource(columns={"ts": {"data_type": "timestamp"}})
    def rows() -> Any:
        yield {"ts": "2024-01-01T00:00:00Z", "k": 1}

    resource = iceberg_adapter(rows(), partition={"ts": "hour", "k": "bucket[2]"})
    columns = resource.compute_table_schema()["columns"]
    assert columns["ts"]["data_type"] == "timestamp" and columns["ts"]["x-partition-transform"] == "hour"
    assert columns["k"]["partition"] is True and columns["k"]["x-partition-transform"] == "bucket[2]"
    with pytest.raises(ValueError):
        iceberg_adapter(rows())


def test_s3_secret_for_duckdb() -> None:
    sql = s3_secret_sql("s", "bkt", {"s3.access-key-id": "k", "s3.secret-access-key": "it's", "s3.endpoint": "http://127.0.0.1:9000"})
    assert sql is not None
    assert "KEY_ID 'k'" in sql and "SECRET 'it''s'" in sql and "ENDPOINT '127.0.0.1:9000'" in sql
    assert "USE_SSL false" in sql and "SCOPE 's3://bkt'" in sql and "URL_STYLE 'path'" in sql
    assert s3_secret_sql("s", "bkt", {}) is None


def test_import_is_lazy() -> None:
    code = (
        "import sys, ingester; assert 'dlt' not in sys.modules\n"
        "from ingester import iceberg_rest\n"
        "assert 'dlt' in sys.modules and 'ingester.dlt.client' not in sys.modules\n"
        "iceberg_rest(catalog_uri='http://x').client_class\n"
        "assert 'ingester.dlt.client' in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
