"""The FileIO every catalog of ingester gets: S3 writes of small objects are one request
(a ``PutStream``, or pyarrow's delayed-open stream where the options keep pyarrow)."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest
from pyiceberg.io import PY_IO_IMPL

from ingester.catalog import open_catalog
from ingester.iceberg_layer.fileio import IO_IMPL, PutOnceFileIO, with_file_io
from ingester.s3_objects import PutStream
from ingester.settings import CatalogSettings

S3 = {"s3.endpoint": "http://127.0.0.1:1", "s3.region": "us-east-1", "s3.access-key-id": "k", "s3.secret-access-key": "s"}


def test_s3_output_streams_open_lazily() -> None:
    fs = PutOnceFileIO(S3).fs_by_scheme("s3", "bucket")
    _, (options,) = fs.__reduce__()
    assert options["allow_delayed_open"] is True
    assert options["endpoint_override"] == "http://127.0.0.1:1" and options["access_key"] == "k"  # pyiceberg's options kept


def test_s3_outputs_are_put_streams_unless_the_options_keep_pyarrow(tmp_path: Path) -> None:
    class NotSent(Exception):
        """Leaves the block: a ``PutStream`` then sends nothing (there is no server here)."""

    with pytest.raises(NotSent), PutOnceFileIO(S3).new_output("s3://bucket/t/a.parquet").create(overwrite=True) as out:
        assert isinstance(out, PutStream) and repr(out) == "PutStream('s3://bucket/t/a.parquet')"
        raise NotSent
    kept = PutOnceFileIO({**S3, "s3.proxy-uri": "http://proxy.invalid:3128"})
    assert type(kept.new_output("s3://bucket/k")).__name__ == "PyArrowFile"
    local = PutOnceFileIO(S3).new_output((tmp_path / "a.bin").as_uri())
    assert type(local).__name__ == "PyArrowFile"


def test_a_fileio_named_in_the_properties_is_kept() -> None:
    assert with_file_io({})[PY_IO_IMPL] == IO_IMPL
    assert with_file_io({PY_IO_IMPL: "pyiceberg.io.fsspec.FsspecFileIO"})[PY_IO_IMPL] == "pyiceberg.io.fsspec.FsspecFileIO"


def test_the_embedded_catalog_tables_use_it(tmp_path: Path) -> None:
    catalog = open_catalog(CatalogSettings(), tmp_path / "home")
    catalog.create_namespace("ns")
    table = catalog.create_table(("ns", "t"), pa.schema([("id", pa.int64())]))
    assert isinstance(table.io, PutOnceFileIO)
    assert isinstance(catalog.load_table(("ns", "t")).io, PutOnceFileIO)
