"""How a batch's rows become data files: one frozen value, built once, carried whole."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ingester.settings import DEFAULT_MERGE_BATCH_SIZE, DEFAULT_WRITE_CHUNK_BYTES, CommitSettings


@dataclass(frozen=True, slots=True)
class WriteOptions:
    """The write settings of ``CommitSettings`` (same names, same meanings), plus
    ``verify_files``: decode every page of a file before registering it as-is (off only for
    files this process just wrote, e.g. a dlt load package). ``table_properties``: see
    ``properties_for``."""

    strict_casting: bool = False
    zero_copy: bool = True
    write_chunk_bytes: int = DEFAULT_WRITE_CHUNK_BYTES
    merge_batch_size: int = DEFAULT_MERGE_BATCH_SIZE
    verify_files: bool = True
    table_properties: Mapping[str, Mapping[str, str]] = field(default_factory=dict)

    def properties_for(self, table: str) -> dict[str, str]:
        """The table properties for ``table`` (``ns.table``): ``*``'s, then the table name's,
        then ``ns.table``'s, each overriding the one before."""
        name = table.rpartition(".")[2]
        out: dict[str, str] = {}
        for key in ("*", name, table):
            out.update(self.table_properties.get(key, {}))
        return out

    @classmethod
    def from_settings(cls, settings: CommitSettings) -> WriteOptions:
        return cls(
            strict_casting=settings.strict_casting,
            zero_copy=settings.zero_copy,
            write_chunk_bytes=settings.write_chunk_bytes,
            merge_batch_size=settings.merge_batch_size,
            table_properties=settings.table_properties,
        )
