"""Read a table with DuckDB's iceberg extension (1.4 or 1.5 venv): `python read_duckdb.py request.json`.

Extensions come from pip packages, never downloaded: DuckDB 1.4's `duckdb-ext-*` packages form an
extension directory, DuckDB 1.5's `duckdb-extension-*` packages are loaded by file path.
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path
from typing import TYPE_CHECKING

from protocol import Read, Request, serve

if TYPE_CHECKING:
    import duckdb

EXTENSIONS = ("httpfs", "avro", "iceberg")


def _package_dir(module: str) -> Path | None:
    """The folder of an installed (possibly namespace) package, None when absent."""
    spec = importlib.util.find_spec(module)
    locations = list(spec.submodule_search_locations or ()) if spec else []
    return Path(locations[0]) if locations else None


@functools.cache
def connect() -> duckdb.DuckDBPyConnection:
    """A connection with httpfs, avro and iceberg loaded from the venv's packages (one per process:
    loading the extensions costs more than reading a small table)."""
    import duckdb

    config: dict[str, str | bool | int | float | list[str]] = {
        "autoinstall_known_extensions": False,
        "autoload_known_extensions": False,
    }
    legacy = _package_dir("duckdb_ext")
    if legacy:
        config["extension_directory"] = str(legacy / "extensions")
    con = duckdb.connect(config=config)
    for name in EXTENSIONS:
        if legacy:
            con.execute(f"LOAD {name}")
            continue
        package = _package_dir(f"duckdb_extension_{name}")
        if package is None:
            raise RuntimeError(f"no duckdb-ext-{name} nor duckdb-extension-{name} package installed")
        con.execute(f"LOAD '{package / 'extensions' / f'v{duckdb.__version__}' / f'{name}.duckdb_extension'}'")
    return con


def _count(con: duckdb.DuckDBPyConnection, query: str) -> int:
    row = con.sql(query).fetchone()
    return int(row[0]) if row else 0


def read(request: Request) -> Read:
    """`SELECT * FROM iceberg_scan(...)`, plus `COUNT(*)` with and without the filter."""
    con = connect()
    if request.s3:
        s3 = request.s3
        host = s3.endpoint.split("://", 1)[-1]
        con.execute(
            "CREATE OR REPLACE SECRET interop (TYPE s3, KEY_ID ?, SECRET ?, REGION ?, ENDPOINT ?, URL_STYLE 'path', USE_SSL ?)",
            [s3.access_key_id, s3.secret_access_key, s3.region, host, s3.endpoint.startswith("https")],
        )
    source = "iceberg_scan('" + request.path.replace("'", "''") + "')"
    rel = con.sql(f"SELECT * FROM {source}")
    types = dict(zip(rel.columns, map(str, rel.types)))
    result = Read(rel.to_arrow_table(), types, _count(con, f"SELECT COUNT(*) FROM {source}"))
    if request.filter:
        where = request.filter.sql()
        result.filtered = con.sql(f"SELECT * FROM {source} WHERE {where}").to_arrow_table()
        result.filtered_count = _count(con, f"SELECT COUNT(*) FROM {source} WHERE {where}")
    return result


if __name__ == "__main__":
    packages = ("duckdb", *(f"{p}-{e}" for p in ("duckdb-ext", "duckdb-extension") for e in EXTENSIONS))
    serve("duckdb", packages, read)
