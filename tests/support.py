"""Test helpers: parquet files, a second reader (DuckDB, offline extensions), engines."""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.table import Table

from ingester.events import FileEvent, WriteDisposition, encode_event

_counter = itertools.count()


def write_parquet(folder: Path, table: pa.Table | Mapping[str, Sequence[Any]], name: str | None = None) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    data = table if isinstance(table, pa.Table) else pa.table(dict(table))
    path = folder / (name or f"f{next(_counter)}.parquet")
    pq.write_table(data, path)
    return path


def flip_page_bytes(path: Path, column: int = 0) -> Path:
    """``path`` with bytes flipped inside one column chunk's pages (its footer still reads)."""
    raw = bytearray(path.read_bytes())
    chunk = pq.ParquetFile(path).metadata.row_group(0).column(column)
    at = (chunk.dictionary_page_offset or chunk.data_page_offset) + chunk.total_compressed_size // 2
    raw[at:at + 16] = bytes(b ^ 0xA5 for b in raw[at:at + 16])
    path.write_bytes(bytes(raw))
    return path


def event_for(path: Path, table: str, **kw: Any) -> bytes:
    """JSON envelope for a local parquet file."""
    rows = pq.ParquetFile(path).metadata.num_rows
    disposition = WriteDisposition(kw.pop("write_disposition", "append"))
    return encode_event(
        FileEvent(table=table, location=str(path), row_count=rows, byte_size=path.stat().st_size,
                  write_disposition=disposition, **kw)
    )


def duckdb_connection(s3: Mapping[str, str] | None = None) -> duckdb.DuckDBPyConnection:
    """DuckDB with the iceberg extension from the pip packages (no network)."""
    import duckdb_ext  # type: ignore[import-not-found]

    ext_dir = Path(next(iter(duckdb_ext.__path__))) / "extensions"
    con = duckdb.connect(config={"extension_directory": str(ext_dir), "autoinstall_known_extensions": False})
    for ext in ("httpfs", "avro", "iceberg"):
        con.execute(f"LOAD {ext}")
    if s3:
        endpoint = s3["endpoint"].split("://", 1)[-1]
        con.execute(
            f"CREATE SECRET s3 (TYPE S3, KEY_ID '{s3['key']}', SECRET '{s3['secret']}', REGION 'us-east-1', "
            f"ENDPOINT '{endpoint}', URL_STYLE 'path', USE_SSL false)"
        )
    return con


def duckdb_rows(table: Table, query: str = "SELECT count(*) FROM t", s3: Mapping[str, str] | None = None) -> list[tuple[Any, ...]]:
    """Run ``query`` over the table's current metadata file, ``t`` names the table."""
    con = duckdb_connection(s3)
    location = table.metadata_location
    if location.startswith("file://"):
        location = location[len("file://"):]
    con.execute(f"CREATE VIEW t AS SELECT * FROM iceberg_scan('{location}')")
    return con.execute(query).fetchall()


def snapshot_count(table: Table) -> int:
    table.refresh()
    return len(table.metadata.snapshots)


def catalog_env(catalog: Mapping[str, Any]) -> dict[str, str]:
    """``Settings.catalog`` as ``INGESTER_CATALOG__*`` variables."""
    return {f"INGESTER_CATALOG__{key.upper()}": str(value) for key, value in catalog.items()}


def rest_catalog_settings(seaweed: Any, auth: str = "oauth2") -> dict[str, Any]:
    """Settings.catalog for the SeaweedFS REST catalog (as a dict for ``Settings(catalog=...)``)."""
    base: dict[str, Any] = {
        "type": "rest", "uri": seaweed.iceberg_uri, "warehouse": seaweed.warehouse,
        "s3_endpoint": seaweed.s3_endpoint, "s3_access_key_id": seaweed.access_key,
        "s3_secret_access_key": seaweed.secret_key, "s3_region": seaweed.region,
    }
    if auth == "oauth2":
        base |= {"credential": f"{seaweed.access_key}:{seaweed.secret_key}", "oauth2_server_uri": seaweed.token_endpoint}
    elif auth == "sigv4":
        base |= {"sigv4_enabled": True, "signing_region": seaweed.region, "signing_name": "s3tables"}
    else:
        base |= {"token": seaweed.fetch_token()}
    return base


def s3_secret(seaweed: Any) -> dict[str, str]:
    return {"endpoint": seaweed.s3_endpoint, "key": seaweed.access_key, "secret": seaweed.secret_key}


@dataclass(frozen=True)
class CatalogUnderTest:
    """One of the catalogs a test runs on."""

    kind: str
    """``sql``: the embedded SQLite catalog and local warehouse; ``rest``: SeaweedFS on S3."""
    settings: dict[str, Any]
    """``Settings.catalog`` (empty: the embedded default)."""
    s3: dict[str, str] | None = None
    """DuckDB's S3 secret (``support.duckdb_connection``), for ``rest``."""
    server: Any = None
    """The ``SeaweedServer``, for ``rest``."""
