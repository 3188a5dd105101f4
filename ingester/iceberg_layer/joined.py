"""Several parquet files as one: their data bytes end to end, their row groups under one footer.

A stream of small files costs a reader one footer and one request per file, and the writer
one file create (0.6-1.3 ms on an ext4 disk) or one PUT per file. Files with the same layout
(the same footer but for their row count and row groups: same schema, field ids, key-value
metadata, writer, column orders) are joined instead: the output is ``PAR1``, then each file's
bytes between its magic and its footer, copied as they are (pages, dictionaries, page
indexes, bloom filters), then one footer holding every file's row groups. Those locate their
bytes by absolute offsets, so each file's offsets move by where its bytes now start.

The footer is walked in the Thrift compact protocol without decoding it: every byte is
carried through but the offsets' varints (and each row group's ordinal), so statistics,
sizes, encodings and fields we do not know stay exactly as written. A footer with anything
that cannot move (a column chunk in another file, encryption, a field this module does not
know, which could hold an offset) raises ``Unjoinable``: that file keeps a copy of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ingester.iceberg_layer.footers import MAGIC
from ingester.iceberg_layer.thrift_compact import varint as _varint

# parquet.thrift field ids
_NUM_ROWS, _ROW_GROUPS, _ENCRYPTION, _SIGNING_KEY, _LAST_FILE_FIELD = 3, 4, 8, 9, 9
_RG_COLUMNS, _RG_FILE_OFFSET, _RG_ORDINAL, _LAST_RG_FIELD = 1, 5, 7, 7
_CC_FILE_PATH, _CC_FILE_OFFSET, _CC_META, _CC_OFFSET_INDEX, _CC_COLUMN_INDEX = 1, 2, 3, 4, 6
_CC_CRYPTO, _CC_ENCRYPTED_META, _LAST_CC_FIELD = 8, 9, 9
_CC_REFUSED = frozenset({_CC_FILE_PATH, _CC_CRYPTO, _CC_ENCRYPTED_META})
_MD_OFFSETS = frozenset({9, 10, 11, 14})  # data, index, dictionary page; bloom filter
_LAST_MD_FIELD = 17  # geospatial_statistics
_STRUCT, _BOOL_TRUE, _BOOL_FALSE = 12, 1, 2
_ANY_FIELD = 0x7FFF
_SHIFT, _ORDINAL = 0, 1


class Unjoinable(ValueError):
    """A footer whose row groups cannot move to another file (or are not a footer at all)."""


@dataclass(frozen=True, slots=True)
class RowGroups:
    """One footer, walked once: its top-level ``fields``, its rows, and its row groups as byte
    pieces around the values that move (``render`` puts them back at any offset)."""

    fields: tuple[tuple[int, bytes], ...]
    """(field id, header and value bytes) of each top-level field, in order; the row count's and
    the row groups' bytes are their headers only."""
    rows: int
    count: int
    pieces: tuple[bytes, ...]
    slots: tuple[tuple[int, int], ...]
    """(kind, value) between consecutive ``pieces``: an offset to shift, or an ordinal."""

    @property
    def layout(self) -> bytes:
        """Every top-level field but the row count and the row groups, with their headers:
        files with equal layouts join."""
        return b"".join(value for fid, value in self.fields if fid not in (_NUM_ROWS, _ROW_GROUPS))

    def render(self, delta: int, first_ordinal: int) -> bytes:
        """The row groups' bytes (no list header) with offsets + ``delta``, ordinals from ``first_ordinal``."""
        out = [self.pieces[0]]
        for (kind, value), piece in zip(self.slots, self.pieces[1:], strict=True):
            out.append(_varint(_zigzag(value + delta if kind == _SHIFT else value + first_ordinal)))
            out.append(piece)
        return b"".join(out)


def row_groups(thrift: bytes) -> RowGroups:
    """``thrift`` (a footer's ``FileMetaData``) walked; raises ``Unjoinable``."""
    try:
        return _Walk(thrift).file()
    except Unjoinable:
        raise
    except (IndexError, ValueError, RecursionError) as exc:
        raise Unjoinable(f"not a footer: {exc}") from None


def joined_footer(parts: Sequence[RowGroups], data_bytes: Sequence[int]) -> bytes:
    """The footer of ``parts`` joined in order (all of one ``layout``), file ``i`` having had
    ``data_bytes[i]`` bytes before its footer (its magic included)."""
    first = parts[0]
    assert all(p.layout == first.layout for p in parts[1:]), "only footers of one layout join"
    count = sum(p.count for p in parts)
    if count > 0x7FFF:
        raise Unjoinable(f"{count} row groups: more than an ordinal holds")
    groups, delta, ordinal = [], 0, 0
    for part, size in zip(parts, data_bytes, strict=True):
        groups.append(part.render(delta, ordinal))
        delta += size - len(MAGIC)
        ordinal += part.count
    out = []
    for fid, head in first.fields:
        out.append(head)
        if fid == _NUM_ROWS:
            out.append(_varint(_zigzag(sum(p.rows for p in parts))))
        elif fid == _ROW_GROUPS:
            out.append(_list_header(count))
            out.extend(groups)
    out.append(b"\x00")
    return b"".join(out)


def joined_size(data_bytes: Sequence[int], footer: bytes) -> int:
    """The size of the joined file: one magic, every file's data, the footer, its length, the magic."""
    return len(MAGIC) + sum(size - len(MAGIC) for size in data_bytes) + len(footer) + 8


def _zigzag(value: int) -> int:
    return (value << 1) ^ (value >> 63)


def _list_header(size: int) -> bytes:
    return bytes([size << 4 | _STRUCT]) if size < 15 else bytes([0xF0 | _STRUCT]) + _varint(size)


class _Walk:
    """One pass over a footer's bytes (positions only; the byte pieces cut where values move)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pieces: list[bytes] = []
        self.slots: list[tuple[int, int]] = []
        self.cut = 0  # where the current piece starts
        self.ordinal = 0
        shift = self._shift
        self._row_group_actions = {_RG_COLUMNS: self._columns, _RG_FILE_OFFSET: shift, _RG_ORDINAL: self._ordinal}
        self._column_chunk_actions = {_CC_META: self._column_metadata, _CC_FILE_OFFSET: shift,
                                      _CC_OFFSET_INDEX: shift, _CC_COLUMN_INDEX: shift}
        self._metadata_actions = dict.fromkeys(_MD_OFFSETS, shift)

    def file(self) -> RowGroups:
        data, p, fid = self.data, 0, 0
        fields: list[tuple[int, bytes]] = []
        rows, count = -1, -1
        while True:
            start = p
            header = data[p]
            p += 1
            if header == 0:
                break
            fid, kind, p = _field_at(data, header, fid, p)
            if fid > _LAST_FILE_FIELD or fid in (_ENCRYPTION, _SIGNING_KEY):
                raise Unjoinable(f"footer field {fid} (encryption, or unknown)")
            if fid == _NUM_ROWS:
                fields.append((fid, data[start:p]))
                value, p = _read_varint(data, p)
                rows = _unzigzag(value)
            elif fid == _ROW_GROUPS:
                count, after = _read_list_header(data, p)
                fields.append((fid, data[start:p]))
                self.cut = after
                p = after
                for _ in range(count):
                    p = self._row_group(p)
                self.pieces.append(data[self.cut:p])
            else:
                p = _skip(data, p, kind)
                fields.append((fid, data[start:p]))
        if p != len(data):
            raise Unjoinable("bytes after the footer's end")
        if rows < 0 or count < 0:
            raise Unjoinable("a footer without its row count or row groups")
        return RowGroups(tuple(fields), rows, count, tuple(self.pieces), tuple(self.slots))

    def _move(self, p: int, kind: int) -> int:
        """Cut at the i64 varint at ``p`` (an offset to shift, or the ordinal) and skip it."""
        data = self.data
        value, end = _read_varint(data, p)
        value = self.ordinal if kind == _ORDINAL else _unzigzag(value)
        if value <= 0 and kind == _SHIFT:  # unset (0): stays so
            return end
        self.pieces.append(data[self.cut:p])
        self.slots.append((kind, value))
        self.cut = end
        return end

    def _row_group(self, p: int) -> int:
        p = _walk_struct(self.data, p, _LAST_RG_FIELD, frozenset(), self._row_group_actions)
        self.ordinal += 1
        return p

    def _columns(self, p: int) -> int:
        size, p = _read_list_header(self.data, p)
        for _ in range(size):
            p = _walk_struct(self.data, p, _LAST_CC_FIELD, _CC_REFUSED, self._column_chunk_actions)
        return p

    def _column_metadata(self, p: int) -> int:
        return _walk_struct(self.data, p, _LAST_MD_FIELD, frozenset(), self._metadata_actions)

    def _shift(self, p: int) -> int:
        return self._move(p, _SHIFT)

    def _ordinal(self, p: int) -> int:
        return self._move(p, _ORDINAL)


def _walk_struct(data: bytes, p: int, last_known: int, refused: frozenset[int],
                 actions: Mapping[int, Callable[[int], int]]) -> int:
    """Past the struct at ``p``: each field in ``actions`` handled by it, the others skipped;
    ``Unjoinable`` for a field above ``last_known`` or ``refused``."""
    fid = 0
    while True:
        header = data[p]
        p += 1
        if header == 0:
            return p
        fid, kind, p = _field_at(data, header, fid, p)
        if fid > last_known or fid in refused:
            raise Unjoinable(f"field {fid} in a row group (another file, encryption, or unknown)")
        action = actions.get(fid)
        p = _skip(data, p, kind) if action is None else action(p)


def _field_at(data: bytes, header: int, last: int, p: int) -> tuple[int, int, int]:
    """(field id, compact type, position of its value) of the field whose header byte was ``header``."""
    delta, kind = header >> 4, header & 0x0F
    if delta:
        return last + delta, kind, p
    raw, p = _read_varint(data, p)
    return _unzigzag(raw), kind, p


def _read_varint(data: bytes, p: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = data[p]
        p += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, p
        shift += 7


def _unzigzag(value: int) -> int:
    return (value >> 1) ^ -(value & 1)


def _read_list_header(data: bytes, p: int) -> tuple[int, int]:
    header = data[p]
    size, kind = header >> 4, header & 0x0F
    p += 1
    if size == 15:
        size, p = _read_varint(data, p)
    if kind != _STRUCT:
        raise Unjoinable(f"a list of type {kind} where structs belong")
    return size, p


def _skip(data: bytes, p: int, kind: int) -> int:
    """The position after the value of compact type ``kind`` at ``p``."""
    if kind in (_BOOL_TRUE, _BOOL_FALSE):  # a bool field's value is in its header
        return p
    if kind == 3:  # byte
        return p + 1
    if kind in (4, 5, 6):  # i16, i32, i64
        while data[p] & 0x80:
            p += 1
        return p + 1
    if kind == 7:  # double
        return p + 8
    if kind == 8:  # binary
        size, p = _read_varint(data, p)
        return p + size
    if kind in (9, 10):  # list, set
        header = data[p]
        size, element = header >> 4, header & 0x0F
        p += 1
        if size == 15:
            size, p = _read_varint(data, p)
        if element in (_BOOL_TRUE, _BOOL_FALSE):
            return p + size
        for _ in range(size):
            p = _skip(data, p, element)
        return p
    if kind == 11:  # map
        size, p = _read_varint(data, p)
        if not size:
            return p
        types = data[p]
        p += 1
        for _ in range(size):
            p = _skip(data, _skip(data, p, types >> 4), types & 0x0F)
        return p
    if kind == _STRUCT:
        return _walk_struct(data, p, _ANY_FIELD, frozenset(), {})
    raise Unjoinable(f"unknown compact type {kind}")
