"""The part of SeaweedFS's ``filer.proto`` (package ``filer_pb``) that filer events need.

``EventNotification`` with its ``Entry``, ``FileChunk`` and ``FuseAttributes``, built as a
descriptor at import (no generated module, no protoc). Field numbers and types are those of
``weed/pb/filer.proto``; fields left out here are skipped as unknown fields when parsing.
"""

from __future__ import annotations

from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto
_MESSAGES: dict[str, list[tuple[str, int, int, str | None, bool]]] = {
    # name: [(field, number, type, message type, repeated)]
    "FuseAttributes": [("file_size", 1, _F.TYPE_UINT64, None, False), ("mtime", 2, _F.TYPE_INT64, None, False),
                       ("mime", 7, _F.TYPE_STRING, None, False), ("md5", 14, _F.TYPE_BYTES, None, False)],
    "FileChunk": [("file_id", 1, _F.TYPE_STRING, None, False), ("offset", 2, _F.TYPE_INT64, None, False),
                  ("size", 3, _F.TYPE_UINT64, None, False), ("e_tag", 5, _F.TYPE_STRING, None, False),
                  ("is_chunk_manifest", 11, _F.TYPE_BOOL, None, False)],
    "ExtendedEntry": [("key", 1, _F.TYPE_STRING, None, False), ("value", 2, _F.TYPE_BYTES, None, False)],
    "Entry": [("name", 1, _F.TYPE_STRING, None, False), ("is_directory", 2, _F.TYPE_BOOL, None, False),
              ("chunks", 3, _F.TYPE_MESSAGE, "FileChunk", True),
              ("attributes", 4, _F.TYPE_MESSAGE, "FuseAttributes", False),
              ("extended", 5, _F.TYPE_MESSAGE, "Entry.ExtendedEntry", True), ("content", 9, _F.TYPE_BYTES, None, False)],
    "EventNotification": [("old_entry", 1, _F.TYPE_MESSAGE, "Entry", False),
                          ("new_entry", 2, _F.TYPE_MESSAGE, "Entry", False),
                          ("delete_chunks", 3, _F.TYPE_BOOL, None, False),
                          ("new_parent_path", 4, _F.TYPE_STRING, None, False),
                          ("is_from_other_cluster", 5, _F.TYPE_BOOL, None, False)],
}


def _message(name: str) -> descriptor_pb2.DescriptorProto:
    proto = descriptor_pb2.DescriptorProto(name=name)
    for field, number, kind, type_name, repeated in _MESSAGES[name]:
        label = _F.LABEL_REPEATED if repeated else _F.LABEL_OPTIONAL
        proto.field.add(name=field, number=number, type=kind, label=label,  # type: ignore[arg-type]
                        type_name=f".filer_pb.{type_name}" if type_name else None)
    return proto


def _build() -> descriptor_pool.DescriptorPool:
    file = descriptor_pb2.FileDescriptorProto(name="ingester/filer_pb.proto", package="filer_pb", syntax="proto3")
    entry = _message("Entry")
    extended = _message("ExtendedEntry")
    extended.options.map_entry = True  # map<string, bytes> extended = 5
    entry.nested_type.append(extended)
    file.message_type.extend([_message("FuseAttributes"), _message("FileChunk"), entry, _message("EventNotification")])
    pool = descriptor_pool.DescriptorPool()
    pool.Add(file)
    return pool


_POOL = _build()
EventNotification: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("filer_pb.EventNotification"))
"""``filer_pb.EventNotification``: ``EventNotification.FromString(raw)``."""
Entry: Any = message_factory.GetMessageClass(_POOL.FindMessageTypeByName("filer_pb.Entry"))
