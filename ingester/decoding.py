"""Message -> file events, by ``source.format``.

``ingester`` (default): our JSON envelope, one event per message. ``s3-events`` and
``seaweedfs-filer``: an object-store notification announcing 0..n objects (``object_events``),
each routed by its key (``object_keys.KeyRouter``). A message announcing nothing to load is
skipped (counted, its position done); an object no route matches is dead-lettered with the
reason naming its key while the other objects of the message go on.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

from ingester.events import FileEvent, InvalidEvent, decode_event
from ingester.object_events import decode_filer_event, decode_s3_notification
from ingester.object_keys import KeyRouter, ObjectRef, Unroutable
from ingester.settings import Settings
from ingester.sources.base import Message
from ingester.sources.listing import PARTITION_PREFIX as LISTING_PARTITIONS

NOT_FINISHED = "not_finished"
"""A message announcing no finished object: a removal, a test event, a folder, a multipart part."""
OTHER_BUCKET = "other_bucket"
NOT_DATA = "not_a_data_file"
"""The route skips the key: another suffix (``_SUCCESS``), or an empty object."""
ALREADY_LOADED = "already_loaded"
"""Counted by the engine: the ledger or the batch already holds the object's event id."""
SKIP_REASONS = (NOT_FINISHED, OTHER_BUCKET, NOT_DATA, ALREADY_LOADED)


@dataclass(frozen=True, slots=True)
class Decoded:
    """What one message holds: events to load, objects no route takes, what was skipped."""

    events: tuple[FileEvent, ...] = ()
    unroutable: tuple[InvalidEvent, ...] = ()
    discovered: int = 0
    skipped: Mapping[str, int] = field(default_factory=dict)


class MessageDecoder(Protocol):
    source: str | None
    """The ``source`` label of the object metrics (None: not an object source)."""

    def decode(self, message: Message) -> Decoded:
        """Raises ``InvalidEvent`` when the message as a whole is not valid."""


class EnvelopeDecoder:
    """Our JSON envelope: exactly one event per message."""

    source: str | None = None

    def decode(self, message: Message) -> Decoded:
        return Decoded((decode_event(message.payload),))


ObjectCodec = Callable[[Message], list[ObjectRef]]


class ObjectEventDecoder:
    """Notifications of an object store -> the events of the objects its routes take."""

    def __init__(self, codec: ObjectCodec, router: KeyRouter, source: str) -> None:
        self.source: str | None = source
        self._codec = codec
        self._router = router

    def decode(self, message: Message) -> Decoded:
        refs = self._codec(message)
        if not refs:
            return Decoded(skipped={NOT_FINISHED: 1})
        events: list[FileEvent] = []
        unroutable: list[InvalidEvent] = []
        skipped: Counter[str] = Counter()
        for ref in refs:
            if not self._router.watches(ref):
                skipped[OTHER_BUCKET] += 1
                continue
            try:
                event = self._router.route(ref)
            except Unroutable as exc:
                unroutable.append(exc)
                continue
            if event is None:
                skipped[NOT_DATA] += 1
            else:
                events.append(event)
        return Decoded(tuple(events), tuple(unroutable), len(refs), dict(skipped))


FORMATS: dict[str, ObjectCodec] = {
    "s3-events": lambda m: decode_s3_notification(m.payload),
    "seaweedfs-filer": lambda m: decode_filer_event(m.key, m.payload),
}


class WithListing:
    """A notification source merged with a listing (``objects.relist_interval_s``): the
    listing's messages (its partitions ``listing/<prefix>``) are envelopes, the others notifications."""

    def __init__(self, notifications: ObjectEventDecoder) -> None:
        self.source = notifications.source
        self._notifications = notifications
        self._envelopes = EnvelopeDecoder()

    def decode(self, message: Message) -> Decoded:
        if message.position.partition.startswith(LISTING_PARTITIONS):
            return self._envelopes.decode(message)
        return self._notifications.decode(message)


def build_decoder(settings: Settings) -> MessageDecoder:
    """The decoder of ``source.format``, routing objects by ``objects.routes``."""
    fmt = settings.source.format
    if fmt == "ingester" or settings.source.kind == "listing":
        return EnvelopeDecoder()
    notifications = ObjectEventDecoder(FORMATS[fmt], KeyRouter(settings.objects.routes, settings.objects.buckets), fmt)
    return WithListing(notifications) if settings.objects.relist_interval_s else notifications
