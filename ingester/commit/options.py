"""How a batch's rows become data files: one frozen value, built once, carried whole."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from ingester.events import FileEvent
from ingester.settings import DEFAULT_MERGE_BATCH_SIZE, DEFAULT_WRITE_CHUNK_BYTES, CommitSettings


@dataclass(frozen=True, slots=True)
class WriteOptions:
    """The write settings of ``CommitSettings`` (same names, same meanings), plus
    ``verify_files``: decode every page of a file before registering it as-is (off only for
    files this process just wrote, e.g. a dlt load package); ``trust_verified``
    (``commit.verify_pages = "unverified"``): not the files whose producer decoded them. ``table_properties``: see
    ``properties_for``."""

    strict_casting: bool = False
    zero_copy: bool = True
    write_chunk_bytes: int = DEFAULT_WRITE_CHUNK_BYTES
    merge_batch_size: int = DEFAULT_MERGE_BATCH_SIZE
    verify_files: bool = True
    trust_verified: bool = True
    read_concurrency: int = 8
    """``storage.read_concurrency``: files copied at once when registered as-is (S3 latency)."""

    def must_verify(self, event: FileEvent) -> bool:
        """Decode every page of ``event``'s file before registering it as-is?"""
        return self.verify_files and not (self.trust_verified and event.verified)
    table_properties: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    sort_orders: Mapping[str, Sequence[str]] = field(default_factory=dict)

    def properties_for(self, table: str) -> dict[str, str]:
        """The table properties for ``table`` (``ns.table``): ``*``'s, then the table name's,
        then ``ns.table``'s, each overriding the one before."""
        out: dict[str, str] = {}
        for key in _keys(table):
            out.update(self.table_properties.get(key, {}))
        return out

    def sort_order_for(self, table: str) -> tuple[str, ...]:
        """The configured sort terms of ``table`` (``ns.table``): ``ns.table``'s, else the table
        name's, else ``*``'s (``()``: none)."""
        for key in reversed(_keys(table)):
            if key in self.sort_orders:
                return tuple(self.sort_orders[key])
        return ()

    @classmethod
    def from_settings(cls, settings: CommitSettings, read_concurrency: int = 8) -> WriteOptions:
        return cls(
            strict_casting=settings.strict_casting,
            zero_copy=settings.zero_copy,
            write_chunk_bytes=settings.write_chunk_bytes,
            merge_batch_size=settings.merge_batch_size,
            trust_verified=settings.verify_pages == "unverified",
            read_concurrency=read_concurrency,
            table_properties=settings.table_properties,
            sort_orders=settings.sort_orders,
        )


def _keys(table: str) -> tuple[str, str, str]:
    """The settings keys naming ``ns.table``, least specific first."""
    return ("*", table.rpartition(".")[2], table)
