"""Editing some fields of a Thrift struct in the compact protocol (Apache Thrift's codec),
with no schema at hand.

The edited fields are decoded to plain values (a struct is ``{field id: (type, value)}``,
lists and sets ``ThriftList``, maps ``ThriftMap``) and encoded again; all the others are
carried as bytes, untouched (a parquet footer's row groups are most of it, and they never
change here).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from thrift.protocol.TCompactProtocol import VALUE_WRITE, TCompactProtocol
from thrift.Thrift import TType
from thrift.transport.TTransport import TMemoryBuffer

Struct = dict[int, tuple[int, Any]]


@dataclass(slots=True)
class ThriftList:
    element_type: int
    values: list[Any]


@dataclass(slots=True)
class ThriftMap:
    key_type: int
    value_type: int
    items: list[tuple[Any, Any]]


class FieldMemo(Protocol):
    """Edited values seen before: the bytes of a field's value -> its edited encoding."""

    def lookup(self, fid: int, data: bytes, start: int) -> tuple[int, bytes] | None:
        """(length of the known value that starts at ``data[start]``, its edited encoding)."""

    def store(self, fid: int, raw: bytes, encoded: bytes) -> None: ...


def edit_struct(data: bytes, edits: Mapping[int, Callable[[Any], Any]], memo: FieldMemo | None = None) -> bytes:
    """``data`` (a serialized struct) with the value of each field in ``edits`` replaced by
    ``edit(value)``; every other field is kept byte for byte, and nothing after the last edited
    field is even read. With ``memo``, a value whose bytes it knows is neither decoded nor
    edited again (the same bytes always decode to the same value). Raises ``EOFError``,
    ``ValueError`` or a thrift error on bytes that are not such a struct."""
    buffer = TMemoryBuffer(data)
    p = TCompactProtocol(buffer)
    p.readStructBegin()
    out, last, pending = bytearray(), 0, set(edits)
    position = buffer.cstringio_buf.tell()
    while pending:
        _, ttype, fid = p.readFieldBegin()
        if ttype == TType.STOP:
            break
        if fid in edits:
            pending.discard(fid)
            start = buffer.cstringio_buf.tell()
            known = memo.lookup(fid, data, start) if memo is not None else None
            if known is not None:
                buffer.cstringio_buf.seek(start + known[0])
                encoded = known[1]
            else:
                encoded = _encoded(ttype, edits[fid](_read(p, ttype)))
                if memo is not None:
                    memo.store(fid, data[start:buffer.cstringio_buf.tell()], encoded)
            out += _field_header(last, fid, ttype) + encoded
        else:
            _read(p, ttype)  # thrift's own skip decodes binary as UTF-8
            out += data[position:buffer.cstringio_buf.tell()]
        p.readFieldEnd()
        last, position = fid, buffer.cstringio_buf.tell()
    return bytes(out) + data[position:]


_COMPACT_TYPES = {TType.BYTE: 3, TType.I16: 4, TType.I32: 5, TType.I64: 6, TType.DOUBLE: 7, TType.STRING: 8,
                  TType.LIST: 9, TType.SET: 10, TType.MAP: 11, TType.STRUCT: 12}


def _field_header(last: int, fid: int, ttype: int) -> bytes:
    """A compact-protocol field header: the id as a delta from the previous field's when it fits."""
    compact = _COMPACT_TYPES[ttype]  # a bool field keeps its value in the header: never edited
    if 0 < fid - last <= 15:
        return bytes([(fid - last) << 4 | compact])
    return bytes([compact]) + varint((fid << 1) ^ (fid >> 15))


def varint(value: int) -> bytes:
    """An unsigned value as the compact protocol's varint (7 bits a byte, low bits first)."""
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _encoded(ttype: int, value: Any) -> bytes:
    """One field's value, without its header (the writer is put where a field's value goes)."""
    buffer = TMemoryBuffer()
    p = TCompactProtocol(buffer)
    p.state = VALUE_WRITE
    _write(p, ttype, value)
    return bytes(buffer.getvalue())


def _read_struct(p: TCompactProtocol) -> Struct:
    p.readStructBegin()
    fields: Struct = {}
    while True:
        _, ttype, fid = p.readFieldBegin()
        if ttype == TType.STOP:
            break
        fields[fid] = (ttype, _read(p, ttype))
        p.readFieldEnd()
    p.readStructEnd()
    return fields


_READERS = {
    TType.BOOL: "readBool", TType.BYTE: "readByte", TType.I16: "readI16", TType.I32: "readI32",
    TType.I64: "readI64", TType.DOUBLE: "readDouble", TType.STRING: "readBinary",
}
_WRITERS = {
    TType.BOOL: "writeBool", TType.BYTE: "writeByte", TType.I16: "writeI16", TType.I32: "writeI32",
    TType.I64: "writeI64", TType.DOUBLE: "writeDouble", TType.STRING: "writeBinary",
}


def _read(p: TCompactProtocol, ttype: int) -> Any:
    if ttype in _READERS:
        return getattr(p, _READERS[ttype])()
    if ttype == TType.STRUCT:
        return _read_struct(p)
    if ttype in (TType.LIST, TType.SET):
        element_type, size = p.readListBegin()
        values = [_read(p, element_type) for _ in range(size)]
        p.readListEnd()
        return ThriftList(element_type, values)
    if ttype == TType.MAP:
        key_type, value_type, size = p.readMapBegin()
        items = [(_read(p, key_type), _read(p, value_type)) for _ in range(size)]
        p.readMapEnd()
        return ThriftMap(key_type, value_type, items)
    raise ValueError(f"unknown thrift type {ttype}")


def _write_struct(p: TCompactProtocol, struct: Struct) -> None:
    p.writeStructBegin("")
    for fid in sorted(struct):
        ttype, value = struct[fid]
        p.writeFieldBegin("", ttype, fid)
        _write(p, ttype, value)
        p.writeFieldEnd()
    p.writeFieldStop()
    p.writeStructEnd()


def _write(p: TCompactProtocol, ttype: int, value: Any) -> None:
    if ttype in _WRITERS:
        getattr(p, _WRITERS[ttype])(value)
    elif ttype == TType.STRUCT:
        _write_struct(p, value)
    elif ttype in (TType.LIST, TType.SET):
        p.writeListBegin(value.element_type, len(value.values))
        for v in value.values:
            _write(p, value.element_type, v)
        p.writeListEnd()
    elif ttype == TType.MAP:
        p.writeMapBegin(value.key_type, value.value_type, len(value.items))
        for k, v in value.items:
            _write(p, value.key_type, k)
            _write(p, value.value_type, v)
        p.writeMapEnd()
    else:
        raise ValueError(f"unknown thrift type {ttype}")
