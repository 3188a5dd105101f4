"""``s3_objects``: which pyarrow options map to a store, how its errors read, and what a
``PutStream`` leaves behind (on obstore's in-memory store: the same calls as S3's)."""

from __future__ import annotations

import obstore
import pytest
from obstore.exceptions import GenericError, NotFoundError, PermissionDeniedError
from obstore.store import MemoryStore
from pyarrow.fs import S3FileSystem

from ingester import s3_objects
from ingester.errors import is_auth_failure, is_transient
from ingester.s3_objects import PutStream, store_for, translated

OPTIONS = {"access_key": "AKEY", "secret_key": "TOPSECRET", "region": "eu-west-1",
           "endpoint_override": "127.0.0.1:9000", "scheme": "http"}


def test_a_store_is_made_once_per_bucket_and_options() -> None:
    a = store_for(S3FileSystem(**OPTIONS), "b")
    assert a is not None and a is store_for(S3FileSystem(**OPTIONS), "b")
    assert a is not store_for(S3FileSystem(**OPTIONS), "other")
    assert a is not store_for(S3FileSystem(**{**OPTIONS, "secret_key": "another"}), "b")
    assert "TOPSECRET" not in repr(a)


@pytest.mark.parametrize("endpoint", ["127.0.0.1:9000", "http://127.0.0.1:9000"])
def test_the_endpoint_is_a_host_or_a_url(endpoint: str) -> None:
    store = store_for(S3FileSystem(**{**OPTIONS, "endpoint_override": endpoint}), "b")
    assert store is not None
    assert store.config["endpoint"] == "http://127.0.0.1:9000"
    assert store.config["region"] == "eu-west-1"
    assert store.config["virtual_hosted_style_request"] == "false"


@pytest.mark.parametrize("extra", [
    {"anonymous": True, "access_key": None, "secret_key": None},
    {"role_arn": "arn:aws:iam::1:role/r", "access_key": None, "secret_key": None},
    {"proxy_options": "http://proxy:3128"},
    {"access_key": None, "secret_key": None},  # the default credential chain: pyarrow's
], ids=["anonymous", "role", "proxy", "no-keys"])
def test_options_without_a_counterpart_keep_pyarrow(extra: dict[str, object]) -> None:
    assert store_for(S3FileSystem(**{**OPTIONS, **extra}), "b") is None


def test_errors_read_as_pyarrow_s() -> None:
    missing = translated(NotFoundError("object not found"), "s3://b/k")
    assert isinstance(missing, FileNotFoundError) and not is_transient(missing)
    refused = translated(PermissionDeniedError("403 Forbidden: SignatureDoesNotMatch"), "s3://b/k")
    assert is_auth_failure(refused) and not is_transient(refused) and "ACCESS_DENIED" in str(refused)
    failed = translated(GenericError("error sending request"), "s3://b/k")
    assert is_transient(failed) and "s3://b/k" in str(failed)


def test_a_small_object_is_one_put_on_close() -> None:
    store = MemoryStore()
    with PutStream(store, "t/a.bin", "s3://b/t/a.bin") as out:  # type: ignore[arg-type]
        out.write(b"abc")
        out.write(memoryview(b"defg"))
        assert out.tell() == 7
        assert not obstore.list(store).collect()  # nothing sent before the close
    assert bytes(obstore.get(store, "t/a.bin").bytes()) == b"abcdefg"


def test_an_exception_in_the_block_writes_nothing() -> None:
    store = MemoryStore()
    with pytest.raises(RuntimeError), PutStream(store, "t/a.bin", "s3://b/t/a.bin") as out:  # type: ignore[arg-type]
        out.write(b"half a file")
        raise RuntimeError("the writer failed")
    assert not obstore.list(store).collect()


def test_a_large_object_streams_in_parts(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(s3_objects, "SINGLE_PUT_BYTES", 1024)
    store = MemoryStore()
    chunks = [bytes([i]) * 700 for i in range(10)]
    with PutStream(store, "big.bin", "s3://b/big.bin") as out:  # type: ignore[arg-type]
        for chunk in chunks:
            out.write(chunk)
    assert bytes(obstore.get(store, "big.bin").bytes()) == b"".join(chunks)
