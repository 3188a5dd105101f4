"""The ``ingester`` command line: commands, branches, the tables view, the demo, the settings reference."""

from __future__ import annotations

from ingester.cli.branch import branch_app
from ingester.cli.commands import app

app.add_typer(branch_app, name="branch")

__all__ = ["app"]
