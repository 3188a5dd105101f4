"""Read a table with polars (its own venv): `python read_polars.py request.json`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from protocol import Read, Request, serve

if TYPE_CHECKING:
    import polars as pl


def _literal(value: Any, dtype: pl.DataType) -> pl.Expr:
    """`value` as a literal of the column's type; text for a temporal column is parsed as ISO."""
    import polars as pl

    if isinstance(value, str) and dtype.is_temporal():
        return pl.lit(value).str.strptime(dtype)
    return pl.lit(value).cast(dtype)


def read(request: Request) -> Read:
    """`pl.scan_iceberg` on the metadata file; counts through `select(pl.len())`."""
    import polars as pl

    storage = request.s3.pyiceberg_properties() if request.s3 else None
    lf = pl.scan_iceberg(request.metadata_location, storage_options=storage)
    schema = lf.collect_schema()
    count = lf.select(pl.len()).collect().item()
    result = Read(lf.collect().to_arrow(), {k: str(v) for k, v in schema.items()}, count)
    if request.filter:
        f = request.filter
        filtered = lf.filter(f.apply(pl.col(f.column), _literal(f.value, schema[f.column])))
        result.filtered = filtered.collect().to_arrow()
        result.filtered_count = filtered.select(pl.len()).collect().item()
    return result


if __name__ == "__main__":
    serve("polars", ("polars", "polars-runtime-32", "polars-iceberg", "pyiceberg", "pyarrow"), read)
