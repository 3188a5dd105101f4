"""Read a table with daft (its own venv): `python read_daft.py request.json`."""

from __future__ import annotations

from protocol import Read, Request, serve


def read(request: Request) -> Read:
    """`daft.read_iceberg` on a pyiceberg StaticTable (daft reads a metadata path without our S3
    settings); counts through `count_rows`."""
    import daft
    from daft.io import IOConfig, S3Config
    from pyiceberg.table import StaticTable

    io_config = None
    if request.s3:
        s3 = request.s3
        io_config = IOConfig(
            s3=S3Config(
                endpoint_url=s3.endpoint,
                key_id=s3.access_key_id,
                access_key=s3.secret_access_key,
                region_name=s3.region,
                force_virtual_addressing=False,
            )
        )
    props = request.s3.pyiceberg_properties() if request.s3 else {}
    table = StaticTable.from_metadata(request.metadata_location, properties=props)
    df = daft.read_iceberg(table, io_config=io_config)
    types = {f.name: str(f.dtype) for f in df.schema()}
    result = Read(df.to_arrow(), types, df.count_rows())
    if request.filter:
        f = request.filter
        dtype = df.schema()[f.column].dtype
        filtered = df.where(f.apply(daft.col(f.column), daft.lit(f.value).cast(dtype)))
        result.filtered, result.filtered_count = filtered.to_arrow(), filtered.count_rows()
    return result


if __name__ == "__main__":
    serve("daft", ("daft", "pyiceberg", "pyarrow"), read)
