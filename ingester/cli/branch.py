"""``ingester branch publish | list | drop``: write-audit-publish on a table's branches
(``ingester.branches``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer
from pyiceberg.table import Table

from ingester.branches import MAIN, BranchError, drop_branch, list_branches, publish
from ingester.cli.commands import EXIT_FAILED, _fails_cleanly, _settings, _setup_logging, _table_refs

branch_app = typer.Typer(no_args_is_help=True, help="A table's branches: publish (fast-forward main), list, drop.")

TableArg = Annotated[str, typer.Argument(help="namespace.table, or a table of the default namespace")]


def _load(table: str) -> Table:
    from ingester.catalog import open_catalog

    settings = _settings()
    _setup_logging(settings)
    catalog = open_catalog(settings.catalog, settings.home_dir)
    ref = _table_refs(settings, catalog, table)[0]
    return catalog.load_table((ref.namespace, ref.name))


def _refused(exc: BranchError) -> typer.Exit:
    typer.echo(f"error: {exc}", err=True)
    return typer.Exit(EXIT_FAILED)


@branch_app.command("publish")
def publish_cmd(
    table: TableArg,
    source: Annotated[str, typer.Option("--from", help="the branch to publish")],
    target: Annotated[str, typer.Option("--to", help="the branch moved to it")] = MAIN,
) -> None:
    """Fast-forward main (or --to) to the head of --from. Refused, changing nothing, when main
    moved on since the branch was made (its head is not an ancestor of the branch's)."""
    with _fails_cleanly():
        iceberg = _load(table)
        try:
            info = publish(iceberg, source, target)
        except BranchError as exc:
            raise _refused(exc) from None
    typer.echo(f"{table}: {target} is at snapshot {info.snapshot_id} (the head of {source})")


@branch_app.command("list")
def list_cmd(
    table: TableArg, as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False,
) -> None:
    """The table's branches: head snapshot and commits ahead of main ('-': main moved on, not publishable)."""
    with _fails_cleanly():
        infos = list_branches(_load(table))
    if as_json:
        typer.echo(json.dumps([b.as_dict() for b in infos], indent=2))
        return
    typer.echo(f"{'branch':<24} {'snapshot':>20} {'ahead':>6}")
    for b in infos:
        typer.echo(f"{b.name:<24} {b.snapshot_id:>20} {'-' if b.ahead_of_main is None else b.ahead_of_main:>6}")


@branch_app.command("drop")
def drop_cmd(table: TableArg, name: Annotated[str, typer.Argument(help="the branch to remove")]) -> None:
    """Remove a branch (not main); its unpublished snapshots go with the next expiry."""
    with _fails_cleanly():
        iceberg = _load(table)
        try:
            drop_branch(iceberg, name)
        except BranchError as exc:
            raise _refused(exc) from None
    typer.echo(f"{table}: branch {name} dropped")
