"""Dead letters: what could not be ingested, with the reason, position and original payload."""

from __future__ import annotations

import base64
import binascii
import json
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from ingester.sources.base import EventQueue, Position

if TYPE_CHECKING:
    from ingester.settings import SourceSettings


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The reason, the original message (``payload``, replayable as it is), where it came from."""

    reason: str
    payload: bytes
    position: Position | None = None
    table: str | None = None

    @classmethod
    def from_json(cls, record: Mapping[str, Any]) -> DeadLetter:
        """Inverse of ``to_json``; raises ``ValueError`` naming what is wrong."""
        try:
            payload = base64.b64decode(record["payload_b64"], validate=True)
        except KeyError:
            raise ValueError("a dead letter without 'payload_b64'") from None
        except (binascii.Error, TypeError) as exc:
            raise ValueError(f"'payload_b64' is not base64: {exc}") from None
        partition, offset = record.get("partition"), record.get("offset")
        position = Position(str(partition), int(offset)) if partition is not None and offset is not None else None
        table = record.get("table")
        return cls(str(record.get("reason", "")), payload, position, str(table) if table is not None else None)

    def to_json(self) -> dict[str, object]:
        return {
            "at": time.time(),
            "reason": self.reason,
            "table": self.table,
            "partition": self.position.partition if self.position else None,
            "offset": self.position.offset if self.position else None,
            "payload_b64": base64.b64encode(self.payload).decode(),
        }


class DeadLetterSink(Protocol):
    async def put(self, letter: DeadLetter) -> None:
        """Store durably before returning (the source is acked past it afterwards)."""

    def close(self) -> None:
        """Release connections (blocking; every ``put`` has returned). Idempotent."""


class FolderDeadLetters:
    """JSON lines in ``<folder>/deadletters.jsonl``, fsynced per record (``put`` writes in a
    worker thread: the event loop never waits on the disk)."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "deadletters.jsonl"
        self._lock = threading.Lock()

    async def put(self, letter: DeadLetter) -> None:
        await anyio.to_thread.run_sync(self.write, letter)

    def close(self) -> None:
        """Nothing to release: each record is written and closed by ``write``."""

    def write(self, letter: DeadLetter) -> None:
        """Append one record and fsync it (blocking)."""
        line = json.dumps(letter.to_json()) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()
            os.fsync(fh.fileno())

    def read(self) -> list[DeadLetter]:
        return read_letters(self.path.read_text(encoding="utf-8")) if self.path.exists() else []


def read_letters(text: str) -> list[DeadLetter]:
    """Dead letters of JSON lines (``FolderDeadLetters``'s file, or a topic's messages one per
    line); raises ``ValueError`` naming the line that is not one."""
    letters = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            letters.append(DeadLetter.from_json(json.loads(line)))
        except (ValueError, TypeError, AttributeError) as exc:
            raise ValueError(f"line {number}: not a dead letter: {exc}") from None
    return letters


class MemoryDeadLetters:
    """For tests."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def put(self, letter: DeadLetter) -> None:
        self.letters.append(letter)

    def close(self) -> None:
        pass


class KafkaDeadLetters:
    """``DeadLetterSink`` on a topic: value = the dead letter JSON (reason, partition, offset,
    original payload), key = the source partition. Connects on the first letter."""

    def __init__(self, options: Mapping[str, Any], topic: str) -> None:
        self.topic = topic
        self._options = dict(options)
        self._queue: EventQueue | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: SourceSettings, topic: str) -> KafkaDeadLetters:
        from ingester.sources.kafka import producer_options

        return cls(producer_options(settings), topic)

    async def put(self, letter: DeadLetter) -> None:
        """Returns once the letter is acked by the broker."""
        value = json.dumps(letter.to_json()).encode()
        key = letter.position.partition.encode() if letter.position else None
        await anyio.to_thread.run_sync(self._send, value, key)

    def _send(self, value: bytes, key: bytes | None) -> None:
        from ingester.sources.kafka import KafkaEventQueue  # Kafka only where a topic is configured

        with self._lock:
            if self._queue is None:
                self._queue = KafkaEventQueue(self._options, self.topic)
        self._queue.put_many([value], [key] if key is not None else None)

    def close(self) -> None:
        with self._lock:
            if self._queue is not None:
                self._queue.close()
                self._queue = None
