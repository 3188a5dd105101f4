"""The ``ingester`` command line: commands, the tables view, the demo, the settings reference."""

from __future__ import annotations

from ingester.cli.commands import app

__all__ = ["app"]
