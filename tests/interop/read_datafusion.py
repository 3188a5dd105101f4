"""Read a table with iceberg-rust inside DataFusion (its own venv): `python read_datafusion.py request.json`.

pyiceberg-core's `IcebergDataFusionTable(identifier, metadata_location, file_io_properties)` is a
DataFusion table provider (FFI); it is registered as `t` and queried with SQL.
"""

from __future__ import annotations

from protocol import Read, Request, serve


def read(request: Request) -> Read:
    """`SELECT * FROM t`, plus `COUNT(*)` with and without the filter."""
    from datafusion import SessionContext
    from pyiceberg_core.datafusion import IcebergDataFusionTable

    props = request.s3.pyiceberg_properties() if request.s3 else {}
    provider = IcebergDataFusionTable(["interop", "t"], request.metadata_location, props)
    ctx = SessionContext()
    ctx.register_table("t", provider)
    df = ctx.sql("SELECT * FROM t")
    table = df.to_arrow_table()
    types = {f.name: str(f.type) for f in df.schema()}
    result = Read(table, types, ctx.sql("SELECT COUNT(*) AS n FROM t").to_pydict()["n"][0])
    if request.filter:
        where = request.filter.sql()
        result.filtered = ctx.sql(f"SELECT * FROM t WHERE {where}").to_arrow_table()
        result.filtered_count = ctx.sql(f"SELECT COUNT(*) AS n FROM t WHERE {where}").to_pydict()["n"][0]
    return result


if __name__ == "__main__":
    serve("datafusion", ("datafusion", "pyiceberg-core", "pyarrow"), read)
