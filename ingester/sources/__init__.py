"""Event sources behind one protocol (``base.Source``)."""

from __future__ import annotations

from ingester.sources.base import Message, OffsetTracker, Position, Source

__all__ = ["Message", "OffsetTracker", "Position", "Source"]
