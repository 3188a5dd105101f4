"""Dead letters: what could not be ingested, with the reason, position and original payload."""

from __future__ import annotations

import base64
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from ingester.sources.base import Position


@dataclass(frozen=True, slots=True)
class DeadLetter:
    reason: str
    payload: bytes
    position: Position | None = None
    table: str | None = None

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
    """JSON lines in ``<folder>/deadletters.jsonl``, fsynced per record."""

    def __init__(self, folder: Path) -> None:
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / "deadletters.jsonl"
        self._lock = threading.Lock()

    async def put(self, letter: DeadLetter) -> None:
        self.write(letter)

    def close(self) -> None:
        """Nothing to release: each record is written and closed by ``write``."""

    def write(self, letter: DeadLetter) -> None:
        line = json.dumps(letter.to_json()) + "\n"
        with self._lock, self.path.open("a", encoding="utf-8") as fh:
            fh.write(line)
            fh.flush()

    def read(self) -> list[dict[str, object]]:
        if not self.path.exists():
            return []
        return [json.loads(line) for line in self.path.read_text(encoding="utf-8").splitlines() if line]


class MemoryDeadLetters:
    """For tests."""

    def __init__(self) -> None:
        self.letters: list[DeadLetter] = []

    async def put(self, letter: DeadLetter) -> None:
        self.letters.append(letter)

    def close(self) -> None:
        pass
