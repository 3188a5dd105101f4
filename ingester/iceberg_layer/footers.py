"""Parquet files registered as-is get Iceberg field ids: the same data pages, a new footer.

Readers find a data file's columns by the parquet field ids in its footer. A producer's file
(dlt, Spark, any writer) has none, and a table's name mapping is what the spec offers instead,
but some engines mishandle it (daft refuses such files; iceberg-rust reads their nested
columns as NULL). So the table's own copy of a file gets a footer whose schema elements carry
the table's field ids, matched by name; everything before the footer (pages, indexes, bloom
filters: all located by absolute offsets) is copied byte for byte, and the footer's row
groups are carried through undecoded.
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq
from pyiceberg.schema import Schema
from pyiceberg.types import ListType, MapType, NestedField, StructType
from thrift.Thrift import TType

from ingester.iceberg_layer.thrift_compact import Struct, ThriftList, edit_struct

try:  # how pyarrow unpickles a FileMetaData: its thrift bytes parsed, without a file reader
    from pyarrow._parquet import _reconstruct_filemetadata as _from_thrift
except ImportError:  # pragma: no cover - a pyarrow without it: read_metadata of the framed bytes
    _from_thrift = None

MAGIC = b"PAR1"
TAIL_BYTES = 64 * 1024
"""Read at the end of a file at once: the footer of a small or medium file fits."""
COPY_BLOCK_BYTES = 8 * 1024 * 1024

ARROW_SCHEMA_KEY = b"ARROW:schema"
# parquet.thrift: FileMetaData's schema and key_value_metadata, and the SchemaElement fields used here
_SCHEMA, _KEY_VALUES = 2, 5
_REPETITION, _NAME, _CHILDREN, _CONVERTED, _FIELD_ID, _LOGICAL = 3, 4, 5, 6, 9, 10
_REPEATED = 2
_CONVERTED_MAP, _CONVERTED_MAP_KEY_VALUE, _CONVERTED_LIST = 1, 2, 3
_LOGICAL_MAP, _LOGICAL_LIST = 2, 3


class Unmapped(Exception):
    """A column of the file has no counterpart in the table schema, or a layout we do not map."""


@dataclass(frozen=True, slots=True)
class Footer:
    """A file's footer as found at its end: where the data ends, the thrift bytes."""

    data_bytes: int
    thrift: bytes
    whole: bytes | None = field(default=None, repr=False, compare=False)
    """The complete file, when the read of its end covered all of it (``read_footer(keep_whole=)``)."""

    def metadata(self) -> pq.FileMetaData:
        """The footer parsed by pyarrow (schema, row groups, statistics), from these bytes alone;
        ``OSError`` / ``ArrowInvalid`` when they are not a footer."""
        framed = MAGIC + self.thrift + struct.pack("<I", len(self.thrift)) + MAGIC
        return pq.read_metadata(pa.BufferReader(framed))

    def metadata_again(self) -> pq.FileMetaData:
        """``metadata``, for a footer whose ``metadata`` already succeeded, twice as fast (51
        against 102 us for 10 columns): pyarrow's unpickling parse, which has no error path (on
        bytes that are not a footer it aborts the process), so never the first parse."""
        if _from_thrift is None:
            return self.metadata()
        return _from_thrift(pa.py_buffer(self.thrift))


@dataclass(frozen=True, slots=True)
class IdFooter:
    """A footer with field ids, and the field id of each leaf column (``path_in_schema``)."""

    thrift: bytes
    leaf_ids: dict[str, int]


def footer_span(end: bytes) -> int:
    """How many bytes at a file's end its footer takes (thrift, length, magic), read from its
    last bytes ``end``; 0 when they are not a parquet file's end."""
    if len(end) < 8 or end[-4:] != MAGIC:
        return 0
    return int(struct.unpack("<I", end[-8:-4])[0]) + 8


def read_footer(source: pa.NativeFile, size: int, keep_whole: bool = False, offset: int = 0) -> Footer:
    """The footer of the parquet file ``source`` (``size`` bytes); ``ValueError`` if it has none
    (or an encrypted one). ``keep_whole``: a file no longer than ``TAIL_BYTES`` is read whole
    anyway; keep its bytes (``Footer.whole``) so that it is never fetched again (a remote file).
    ``offset``: where in the file ``source`` starts (``source`` holds only the file's end: at
    least ``TAIL_BYTES`` of it, or all of it, and the whole footer)."""
    tail_len = min(size, TAIL_BYTES)
    source.seek(size - tail_len - offset)
    tail = source.read(tail_len)
    if len(tail) != tail_len:
        raise ValueError(f"the file ends before byte {size}")
    span = footer_span(tail)
    if size < 12 or not span:
        raise ValueError("not a parquet file (no PAR1 at its end)")
    length = span - 8
    if length + 12 > size:
        raise ValueError("parquet footer longer than the file")
    if length + 8 <= tail_len:
        thrift = tail[-8 - length:-8]
    else:
        source.seek(size - 8 - length - offset)
        thrift = source.read(length)
    return Footer(size - 8 - length, bytes(thrift), bytes(tail) if keep_whole and tail_len == size else None)


@dataclass(frozen=True, slots=True)
class _Edited:
    """A footer's schema elements as found (``raw``), with the table's ids (``encoded``)."""

    raw: bytes
    encoded: bytes
    leaf_ids: dict[str, int]
    nested: bool


class _Lookup:
    """``FieldMemo`` for one footer over the schemas already edited for its table schema."""

    def __init__(self, known: list[_Edited]) -> None:
        self.known = known
        self.hit: _Edited | None = None
        self.raw = self.encoded = b""

    def lookup(self, fid: int, data: bytes, start: int) -> tuple[int, bytes] | None:
        for edited in self.known:
            if data.startswith(edited.raw, start):
                self.hit = edited
                return len(edited.raw), edited.encoded
        return None

    def store(self, fid: int, raw: bytes, encoded: bytes) -> None:
        self.raw, self.encoded = raw, encoded


_edited: dict[int, tuple[Schema, list[_Edited]]] = {}
"""Per table schema (by identity: a batch's files share its object), the footer schemas it
already gave ids: a stream's files mostly share one, edited once. Bounded; lists replaced
whole, so threads of other batches read a consistent one."""
_EDITED_SCHEMAS, _EDITED_PER_SCHEMA = 16, 8


def _known(schema: Schema) -> list[_Edited]:
    held = _edited.get(id(schema))
    return held[1] if held is not None and held[0] is schema else []


def _remember(schema: Schema, edited: _Edited) -> None:
    if len(_edited) >= _EDITED_SCHEMAS and id(schema) not in _edited:
        _edited.clear()
    _edited[id(schema)] = (schema, [edited, *_known(schema)][:_EDITED_PER_SCHEMA])


def with_field_ids(footer: Footer, schema: Schema) -> IdFooter:
    """``footer`` with the field ids of ``schema`` on every schema element, matched by name
    (struct fields by name, list elements, map keys and values by position). For a file with
    nested columns the stored arrow schema (``ARROW:schema``) goes too: arrow-rs takes its
    fields, without ids, over the parquet schema's (iceberg-rust then reads them as NULL).
    Raises ``Unmapped`` for a column the table does not have, a non-standard list or map
    layout, or a file that already carries field ids (they might disagree with the table's)."""
    leaf_ids: dict[str, int] = {}
    nested: list[bool] = []

    def assign(elements: ThriftList) -> ThriftList:
        end = _assign_struct(elements.values, 0, schema.as_struct(), [], leaf_ids)
        if end != len(elements.values):
            raise Unmapped("schema elements after the root's children")
        nested.append(any(_get(e, _CHILDREN, 0) for e in elements.values[1:]))
        return elements

    def without_arrow_schema(pairs: ThriftList) -> ThriftList:
        if nested[0]:
            pairs.values = [kv for kv in pairs.values if _get(kv, 1) != ARROW_SCHEMA_KEY]
        return pairs

    lookup = _Lookup(_known(schema))
    try:  # the key-value pairs come after the row groups: read that far only for nested files
        thrift = edit_struct(footer.thrift, {_SCHEMA: assign}, lookup)
        if lookup.hit is not None:  # its ids shared, not copied: a batch holds a thousand footers
            leaf_ids = lookup.hit.leaf_ids
            nested.append(lookup.hit.nested)
        else:
            _remember(schema, _Edited(lookup.raw, lookup.encoded, dict(leaf_ids), nested[0]))
        if nested[0]:
            thrift = edit_struct(thrift, {_KEY_VALUES: without_arrow_schema})
    except Unmapped:
        raise
    except Exception as exc:  # noqa: BLE001 - any decoding failure: not a footer we can map
        raise Unmapped(f"unreadable footer: {exc}") from None
    return IdFooter(thrift, leaf_ids)


def copy_size(footer: Footer, new: IdFooter) -> int:
    """The size of the file ``write_with_footer`` makes from a file with ``footer``."""
    return footer.data_bytes + len(new.thrift) + 8


def write_with_footer(source: pa.NativeFile, footer: Footer, new: IdFooter, out: BinaryIO) -> int:
    """The data bytes of ``source`` then ``new``'s footer, into ``out``; returns the bytes written."""
    copy_bytes(source, out, 0, footer.data_bytes)
    write_footer(out, new.thrift)
    return copy_size(footer, new)


def write_footer(out: BinaryIO, thrift: bytes) -> None:
    """A footer's thrift bytes, their length and the closing magic."""
    out.write(thrift + struct.pack("<I", len(thrift)) + MAGIC)


def copy_bytes(source: pa.NativeFile, out: BinaryIO, start: int, end: int) -> None:
    """Bytes ``start`` to ``end`` of ``source``, appended to ``out`` (in the kernel between
    local files); ``ValueError`` if ``source`` ends before ``end``."""
    if _copy_range(source, out, start, end):
        return
    source.seek(start)
    left = end - start
    while left:
        block = source.read(min(COPY_BLOCK_BYTES, left))
        if not block:
            raise ValueError("parquet file shorter than its footer says")
        out.write(block)
        left -= len(block)


def copy_pages(source: pa.NativeFile, out: BinaryIO, data_bytes: int) -> None:
    """Bytes 4 to ``data_bytes`` of ``source`` (everything between its magic and its footer),
    appended to ``out``; ``ValueError`` if ``source`` does not start with the magic or ends
    early. The magic comes with the first block read (one request to an object store)."""
    source.seek(0)
    if _fileno(source) is not None and _fileno(out) is not None:  # local: the rest stays in the kernel
        first = source.read(len(MAGIC))
    else:
        first = source.read(min(COPY_BLOCK_BYTES, data_bytes))
    if first[:len(MAGIC)] != MAGIC:
        raise ValueError("it does not start with PAR1")
    out.write(first[len(MAGIC):])
    copy_bytes(source, out, len(first), data_bytes)


def _copy_range(source: pa.NativeFile, out: BinaryIO, start: int, end: int) -> bool:
    """Kernel-side copy between two local files (``os.copy_file_range``); False if not possible."""
    src_fd, dst_fd = _fileno(source), _fileno(out)
    if src_fd is None or dst_fd is None or not hasattr(os, "copy_file_range"):
        return False
    out.flush()
    offset = start
    try:
        while offset < end:
            copied = os.copy_file_range(src_fd, dst_fd, end - offset, offset)
            if copied == 0:
                raise ValueError("parquet file shorter than its footer says")
            offset += copied
    except OSError:
        if offset > start:
            raise
        return False
    return True


def _fileno(f: Any) -> int | None:
    try:
        return int(f.fileno())
    except (AttributeError, OSError, ValueError, pa.ArrowException):
        return None


def _get(element: Struct, fid: int, default: Any = None) -> Any:
    return element[fid][1] if fid in element else default


def _subtree_end(elements: list[Struct], index: int) -> int:
    end = index + 1
    for _ in range(_get(elements[index], _CHILDREN, 0)):
        end = _subtree_end(elements, end)
    return end


def _children(elements: list[Struct], index: int) -> tuple[list[int], int]:
    """Indexes of the element's children, and the index after its subtree."""
    kids, position = [], index + 1
    for _ in range(_get(elements[index], _CHILDREN, 0)):
        if position >= len(elements):
            raise Unmapped("schema element with missing children")
        kids.append(position)
        position = _subtree_end(elements, position)
    return kids, position


def _is(element: Struct, converted: tuple[int, ...], logical: int) -> bool:
    return _get(element, _CONVERTED) in converted or logical in _get(element, _LOGICAL, {})


def _name(element: Struct) -> str:
    return bytes(_get(element, _NAME, b"")).decode()


def _assign_struct(elements: list[Struct], index: int, struct_type: StructType, path: list[str], ids: dict[str, int]) -> int:
    kids, end = _children(elements, index)
    for kid in kids:
        name = _name(elements[kid])
        try:
            field = struct_type.field_by_name(name)
        except ValueError:
            field = None
        if field is None:
            raise Unmapped(f"column {'.'.join([*path, name])!r} is not in the table")
        _assign_field(elements, kid, field, [*path, name], ids)
    return end


def _only_child(elements: list[Struct], index: int, what: str) -> int:
    kids, _ = _children(elements, index)
    if len(kids) != 1 or _get(elements[kids[0]], _REPETITION) != _REPEATED:
        raise Unmapped(f"{what} without one repeated child")
    return kids[0]


def _assign_field(elements: list[Struct], index: int, field: NestedField, path: list[str], ids: dict[str, int]) -> None:
    element = elements[index]
    if _FIELD_ID in element:
        raise Unmapped(f"column {'.'.join(path)!r} has a field id already")
    element[_FIELD_ID] = (TType.I32, field.field_id)
    kind, where = field.field_type, ".".join(path)
    has_children = _get(element, _CHILDREN, 0) > 0
    if isinstance(kind, ListType):
        if not _is(element, (_CONVERTED_LIST,), _LOGICAL_LIST):
            raise Unmapped(f"list column {where!r} is not annotated as a list")
        repeated = _only_child(elements, index, f"list {where!r}")
        items, name = _children(elements, repeated)[0], _name(elements[repeated])
        if len(items) != 1 or name == "array" or name.endswith("_tuple"):  # the spec's legacy two-level lists
            raise Unmapped(f"list {where!r} in a legacy layout")
        _assign_field(elements, items[0], kind.element_field, [*path, name, _name(elements[items[0]])], ids)
    elif isinstance(kind, MapType):
        if not _is(element, (_CONVERTED_MAP, _CONVERTED_MAP_KEY_VALUE), _LOGICAL_MAP):
            raise Unmapped(f"map column {where!r} is not annotated as a map")
        repeated = _only_child(elements, index, f"map {where!r}")
        entries = _children(elements, repeated)[0]
        if len(entries) != 2:
            raise Unmapped(f"map {where!r} without a key and a value")
        prefix = [*path, _name(elements[repeated])]
        _assign_field(elements, entries[0], kind.key_field, [*prefix, _name(elements[entries[0]])], ids)
        _assign_field(elements, entries[1], kind.value_field, [*prefix, _name(elements[entries[1]])], ids)
    elif isinstance(kind, StructType):
        if not has_children or _is(element, (_CONVERTED_LIST, _CONVERTED_MAP, _CONVERTED_MAP_KEY_VALUE), _LOGICAL_LIST):
            raise Unmapped(f"struct column {where!r} is not a plain group")
        _assign_struct(elements, index, kind, path, ids)
    else:
        if has_children or _get(element, _REPETITION) == _REPEATED:
            raise Unmapped(f"column {where!r} is not a plain value column")
        ids[where] = field.field_id
