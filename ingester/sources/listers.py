"""Listing the objects under a prefix, a page at a time: S3 (``ListObjectsV2`` with pagination,
which gives each object's etag) or a local folder (recursive, no etag).

Pages are lazy: a prefix of ten million objects is never held whole. Blocking (run in a thread).
S3 errors a retry may fix (network, 5xx, throttling) are raised as ``ConnectionError``; the rest
(no such bucket, access denied) as ``ListingFailed`` naming the prefix.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import unquote, urlsplit

from ingester.errors import TerminalError
from ingester.object_keys import ObjectRef

PAGE_OBJECTS = 1000
"""Objects per page (S3's maximum for ListObjectsV2)."""
_TRANSIENT_CODES = ("SlowDown", "Throttling", "RequestTimeout", "InternalError", "ServiceUnavailable")


class ListingFailed(TerminalError):
    """A prefix cannot be listed (missing bucket or folder, refused credentials)."""


@dataclass(frozen=True, slots=True)
class ListedObject:
    ref: ObjectRef
    mtime_s: float
    """Last modified (Unix time): the age of a file not loaded yet comes from it."""


class ObjectLister(Protocol):
    def pages(self, prefix: str) -> Iterator[list[ListedObject]]:
        """The objects under ``prefix``, a page at a time (may be empty pages)."""


def is_s3(prefix: str) -> bool:
    return urlsplit(prefix).scheme in ("s3", "s3a")


def local_folder(prefix: str) -> Path:
    """``file:///a/b/`` or ``/a/b`` -> the resolved folder."""
    parts = urlsplit(prefix)
    return Path(unquote(parts.path) if parts.scheme == "file" else prefix).resolve()


class StoreLister:
    """``ObjectLister`` for ``s3://bucket/prefix`` (through ``s3_client()``, made on first use) and
    local folders."""

    def __init__(self, s3_client: Callable[[], Any] | None = None, page_objects: int = PAGE_OBJECTS) -> None:
        self._make_client = s3_client
        self._client: Any = None
        self._page = page_objects

    def pages(self, prefix: str) -> Iterator[list[ListedObject]]:
        return self._s3_pages(prefix) if is_s3(prefix) else self._local_pages(local_folder(prefix))

    def _s3_pages(self, prefix: str) -> Iterator[list[ListedObject]]:
        from botocore.exceptions import BotoCoreError, ClientError

        parts = urlsplit(prefix)
        bucket, key_prefix = parts.netloc, parts.path.lstrip("/")
        if self._make_client is None:
            raise ListingFailed(f"cannot list {prefix}: no S3 store is configured (catalog.s3_endpoint / keys)")
        try:
            if self._client is None:
                self._client = self._make_client()
            paginator = self._client.get_paginator("list_objects_v2")
            for page in paginator.paginate(Bucket=bucket, Prefix=key_prefix, PaginationConfig={"PageSize": self._page}):
                yield [
                    ListedObject(ObjectRef(f"s3://{bucket}/{o['Key']}", int(o["Size"]), o.get("ETag")),
                                 o["LastModified"].timestamp())
                    for o in page.get("Contents", ()) if not o["Key"].endswith("/")
                ]
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
            if status >= 500 or status == 429 or error.get("Code") in _TRANSIENT_CODES:
                raise ConnectionError(f"listing {prefix}: {error.get('Code')}: {error.get('Message')}") from None
            raise ListingFailed(f"cannot list {prefix}: {error.get('Code')}: {error.get('Message')}") from None
        except BotoCoreError as exc:  # no connection, timeouts: worth a retry
            raise ConnectionError(f"listing {prefix}: {exc}") from None

    def _local_pages(self, folder: Path) -> Iterator[list[ListedObject]]:
        if not folder.is_dir():
            raise ListingFailed(f"cannot list {folder}: not a folder")
        page: list[ListedObject] = []
        for path, st in _walk(folder):
            page.append(ListedObject(ObjectRef(path, st.st_size), st.st_mtime))
            if len(page) >= self._page:
                yield page
                page = []
        yield page


def _walk(folder: Path) -> Iterator[tuple[str, os.stat_result]]:
    """Regular files under ``folder`` (recursive, symlinks not followed), with their stat."""
    stack = [str(folder)]
    while stack:
        with os.scandir(stack.pop()) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    stack.append(entry.path)
                elif entry.is_file(follow_symlinks=False):
                    yield entry.path, entry.stat(follow_symlinks=False)
