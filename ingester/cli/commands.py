"""``ingester run | backfill | publish | tables | maintain | remove-orphans | demo | settings | replay-deadletters``."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from enum import StrEnum
from importlib.metadata import version
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import anyio
import click
import typer
from pydantic import ValidationError

from ingester.allocator import prefer_jemalloc
from ingester.cli.progress import Display, shown
from ingester.errors import describe_validation_error, is_auth_failure
from ingester.settings import CONFIG_ENV, Settings

if TYPE_CHECKING:
    from pyiceberg.catalog import Catalog

    from ingester.batch import TableRef
    from ingester.engine import EngineStats
    from ingester.metrics import Metrics

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Stream dlt-normalized parquet into Apache Iceberg.",
    epilog="Exit codes: 0 done; 1 failed (nothing after the last commit was acked); 2 bad settings or usage.",
)
log = logging.getLogger("ingester")

EXIT_BAD_CONFIG = 2
EXIT_FAILED = 1


class LogFormat(StrEnum):
    TEXT = "text"
    JSON = "json"


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {"ts": record.created, "level": record.levelname, "logger": record.name, "msg": record.getMessage()}
        )


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to ``sys.stderr`` as it is at each record: a progress display redirects it."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _: Any) -> None:
        pass


def _setup_logging(settings: Settings) -> None:
    handler = _StderrHandler()
    if settings.log_format == "json":
        handler.setFormatter(_JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    for noisy in ("pyiceberg", "aiokafka", "botocore", "urllib3", "dlt"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:  # which setting and why, never the value: it may be a secret
        typer.echo(f"error: invalid settings: {describe_validation_error(exc)}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None
    except Exception as exc:  # a TOML or env syntax error: say which, no traceback
        typer.echo(f"error: invalid settings: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None


@contextmanager
def _fails_cleanly() -> Iterator[None]:
    """An error inside ends the command with one line on stderr and exit code 1, never a
    traceback (its frames hold settings and catalog properties)."""
    try:
        yield
    except click.exceptions.Exit:
        raise
    except Exception as exc:
        typer.echo(f"error: {_describe(exc)}", err=True)
        raise typer.Exit(EXIT_FAILED) from None


def _version(value: bool) -> None:
    if value:
        typer.echo(f"ingester {version('ingester')}")
        raise typer.Exit()


@app.callback()
def main(
    config: Annotated[Path | None, typer.Option("--config", "-c", help="TOML settings file", envvar=CONFIG_ENV)] = None,
    _v: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version")] = False,
    log_format: Annotated[LogFormat | None, typer.Option("--log-format", help="Log format (INGESTER_LOG_FORMAT)")] = None,
) -> None:
    import os

    if log_format is not None:
        os.environ["INGESTER_LOG_FORMAT"] = log_format.value
    if config is not None:
        if not config.is_file():
            typer.echo(f"error: config file {config} not found", err=True)
            raise typer.Exit(EXIT_BAD_CONFIG)
        os.environ[CONFIG_ENV] = str(config)


@app.command()
def run(
    exit_when_idle: Annotated[bool, typer.Option(help="Drain what is queued, commit, and exit")] = False,
) -> None:
    """Consume events and commit them until SIGTERM/SIGINT (then drain, commit, ack, exit 0)."""
    from ingester.cli.daemon import catch_signals_early, run_daemon

    early = catch_signals_early()
    prefer_jemalloc()  # before pyarrow loads
    settings = _settings()
    _setup_logging(settings)
    try:
        stats = anyio.run(run_daemon, settings, exit_when_idle, early)
    except Exception as exc:
        log.error("stopped on an error, nothing after the last commit was acked: %s", _describe(exc))
        raise typer.Exit(EXIT_FAILED) from None
    if stats is None:
        return
    log.info(
        "stopped: %d events, %d rows, %d snapshots, %d duplicates skipped, %d dead letters",
        stats.events, stats.rows, stats.snapshots, stats.duplicates, stats.dead_letters,
    )


@app.command()
def backfill(
    prefixes: Annotated[list[str], typer.Argument(help="s3://bucket/prefix/ or local folders to list")],
    route: Annotated[list[str] | None, typer.Option(
        help="key pattern -> table, e.g. 'incoming/{table}/**' (repeat; tried before objects.routes)")] = None,
    table: Annotated[str | None, typer.Option(help="table for --route patterns without {table}")] = None,
    namespace: Annotated[str | None, typer.Option(help="namespace for --route patterns without {namespace}")] = None,
) -> None:
    """List the prefixes once, load every file not loaded yet, exit. Files already in their table
    (by location, etag and size, in its ledger) are skipped: running it again loads only new files."""
    from ingester.cli.daemon import catch_signals_early, run_daemon
    from ingester.metrics import Metrics
    from ingester.settings import ObjectRoute

    early = catch_signals_early()
    prefer_jemalloc()
    settings = _settings()
    try:
        routes = [ObjectRoute(pattern=p, table=table, namespace=namespace) for p in route or ()]
        settings = _backfill_settings(settings, prefixes, [*routes, *settings.objects.routes])
    except (ValueError, ValidationError) as exc:
        detail = describe_validation_error(exc) if isinstance(exc, ValidationError) else str(exc)
        typer.echo(f"error: {detail}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None
    _setup_logging(settings)
    metrics = Metrics()
    try:
        stats = anyio.run(lambda: run_daemon(settings, True, early, metrics=metrics, listing_rounds=1))
    except Exception as exc:
        log.error("backfill stopped on an error, what is committed stays (run it again to go on): %s", _describe(exc))
        raise typer.Exit(EXIT_FAILED) from None
    if stats is not None:
        typer.echo(_backfill_summary(stats, metrics))


def _backfill_settings(settings: Settings, prefixes: list[str], routes: list[Any]) -> Settings:
    """``settings`` with a listing source of ``prefixes`` by ``routes``; ValueError when no route."""
    from ingester.object_keys import KeyRouter

    if not routes:
        raise ValueError("no route: give --route PATTERN (e.g. 'incoming/{table}/**') or set objects.routes")
    KeyRouter(routes)  # each route names its table
    return settings.model_copy(update={
        "source": settings.source.model_copy(update={"kind": "listing"}),
        "objects": settings.objects.model_copy(update={"prefixes": prefixes, "routes": routes}),
    })


def _backfill_summary(stats: EngineStats, metrics: Metrics) -> str:
    from ingester.cli.progress import objects_counts

    _, skipped = objects_counts(metrics)
    rejected = int(metrics.registry.get_sample_value("ingester_dead_letters_total", {"kind": "rejected_file"}) or 0)
    unroutable = stats.dead_letters - rejected
    loaded = stats.events - stats.duplicates - rejected
    return (f"backfill: {loaded} files loaded ({stats.rows} rows in {stats.snapshots} snapshots), "
            f"{skipped.get('already_loaded', 0) + stats.duplicates} skipped as already loaded, "
            f"{stats.dead_letters} dead-lettered ({unroutable} unroutable, {rejected} unreadable or refused), "
            f"{skipped.get('suffix', 0)} skipped by their route's suffixes")


def _describe(exc: BaseException) -> str:
    """``Type: message`` of each distinct error, out of the task groups' exception groups."""
    if isinstance(exc, BaseExceptionGroup):
        return "; ".join(dict.fromkeys(_describe(e) for e in exc.exceptions))
    if is_auth_failure(exc):
        return f"authentication failed, check the credentials: {type(exc).__name__}: {exc}"
    return f"{type(exc).__name__}: {exc}"


@app.command("publish")
def publish_cmd(
    paths: Annotated[list[Path], typer.Argument(help="parquet files, or dlt load package folders")],
    table: Annotated[str | None, typer.Option(help="table for plain parquet files")] = None,
    namespace: Annotated[str | None, typer.Option(help="namespace for the events")] = None,
    write_disposition: Annotated[str, typer.Option(help="append | replace | merge")] = "append",
    primary_key: Annotated[list[str] | None, typer.Option(help="primary key column (repeat)")] = None,
) -> None:
    """Stage files and put one event per file on the configured queue."""
    from ingester.dlt.package import load_package_events
    from ingester.events import FileEvent, WriteDisposition
    from ingester.publish import file_event, publish
    from ingester.wiring import build_queue, build_stager

    settings = _settings()
    _setup_logging(settings)
    events: list[FileEvent] = []
    for path in paths:
        if path.is_dir() and (path / "schema.json").exists():
            events.extend(load_package_events(path, namespace))
        elif path.is_file():
            with _fails_cleanly():  # a file that does not decode: one line naming it, nothing published
                events.append(
                    file_event(path, table or path.name.split(".")[0], namespace=namespace,
                               write_disposition=WriteDisposition(write_disposition), primary_key=primary_key or ())
                )
        else:
            typer.echo(f"error: {path} is neither a parquet file nor a dlt load package", err=True)
            raise typer.Exit(EXIT_BAD_CONFIG)
    with _fails_cleanly(), Display(shown(settings)) as display:
        queue = build_queue(settings)
        try:
            count = publish(display.track(events, "staging", lambda e: Path(e.location or "").name), build_stager(settings), queue)
        finally:
            queue.close()
    typer.echo(f"published {count} events")


@app.command()
def tables(as_json: Annotated[bool, typer.Option("--json", help="JSON output")] = False) -> None:
    """Each table with its rows, snapshots, last commit and metadata location."""
    from ingester.catalog import open_catalog
    from ingester.cli.tables import list_tables

    settings = _settings()
    with _fails_cleanly():
        infos = list_tables(open_catalog(settings.catalog, settings.home_dir))
    if as_json:
        typer.echo(json.dumps([t.as_dict() for t in infos], indent=2))
        return
    typer.echo(f"{'table':<32} {'rows':>10} {'snapshots':>9}  last_commit")
    for t in infos:
        typer.echo(f"{t.name:<32} {t.rows:>10} {t.snapshots:>9}  {t.last_commit or '-'}")


@app.command()
def maintain(
    table: Annotated[str | None, typer.Option(help="namespace.table, or a table of the default namespace; default: all")] = None,
) -> None:
    """Run one maintenance round now: compact small files, expire old snapshots (settings: maintenance.*).

    Safe next to a running daemon: a round that meets a concurrent commit skips that step.
    """
    from ingester.catalog import open_catalog
    from ingester.wiring import build_maintenance

    settings = _settings()
    _setup_logging(settings)
    catalog = open_catalog(settings.catalog, settings.home_dir)
    schedule = build_maintenance(settings, catalog)
    reports = []
    with Display(shown(settings)) as display:
        for ref in display.track(_table_refs(settings, catalog, table), "maintaining"):
            reports.append(schedule.run(ref))
            display.echo(reports[-1].describe())
    if any(r.error for r in reports):
        raise typer.Exit(EXIT_FAILED)


def _table_refs(settings: Settings, catalog: Catalog, table: str | None, ledgers: bool = False) -> list[TableRef]:
    """``TableRef``s of ``table`` (``namespace.table``, or a table of the default namespace), or of
    every table (the tables' ledgers too with ``ledgers``: maintenance keeps them with their tables)."""
    from ingester.batch import TableRef
    from ingester.iceberg_layer.ledger import is_ledger

    if table:
        namespace, _, name = table.rpartition(".")
        return [TableRef(namespace or settings.routing.namespace_prefix + settings.routing.namespace, name)]
    idents = [i for ns in catalog.list_namespaces() for i in catalog.list_tables(ns)]
    return [TableRef(".".join(i[:-1]), i[-1]) for i in idents if ledgers or not is_ledger(i[-1])]


@app.command("remove-orphans")
def remove_orphans_cmd(
    table: Annotated[str | None, typer.Option(help="namespace.table, or a table of the default namespace; default: all")] = None,
    older_than_hours: Annotated[float, typer.Option(min=1.0, help="only files older than this (in flight or still read: younger)")] = 72.0,
    dry_run: Annotated[bool, typer.Option(help="list the orphans, delete nothing")] = False,
) -> None:
    """Delete files in the tables' data/ and metadata/ folders that no retained snapshot or
    metadata file refers to (failed commits, expired snapshots), older than --older-than-hours."""
    from ingester.catalog import open_catalog

    settings = _settings()
    _setup_logging(settings)
    failed = False
    with _fails_cleanly():
        catalog = open_catalog(settings.catalog, settings.home_dir)
        refs = _table_refs(settings, catalog, table, ledgers=True)
    with Display(shown(settings)) as display:
        for ref in display.track(refs, "removing orphans"):
            failed |= not _remove_orphans_of(catalog, ref, older_than_hours, dry_run, display)
    if failed:
        raise typer.Exit(EXIT_FAILED)


def _remove_orphans_of(catalog: Catalog, ref: TableRef, older_than_hours: float, dry_run: bool, display: Display) -> bool:
    """One table's orphans, reported on stdout; ``False`` (one error line) when it failed."""
    from ingester.maintenance.orphans import remove_orphans

    try:
        report = remove_orphans(catalog.load_table((ref.namespace, ref.name)), str(ref), older_than_hours * 3600, dry_run)
    except Exception as exc:  # one line per table, the other tables still run
        display.echo(f"error: {ref}: {_describe(exc)}", err=True)
        return False
    display.echo(report.describe())
    for path in report.orphans if dry_run else ():
        display.echo(f"  {path}")
    return True


@app.command()
def top(
    endpoints: Annotated[list[str] | None, typer.Argument(
        help="metrics endpoints (host:port or URL); default: this host's INGESTER_METRICS__PORT")] = None,
    interval: Annotated[float, typer.Option(min=0.2, help="seconds between readings")] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="print one view (two readings an interval apart) and exit")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="with --once: JSON for scripts")] = False,
) -> None:
    """A live view of running daemons: per table rows/s, lag, last commit age, paused, dead letters (q quits)."""
    from ingester.cli import top as view

    if not endpoints:
        port = _settings().metrics.port
        if not port:
            typer.echo("error: name an endpoint (host:port), or set INGESTER_METRICS__PORT", err=True)
            raise typer.Exit(EXIT_BAD_CONFIG)
        endpoints = [f"127.0.0.1:{port}"]
    if once or as_json:
        views = view.once(endpoints, interval)
        if as_json:
            typer.echo(view.as_json(views))
        else:
            view.print_once(views, interval)
        raise typer.Exit(0 if all(v.up for v in views) else EXIT_FAILED)
    try:
        view.live(endpoints, interval)
    except KeyboardInterrupt:
        pass


@app.command()
def demo(
    seed: Annotated[int, typer.Option(help="random seed of the generated data")] = 7,
    scale: Annotated[int, typer.Option(help="multiplies the number of rows")] = 1,
) -> None:
    """Generate shop data with a real dlt pipeline, publish it to the queue, run the engine, show the tables."""
    import dlt

    from ingester.cli.demo import shop
    from ingester.dlt.queue import ingester_queue

    settings = _settings()
    _setup_logging(settings)
    logging.getLogger("ingester").setLevel(logging.WARNING)
    home = settings.home_dir
    typer.echo(f"[1/3] dlt extracts and normalizes demo data, publishes one event per parquet file (home: {home})")
    started = time.monotonic()
    pipeline = dlt.pipeline(
        pipeline_name="ingester_demo", destination=ingester_queue(settings), pipelines_dir=str(home / "dlt"), dataset_name="shop"
    )
    pipeline.run(shop(seed=seed, customers=500 * scale, orders=2_000 * scale, page_views=10_000 * scale))
    typer.echo(f"      done in {time.monotonic() - started:.1f}s")
    typer.echo("[2/3] the engine commits the queued files, one snapshot per table per window")
    started = time.monotonic()
    from ingester.cli.daemon import run_daemon

    stats = anyio.run(run_daemon, settings, True)
    if stats is None:
        raise typer.Exit(EXIT_FAILED)
    typer.echo(
        f"      {stats.events} events -> {stats.rows} rows in {stats.snapshots} snapshots "
        f"({stats.dead_letters} dead letters) in {time.monotonic() - started:.1f}s"
    )
    typer.echo("[3/3] tables in the embedded catalog:")
    tables(as_json=False)


@app.command("settings")
def settings_cmd(
    markdown: Annotated[bool, typer.Option("--markdown", help="Print the table of all settings (env var, type, default)")] = False,
) -> None:
    """Print the effective settings (secrets masked)."""
    if markdown:
        from ingester.cli.settings_doc import markdown_table

        typer.echo(markdown_table(), nl=False)
        return
    typer.echo(_settings().model_dump_json(indent=2))


@app.command("replay-deadletters")
def replay_deadletters(
    source: Annotated[
        Path | None, typer.Argument(help="dead-letter JSON lines, '-' for stdin; default <home>/deadletter/deadletters.jsonl")
    ] = None,
    reason: Annotated[str | None, typer.Option(help="only letters whose reason contains this text")] = None,
    dry_run: Annotated[bool, typer.Option(help="count what would be replayed, publish nothing")] = False,
) -> None:
    """Publish the original events of dead letters to the configured queue again (fix the cause first).

    Replaying twice is harmless for events with an event_id: the second copy is skipped.
    """
    from ingester.deadletter import read_letters
    from ingester.wiring import build_queue

    settings = _settings()
    _setup_logging(settings)
    path = source or settings.deadletter_folder / "deadletters.jsonl"
    try:
        letters = read_letters(sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        typer.echo(f"error: cannot read dead letters from {path}: {type(exc).__name__}: {exc}", err=True)
        raise typer.Exit(EXIT_BAD_CONFIG) from None
    chosen = [letter for letter in letters if reason is None or reason in letter.reason]
    if chosen and not dry_run:
        with _fails_cleanly():
            queue = build_queue(settings)
            try:
                queue.put_many([letter.payload for letter in chosen], [(letter.table or "").encode() for letter in chosen])
            finally:
                queue.close()
    typer.echo(f"{'would replay' if dry_run else 'replayed'} {len(chosen)} of {len(letters)} dead letters")
