"""Which files of a batch registered as-is become which of the table's files.

Small files of one layout are joined (``ingester.iceberg_layer.joined``): a stream of
500-row files lands as a few files of many row groups, not one file each. That spares the
writer a file create or a PUT per file, and every reader a footer and a request per file.
A joined file holds at most ``JOIN_MAX_ROW_GROUPS`` row groups (its footer, which readers
read whole, stays under about a megabyte) and at most the table's
``write.target-file-size-bytes``. A file of ``JOIN_BELOW_BYTES`` or more keeps a copy of its
own (its copy costs its bytes, not the create, and copies of several run side by side on S3),
as does a file whose footer cannot move (``Unjoinable``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pyarrow.parquet as pq
from pyiceberg.table import TableProperties
from pyiceberg.utils.properties import property_as_int

from ingester.commit.source_files import SourceFile
from ingester.iceberg_layer.footers import Footer, IdFooter, copy_size
from ingester.iceberg_layer.joined import RowGroups, Unjoinable, joined_footer, joined_size, row_groups

JOIN_BELOW_BYTES = 8 * 1024 * 1024
JOIN_MAX_ROW_GROUPS = 256


@dataclass(frozen=True, slots=True)
class Output:
    """One file of the table: the batch's ``files`` (indexes) it holds, its ``size``, and its
    footer when they are joined (None: one file, with its footer from ``with_field_ids``)."""

    files: tuple[int, ...]
    size: int
    thrift: bytes | None = None

    def parsed(self, batch: Sequence[SourceFile]) -> pq.FileMetaData:
        """Its footer parsed (the metrics of its ``DataFile``)."""
        if self.thrift is None:
            footer = batch[self.files[0]].footer
            assert footer is not None  # as_is_footers checked it
            return footer.metadata_again()
        return Footer(0, self.thrift).metadata()  # bytes made here: the parse that checks them


def target_file_bytes(properties: Mapping[str, str]) -> int:
    """The table's ``write.target-file-size-bytes`` (pyiceberg's default: 512 MiB)."""
    return property_as_int(dict(properties), TableProperties.WRITE_TARGET_FILE_SIZE_BYTES,
                           TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT) or TableProperties.WRITE_TARGET_FILE_SIZE_BYTES_DEFAULT


@dataclass(slots=True)
class _Open:
    files: list[int]
    parts: list[RowGroups]
    data_bytes: int = 0
    row_groups: int = 0


def plan(files: Sequence[SourceFile], footers: Sequence[IdFooter], target_bytes: int) -> list[Output]:
    """The table's files for ``files`` with ``footers`` (``as_is_footers``), in the order of
    each one's first file; the files of a joined one keep their order. A group's walked
    footers are let go as soon as it is full (about 6 KB a file)."""
    planned: list[_Open | Output] = []
    open_by_layout: dict[bytes, tuple[int, _Open]] = {}
    for i, (f, footer) in enumerate(zip(files, footers, strict=True)):
        assert f.footer is not None  # as_is_footers checked it
        data = f.footer.data_bytes
        parts = _joinable(data, footer)
        if parts is None:
            planned.append(_output(_Open([i], []), files, footers))
            continue
        layout = parts.layout
        at, group = open_by_layout.get(layout, (-1, None))
        if group is None or group.row_groups + parts.count > JOIN_MAX_ROW_GROUPS or group.data_bytes + data > target_bytes:
            if group is not None:
                planned[at] = _output(group, files, footers)
            group = _Open([], [])
            open_by_layout[layout] = (len(planned), group)
            planned.append(group)
        group.files.append(i)
        group.parts.append(parts)
        group.data_bytes += data
        group.row_groups += parts.count
    return [p if isinstance(p, Output) else _output(p, files, footers) for p in planned]


def _joinable(data_bytes: int, footer: IdFooter) -> RowGroups | None:
    """The walked footer of a file small enough to join and whose row groups can move, else None."""
    if data_bytes >= JOIN_BELOW_BYTES:
        return None
    try:
        return row_groups(footer.thrift)
    except Unjoinable:
        return None


def _output(group: _Open, files: Sequence[SourceFile], footers: Sequence[IdFooter]) -> Output:
    if len(group.files) == 1:
        i = group.files[0]
        footer = files[i].footer
        assert footer is not None
        return Output((i,), copy_size(footer, footers[i]))
    sizes = [_data_bytes(files[i]) for i in group.files]
    thrift = joined_footer(group.parts, sizes)
    return Output(tuple(group.files), joined_size(sizes, thrift), thrift)


def _data_bytes(f: SourceFile) -> int:
    assert f.footer is not None
    return f.footer.data_bytes
