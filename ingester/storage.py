"""Reading event files: ``file://`` / plain paths and ``s3://``, behind an allow-list.

A location outside ``allowed_prefixes`` is refused before anything is opened.
"""

from __future__ import annotations

import errno
import os
import posixpath
import stat
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar
from urllib.parse import unquote, urlparse

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs

from ingester.errors import LocationRefused, UnreadableFile, is_auth_failure, is_transient
from ingester.events import FileEvent
from ingester.iceberg_layer.footers import TAIL_BYTES, Footer, footer_span, read_footer
from ingester.s3_objects import read_range, read_tail, store_for

T = TypeVar("T")
R = TypeVar("R")

_BAD_PATH_ERRNOS = (errno.ENAMETOOLONG, errno.ENOTDIR, errno.ELOOP, errno.EINVAL)


def canonical(location: str) -> str:
    """``file:///a/../b`` and ``/b`` -> ``file:///b``; ``s3://bkt/a/./k`` -> ``s3://bkt/a/k``.

    Raises ``LocationRefused`` for schemes other than file and s3, and for local paths that
    cannot be resolved (NUL bytes, symlink loops).
    """
    parsed = urlparse(location)
    if parsed.scheme in ("", "file"):
        path = unquote(parsed.path if parsed.scheme else location)
        if parsed.scheme == "file" and parsed.netloc not in ("", "localhost"):
            raise LocationRefused(f"file location with a host is not allowed: {location!r}")
        if "\x00" in path:
            raise LocationRefused(f"location {location!r} contains a NUL byte")
        try:
            return Path(path).resolve().as_uri()  # lstat and readlink only: nothing outside the prefixes is opened
        except (RuntimeError, OSError) as exc:  # a symlink loop (RuntimeError before Python 3.13)
            raise LocationRefused(f"location {location!r} cannot be resolved: {exc}") from None
    if parsed.scheme in ("s3", "s3a"):
        key = posixpath.normpath("/" + unquote(parsed.path)).lstrip("/")
        return f"s3://{parsed.netloc}/{key}"
    raise LocationRefused(f"unsupported location scheme {parsed.scheme!r} in {location!r}")


def is_remote(location: str | None) -> bool:
    """An object-store location (``s3://``): its reads wait on the network."""
    return bool(location) and str(location).startswith(("s3://", "s3a://"))


def file_threads(locations: Iterable[str | None], concurrency: int) -> int:
    """Threads for per-file work over ``locations``: ``concurrency`` when one is remote (threads
    overlap the requests' latency), else 1. A local file's steps are short native calls between
    Python ones, and more threads only contend for the interpreter: 2,000 local files of 500 rows
    over 4 tables took 7.3 s on one thread, 10-12 s on the default pools (2 cores)."""
    return concurrency if any(is_remote(loc) for loc in locations) else 1


def file_map(fn: Callable[[T], R], items: Sequence[T], threads: int, name: str) -> list[R]:
    """``fn`` of each of ``items``, in order: on up to ``threads`` threads named ``name``, or in
    this thread when ``threads`` is 1 or there is one item."""
    if threads <= 1 or len(items) <= 1:
        return [fn(item) for item in items]
    with ThreadPoolExecutor(min(threads, len(items)), thread_name_prefix=name) as pool:
        return list(pool.map(fn, items))


class Allowed(str):
    """A canonical location that passed a ``FileReader``'s allow-list (made by ``check`` only):
    the reader's other calls take it instead of resolving the event's location again."""


WHOLE_READ_BYTES = 1024 * 1024
"""A local file up to this size is read whole when opened (one read); larger ones are
memory-mapped. Mapping, faulting in and unmapping a small file costs twice its read: decoding
two columns of a 25 KB file took 0.25 ms mapped, 0.12 ms read."""
DEFAULT_READ_CONCURRENCY = 8
DEFAULT_READ_TIMEOUT_S = 120.0


class FileReader:
    """Opens parquet files named by events. Thread-safe; calls block (run them in threads).
    ``read_concurrency``: how many files of a batch are opened at once (footers read in
    parallel, which is what S3 latency needs)."""

    def __init__(
        self,
        allowed_prefixes: Sequence[str],
        s3: pafs.S3FileSystem | None = None,
        read_concurrency: int = DEFAULT_READ_CONCURRENCY,
    ) -> None:
        if read_concurrency < 1:
            raise ValueError("read_concurrency must be at least 1")
        self._allowed = [canonical(p).rstrip("/") + "/" for p in allowed_prefixes]
        self._s3 = s3
        self.read_concurrency = read_concurrency

    def check(self, location: str) -> Allowed:
        """Canonical location if it is allowed; raises ``LocationRefused`` otherwise."""
        loc = canonical(location)
        if not any(loc.startswith(prefix) for prefix in self._allowed):
            raise LocationRefused(f"location {location!r} is outside the allowed prefixes")
        return Allowed(loc)

    def allowed(self, event: FileEvent) -> Allowed | None:
        """``check`` of the event's location (None for inline data), refusals naming its table.
        A local path is resolved here, once: pass the result to the other calls."""
        if event.data is not None or event.location is None:
            return None
        try:
            return self.check(event.location)
        except LocationRefused as exc:
            raise LocationRefused(f"{event.table}: {exc}") from None

    def open_raw(self, event: FileEvent, allowed: Allowed | None = None, *, tail_only: bool = False) -> pa.NativeFile:
        """Random-access bytes of the event's file, after the allow-list check (``allowed``:
        its result, from ``allowed``). ``tail_only``: only the file's end is read (its footer),
        so a local file is neither read whole nor mapped, only read where asked (19 against 91 us
        for the footer of a 600 KB file)."""
        if event.data is not None:
            return pa.BufferReader(event.data)
        assert event.location is not None
        loc = allowed if isinstance(allowed, Allowed) else self.allowed(event)
        assert loc is not None
        try:
            if loc.startswith("s3://"):
                if self._s3 is None:
                    raise UnreadableFile(f"{event.describe()}: no S3 store is configured")
                return self._s3.open_input_file(loc[5:])
            path = unquote(urlparse(loc).path)
            info = os.stat(path)
            if stat.S_ISDIR(info.st_mode):
                raise IsADirectoryError(path)
            if not stat.S_ISREG(info.st_mode):  # opening a FIFO blocks forever, a device never ends
                raise UnreadableFile(f"{event.describe()}: not a regular file")
            if tail_only:
                return pa.OSFile(path)
            if info.st_size <= WHOLE_READ_BYTES:
                with open(path, "rb") as file:
                    return pa.BufferReader(file.read())
            return pa.memory_map(path)
        except FileNotFoundError:
            raise UnreadableFile(f"{event.describe()}: file not found") from None
        except IsADirectoryError:
            raise UnreadableFile(f"{event.describe()}: is a directory") from None
        except PermissionError:
            raise UnreadableFile(f"{event.describe()}: permission denied") from None
        except OSError as exc:
            if exc.errno in _BAD_PATH_ERRNOS:  # the name itself is wrong: retrying cannot help
                raise UnreadableFile(f"{event.describe()}: {exc.strerror}") from None
            if "NoSuchKey" in str(exc) or "does not exist" in str(exc) or "Path does not exist" in str(exc):
                raise UnreadableFile(f"{event.describe()}: file not found") from None
            raise

    def open(
        self, event: FileEvent, read_dictionary: Sequence[str] = (), metadata: pq.FileMetaData | None = None,
        allowed: Allowed | None = None,
    ) -> pq.ParquetFile:
        """Parquet file of the event (``read_dictionary``: columns read as arrow dictionaries;
        ``metadata``: its footer, already parsed by ``footer``, not read again);
        ``UnreadableFile`` / ``LocationRefused`` on bad input."""
        source = self.open_raw(event, allowed)
        try:
            return pq.ParquetFile(source, metadata=metadata, read_dictionary=list(read_dictionary) or None)
        except (pa.ArrowInvalid, OSError) as exc:
            raise_unless_the_files_fault(exc, event)
            raise UnreadableFile(f"{event.describe()}: not a readable parquet file: {exc}") from None

    def footer(self, event: FileEvent, allowed: Allowed | None = None) -> tuple[Footer, pq.FileMetaData]:
        """The event's parquet footer, raw and parsed, from one read of the file's end (on S3 a
        suffix-range GET, no HEAD: a small S3 object is then read whole, and kept as
        ``Footer.whole`` for ``open_raw_from`` and ``open_from``); ``UnreadableFile`` /
        ``LocationRefused`` on bad input (an empty or truncated object too), transient errors
        raised."""
        remote = event.data is None and is_remote(event.location)
        try:
            if remote and (tail := self._read_tail(event, allowed)) is not None:
                data, size = tail
                with pa.BufferReader(data) as end:
                    footer = read_footer(end, size, keep_whole=True, offset=size - len(data))
            else:
                with self.open_raw(event, allowed, tail_only=True) as source:
                    footer = read_footer(source, source.size(), keep_whole=remote)
            return footer, footer.metadata()
        except (pa.ArrowInvalid, OSError, ValueError) as exc:
            raise_unless_the_files_fault(exc, event)
            raise UnreadableFile(f"{event.describe()}: not a readable parquet file: {exc}") from None

    def _read_tail(self, event: FileEvent, allowed: Allowed | None) -> tuple[bytes, int] | None:
        """The last ``TAIL_BYTES`` of the event's S3 file (and its whole footer) and the file's
        size: one suffix-range GET (``s3_objects``: no HEAD first), a second one only for a
        longer footer; None when the store's options keep pyarrow (or it is not on S3)."""
        loc = allowed if isinstance(allowed, Allowed) else self.allowed(event)
        if loc is None or not loc.startswith("s3://"):
            return None
        if self._s3 is None:
            raise UnreadableFile(f"{event.describe()}: no S3 store is configured")
        bucket, _, key = loc[5:].partition("/")
        store = store_for(self._s3, bucket)
        if store is None:
            return None
        try:
            end, size = read_tail(store, key, TAIL_BYTES, loc)
            span = footer_span(end)
            if len(end) < span <= size:  # a footer longer than the tail: one more GET for the rest
                end = read_range(store, key, size - span, size - len(end), loc) + end
            return end, size
        except FileNotFoundError:
            raise UnreadableFile(f"{event.describe()}: file not found") from None

    def open_raw_from(self, event: FileEvent, footer: Footer, allowed: Allowed | None = None) -> pa.NativeFile:
        """``open_raw``, from the footer's bytes when it holds the whole file (no request)."""
        return pa.BufferReader(footer.whole) if footer.whole is not None else self.open_raw(event, allowed)

    def open_from(self, event: FileEvent, footer: Footer, read_dictionary: Sequence[str] = (),
                  metadata: pq.FileMetaData | None = None, allowed: Allowed | None = None) -> pq.ParquetFile:
        """``open``, from the footer's bytes when it holds the whole file (no request)."""
        if footer.whole is None:
            return self.open(event, read_dictionary, metadata, allowed)
        try:
            return pq.ParquetFile(pa.BufferReader(footer.whole), metadata=metadata, read_dictionary=list(read_dictionary) or None)
        except (pa.ArrowInvalid, OSError) as exc:
            raise UnreadableFile(f"{event.describe()}: not a readable parquet file: {exc}") from None

    def read(self, event: FileEvent) -> pa.Table:
        pf = self.open(event)
        try:
            return pf.read()
        except (pa.ArrowInvalid, OSError) as exc:
            raise_unless_the_files_fault(exc, event)
            raise UnreadableFile(f"{event.describe()}: corrupt parquet data: {exc}") from None


def raise_unless_the_files_fault(exc: BaseException, event: FileEvent) -> None:
    """Re-raise a network error while reading a remote file (it is retried), or the store
    refusing our credentials (the daemon stops, saying so): neither is the file's fault, so
    neither is dead-lettered. Local files are never transient: their error text (with the
    path) is not trusted for it."""
    if event.location and event.location.startswith(("s3://", "s3a://")) and (is_transient(exc) or is_auth_failure(exc)):
        raise exc


def s3_filesystem(
    endpoint: str | None, key: str | None, secret: str | None, region: str | None,
    timeout_s: float = DEFAULT_READ_TIMEOUT_S,
) -> pafs.S3FileSystem:
    """pyarrow S3 filesystem for an S3-compatible store (path-style addressing); a connect or
    a request that takes longer than ``timeout_s`` fails (transient: it is retried)."""
    parsed = urlparse(endpoint) if endpoint else None
    return pafs.S3FileSystem(
        access_key=key,
        secret_key=secret,
        region=region or "us-east-1",
        endpoint_override=parsed.netloc if parsed else None,
        scheme=parsed.scheme if parsed else "https",
        force_virtual_addressing=False,
        connect_timeout=timeout_s,
        request_timeout=timeout_s,
    )
