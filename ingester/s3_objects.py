"""Small S3 objects through ``obstore`` (Rust ``object_store``): one request each, no part buffer.

pyarrow's S3 streams cost a small object more than it is: every output stream zero-fills a
10 MB part buffer (about a fifth of the daemon's CPU on a stream of small files on S3, and
most of its memory), and opening an input file is a HEAD before the GET. Measured on the test
SeaweedFS, 1,000 objects of 12 KB on 8 threads: PUT 1.7 -> 0.33 ms of client CPU each, GET
1.0 -> 0.4 ms. So the objects ingester writes to a table (``fileio.PutOnceFileIO``) and the
ends of the files it reads (``storage.FileReader``) go through here, with the options of the
pyarrow filesystem that would have done it: one place says how to reach the store. Options
that have no counterpart here (a role to assume, a proxy, anonymous access, a CA file) keep
pyarrow (``store_for`` returns None).

Errors leave as ``OSError`` texts of the kind pyarrow raises, so ``errors.is_transient`` and
``errors.is_auth_failure`` read them the same way. No error or repr names a credential.
"""

from __future__ import annotations

import io
import threading
from datetime import timedelta
from types import TracebackType
from typing import Any

import obstore
from obstore.exceptions import (
    AlreadyExistsError,
    NotFoundError,
    PermissionDeniedError,
    PreconditionError,
    UnauthenticatedError,
)
from obstore.store import S3Store
from pyarrow.fs import S3FileSystem

SINGLE_PUT_BYTES = 8 * 1024 * 1024
"""An object up to this size is one ``PutObject`` from memory; a larger one streams as a
multipart upload in parts of this size (memory per stream stays at one part)."""
RETRIES = 2
"""Retries of a failed request inside a call (5xx, dropped connection); the commit's own
retries come on top, as they do for pyarrow's (AWS SDK: 3 attempts)."""
_STORES = 64

_stores: dict[tuple[Any, ...], S3Store] = {}
_lock = threading.Lock()
_UNMAPPED = ("role_arn", "tls_ca_file_path", "default_metadata")
_UNSATISFIABLE = "416 Range Not Satisfiable"


def store_for(fs: S3FileSystem, bucket: str) -> S3Store | None:
    """The store of ``bucket`` reached as ``fs`` reaches it, or None when ``fs`` uses an option
    this module does not map (then keep using ``fs``). Stores are shared between callers
    with the same options (a store holds a connection pool)."""
    _, (options,) = fs.__reduce__()
    if options.get("anonymous") or not options.get("access_key") or any(options.get(k) for k in _UNMAPPED):
        return None
    if (options.get("proxy_options") or {}).get("host"):
        return None
    endpoint = options.get("endpoint_override") or ""
    key = (bucket, *sorted((k, str(v)) for k, v in options.items()))
    with _lock:
        store = _stores.get(key)
        if store is None:
            if len(_stores) >= _STORES:
                _stores.clear()
            store = _stores[key] = _new_store(bucket, options, endpoint)
    return store


def _new_store(bucket: str, options: dict[str, Any], endpoint: str) -> S3Store:
    scheme = options.get("scheme") or "https"
    if endpoint and "://" not in endpoint:  # pyarrow takes a host or a URL here
        endpoint = f"{scheme}://{endpoint}"
    client: dict[str, Any] = {"allow_http": endpoint.startswith("http://") or (not endpoint and scheme == "http")}
    if options.get("connect_timeout", -1) > 0:
        client["connect_timeout"] = timedelta(seconds=options["connect_timeout"])
    if options.get("request_timeout", -1) > 0:
        client["timeout"] = timedelta(seconds=options["request_timeout"])
    config: dict[str, Any] = {
        "access_key_id": options["access_key"],
        "secret_access_key": options["secret_key"],
        "region": options.get("region") or "us-east-1",
        "virtual_hosted_style_request": bool(options.get("force_virtual_addressing")),
    }
    if options.get("session_token"):
        config["token"] = options["session_token"]
    if endpoint:
        config["endpoint"] = endpoint
    return S3Store(bucket, config=config, client_options=client,  # type: ignore[arg-type]
                   retry_config={"max_retries": RETRIES, "retry_timeout": timedelta(seconds=60)})


def translated(exc: Exception, location: str) -> OSError:
    """An obstore error as the ``OSError`` pyarrow would raise for it: not found, refused
    (``ACCESS_DENIED``, pyarrow's name for it: terminal), or else a failed request (transient:
    retried).
    The text names the location and the store's answer, never a credential."""
    if isinstance(exc, (NotFoundError, FileNotFoundError)):  # obstore raises builtins for some
        return FileNotFoundError(f"{location}: Path does not exist (NoSuchKey)")
    if isinstance(exc, (PermissionDeniedError, UnauthenticatedError, PermissionError)):
        return PermissionError(f"{location}: ACCESS_DENIED: the store refused the request (credentials or policy): "
                               f"{_first_line(exc)}")
    if isinstance(exc, (AlreadyExistsError, PreconditionError, FileExistsError)):
        return FileExistsError(f"{location}: {_first_line(exc)}")
    return ConnectionError(f"{location}: request failed: {_first_line(exc)}")


def _first_line(exc: Exception) -> str:
    return str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__


def read_tail(store: S3Store, key: str, length: int, location: str) -> tuple[bytes, int]:
    """The last ``length`` bytes of the object (all of it when it is shorter) and its size:
    one suffix-range GET, no HEAD."""
    try:
        result = obstore.get(store, key, options={"range": {"suffix": length}})
        data = bytes(result.bytes())
        size = int(result.meta["size"])
    except Exception as exc:  # obstore raises its own types (and builtins for bad arguments)
        if _UNSATISFIABLE in str(exc):  # no byte to give: the object is empty (RFC 9110 14.1.1)
            return b"", 0
        raise translated(exc, location) from None
    return data, size


def read_range(store: S3Store, key: str, start: int, end: int, location: str) -> bytes:
    """Bytes ``start`` to ``end`` (exclusive) of the object: one ranged GET."""
    try:
        return bytes(obstore.get_range(store, key, start=start, end=end))
    except Exception as exc:
        raise translated(exc, location) from None


class PutStream(io.RawIOBase):
    """A write-only stream to one S3 object: held in memory up to ``SINGLE_PUT_BYTES`` and
    sent as one ``PutObject`` on ``close``; past that, a multipart upload in parts of that
    size. Leaving a ``with`` block by an exception sends nothing that is still held (a half
    written file never appears under its name)."""

    def __init__(self, store: S3Store, key: str, location: str) -> None:
        super().__init__()
        self._store, self._key, self._location = store, key, location
        self._held: io.BytesIO | None = io.BytesIO()
        self._writer: Any = None
        self._written = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        n = len(view)
        try:
            if self._writer is None:
                assert self._held is not None
                self._held.write(view)
                if self._held.tell() > SINGLE_PUT_BYTES:
                    self._writer = obstore.open_writer(self._store, self._key, buffer_size=SINGLE_PUT_BYTES)
                    self._writer.write(self._held.getbuffer())
                    self._held = None
            else:
                self._writer.write(view)
        except OSError:
            raise
        except Exception as exc:
            raise translated(exc, self._location) from None
        self._written += n
        return n

    def flush(self) -> None:
        """Nothing to do: bytes go out on ``close`` or a part at a time."""

    def close(self) -> None:
        if self.closed:
            return
        try:
            if self._writer is not None:
                self._writer.close()
            elif self._held is not None:
                obstore.put(self._store, self._key, self._held.getbuffer())
        except Exception as exc:
            raise translated(exc, self._location) from None
        finally:
            self._held = None
            super().close()

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if kind is not None:  # drop what is held: the object is not written
            self._held, self._writer = None, None
            super().close()
            return
        self.close()

    def __repr__(self) -> str:
        return f"PutStream({self._location!r})"
