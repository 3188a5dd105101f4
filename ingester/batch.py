"""The values every stage hands on: a table's name, an admitted event, a closed batch."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field

from pyiceberg.table.refs import MAIN_BRANCH

from ingester.events import FileEvent, WriteDisposition
from ingester.sources.base import Position


@dataclass(frozen=True, slots=True)
class TableRef:
    namespace: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}.{self.name}"


@dataclass(frozen=True, slots=True)
class Pending:
    """An admitted event and the source position it came from (None for direct loads)."""

    event: FileEvent
    position: Position | None = None
    shares_position: bool = False
    """One of several events of one message: the offset markers cannot tell whether it was
    committed (its event id does)."""
    queued_at: float | None = None
    """The message's ``timestamp`` (Unix seconds)."""

    @property
    def time_ms(self) -> int:
        """The event's time in Unix milliseconds: its ``event_time``, else ``queued_at`` (-1: not known)."""
        when = self.event.event_time if self.event.event_time is not None else self.queued_at
        return int(when * 1000) if when is not None else -1


@dataclass(frozen=True, slots=True)
class Batch:
    """A closed window: the unit of one Iceberg snapshot."""

    table: TableRef
    items: tuple[Pending, ...]
    batch_id: str = field(default_factory=lambda: uuid.uuid4().hex)

    @property
    def positions(self) -> list[Position]:
        return [p.position for p in self.items if p.position is not None]

    @property
    def byte_size(self) -> int:
        return sum(p.event.byte_size for p in self.items)

    @property
    def disposition(self) -> WriteDisposition:
        return self.items[0].event.write_disposition

    @property
    def branch(self) -> str:
        """The table branch the batch commits to (its events share one; ``main`` by default)."""
        return self.items[0].event.branch or MAIN_BRANCH
