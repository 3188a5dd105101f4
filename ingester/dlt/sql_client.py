"""Read access for ``pipeline.dataset()``: DuckDB views over the Iceberg tables.

Each dlt table becomes a view ``SELECT <columns> FROM iceberg_scan('<current metadata>')``,
built from the catalog when a query names it and rebuilt on every query, so reads see the
newest snapshot. S3 locations get a DuckDB secret from the table's own FileIO properties
(catalog properties or credentials vended by a REST catalog). DuckDB extensions load from the
``duckdb-ext-*`` packages when installed (offline), else by DuckDB's usual autoinstall.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import duckdb
from dlt.common.destination.client import JobClientBase, SupportsOpenTables
from dlt.common.destination.exceptions import DestinationUndefinedEntity
from dlt.common.destination.typing import PreparedTableSchema
from dlt.common.schema import Schema
from dlt.destinations.impl.duckdb.configuration import ConnStatement, DuckDbCredentials
from dlt.destinations.impl.duckdb.sql_client import WithTableScanners
from pyiceberg.table import Table

EXTENSIONS = ("httpfs", "avro", "iceberg")


def extension_directory() -> str | None:
    """Folder of the offline DuckDB extension packages (``duckdb-ext-*``), if installed."""
    spec = importlib.util.find_spec("duckdb_ext")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "extensions"
    return str(folder) if folder.is_dir() else None


def _literal(value: str) -> str:
    return "'" + value.replace("'", "''") + "'"


def s3_secret_sql(name: str, bucket: str, props: dict[str, str]) -> str | None:
    """``CREATE SECRET`` for ``s3://bucket`` from pyiceberg FileIO properties (None: no keys)."""
    key, secret = props.get("s3.access-key-id"), props.get("s3.secret-access-key")
    if not key or not secret:
        return None
    endpoint = props.get("s3.endpoint") or ""
    parsed = urlparse(endpoint) if endpoint else None
    options = [
        "TYPE S3",
        f"KEY_ID {_literal(key)}",
        f"SECRET {_literal(secret)}",
        f"REGION {_literal(props.get('s3.region') or props.get('client.region') or 'us-east-1')}",
        f"SCOPE {_literal('s3://' + bucket)}",
    ]
    if token := props.get("s3.session-token"):
        options.append(f"SESSION_TOKEN {_literal(token)}")
    if parsed is not None and parsed.netloc:
        options += [
            f"ENDPOINT {_literal(parsed.netloc)}",
            f"USE_SSL {'false' if parsed.scheme == 'http' else 'true'}",
            "URL_STYLE 'path'" if props.get("s3.path-style-access", "true").lower() == "true" else "URL_STYLE 'vhost'",
        ]
    return f"CREATE OR REPLACE SECRET {name} ({', '.join(options)})"


class IcebergSqlClient(WithTableScanners):
    """A DuckDB in-memory database with one view per dlt table of the dataset, over any job
    client with open-table access to Iceberg tables (dlt's ``SupportsOpenTables``)."""

    def __init__(self, remote_client: JobClientBase, dataset_name: str) -> None:
        if not isinstance(remote_client, SupportsOpenTables):
            raise TypeError(f"{type(remote_client).__name__} has no open-table access")
        config: dict[str, Any] = {}
        if ext := extension_directory():
            config = {"extension_directory": ext, "autoinstall_known_extensions": False}
        conn = duckdb.connect(":memory:", config=config)
        super().__init__(remote_client, dataset_name, DuckDbCredentials(conn))
        self.memory_db = conn  # owned: closed with the client
        self._open_tables: SupportsOpenTables = remote_client
        pool = self.credentials.conn_pool
        assert pool is not None  # created when the credentials resolved
        self._pool = pool
        self._pool.add_statements([ConnStatement(f"LOAD {e}") for e in EXTENSIONS])

    def can_create_view(self, table_schema: PreparedTableSchema) -> bool:
        return True

    def should_replace_view(self, view_name: str, table_schema: PreparedTableSchema) -> bool:
        return True  # the current metadata file changes with every commit

    def create_view_select(self, table_schema: PreparedTableSchema, schema: Schema | None = None) -> tuple[str, str] | None:
        """(table location, SELECT over the table's current snapshot); None if it does not exist."""
        try:
            table = self._open_tables.load_open_table("iceberg", str(table_schema["name"]))
        except DestinationUndefinedEntity:
            return None
        self._add_secret(table)
        names = set(table.schema().column_names)
        columns = [self.escape_column_name(c) for c in table_schema.get("columns", {}) if c in names]
        if table.current_snapshot() is None or not columns:
            empty = ", ".join(f"NULL AS {c}" for c in columns or ['"_empty"'])
            return table.location(), f"SELECT {empty} WHERE false"
        location = table.metadata_location
        if location.startswith("file://"):
            location = urlparse(location).path
        return table.location(), f"SELECT {', '.join(columns)} FROM iceberg_scan({_literal(location)})"

    def _add_secret(self, table: Table) -> None:
        parsed = urlparse(table.location())
        if parsed.scheme not in ("s3", "s3a"):
            return
        name = "ingester_" + re.sub("[^a-z0-9]", "_", parsed.netloc.lower())
        sql = s3_secret_sql(name, parsed.netloc, {k: str(v) for k, v in table.io.properties.items()})
        if sql is not None:
            self._pool.add_statements([ConnStatement(sql, key=f"secret:{parsed.netloc}")], conn=self._conn)
