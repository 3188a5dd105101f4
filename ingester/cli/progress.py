"""Progress of long commands, for a person at a terminal: a live line on stdout while stdout is a
terminal and the logs are text; nothing at all when piped or with JSON logs (scripts and log
collectors never see escape codes). Log records still show: rich prints them above the line.

``run --exit-when-idle`` shows the events not yet committed and the rows per second (``backfill``:
the files found new and already loaded); ``publish``,
``maintain`` and ``remove-orphans`` count their files or tables.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import TYPE_CHECKING, TypeVar

from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn

from ingester.metrics import Metrics, ReportsLag
from ingester.settings import Settings

if TYPE_CHECKING:
    from ingester.engine import Engine

T = TypeVar("T")
REFRESH_S = 0.25
RATE_WINDOW_S = 5.0


def shown(settings: Settings) -> bool:
    """Progress is shown when stdout is a terminal and the logs are text."""
    return settings.log_format == "text" and sys.stdout.isatty()


class Display:
    """A live progress display on stdout, or nothing when not ``enabled``: the same calls either way."""

    def __init__(self, enabled: bool, *, bar: bool = True) -> None:
        columns: list[ProgressColumn] = [SpinnerColumn(), TextColumn("[bold]{task.description}")]
        if bar:
            columns += [BarColumn(), MofNCompleteColumn()]
        columns += [TextColumn("{task.fields[detail]}"), TimeElapsedColumn()]
        self._progress = Progress(*columns) if enabled else None

    def __enter__(self) -> Display:
        if self._progress is not None:
            self._progress.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()

    def echo(self, text: str, err: bool = False) -> None:
        """A line on stdout (stderr), printed above the progress line while it shows."""
        stream = sys.stderr if err else sys.stdout  # while shown, rich's proxies of both
        stream.write(text + "\n")
        stream.flush()

    def track(self, items: Sequence[T], description: str, name: Callable[[T], str] = str) -> Iterator[T]:
        """Yield ``items``, counting each one done when the next is asked for; shows the current one's name."""
        update = self.status(description, total=len(items))
        for done, item in enumerate(items):
            update(done, name(item))
            yield item
        update(len(items), "")

    def status(self, description: str, total: int | None = None) -> Callable[[int, str], None]:
        """A line; the returned ``update(completed, detail)`` changes it."""
        progress = self._progress
        if progress is None:
            return lambda completed, detail: None
        task = progress.add_task(description, total=total, detail="")
        return lambda completed, detail: progress.update(task, completed=completed, detail=detail)


class RowRate:
    """Rows per second over the last ``window_s`` from cumulative counts."""

    def __init__(self, window_s: float = RATE_WINDOW_S, clock: Callable[[], float] = time.monotonic) -> None:
        self._samples: deque[tuple[float, int]] = deque()
        self._window_s = window_s
        self._clock = clock

    def add(self, rows: int) -> float:
        now = self._clock()
        self._samples.append((now, rows))
        while len(self._samples) > 2 and now - self._samples[1][0] >= self._window_s:
            self._samples.popleft()
        first_t, first_rows = self._samples[0]
        return (rows - first_rows) / (now - first_t) if now > first_t else 0.0


@contextmanager
def queued_events(settings: Settings, engine: Engine) -> Iterator[Callable[[], int]]:
    """Counts the events on the queue not yet committed: Kafka's lag plus what is read and in
    flight; the spool's depth (acked events are deleted from it)."""
    source = engine.source
    if isinstance(source, ReportsLag):
        yield lambda: sum(source.lag().values()) + engine.tracker.pending()
        return
    if settings.source.kind == "listing":  # what a round handed on, not committed yet
        yield engine.tracker.pending
        return
    from ingester.sources.spool import SpoolQueue

    spool = SpoolQueue(settings.spool_file)
    try:
        yield spool.depth
    finally:
        spool.close()


def ingest_line(queued: int, rows: int, rate: float, snapshots: int) -> str:
    return f"{queued:,} events queued · {rows:,} rows committed · {rate:,.0f} rows/s · {snapshots:,} snapshots"


def listing_line(engine: Engine, rate: float) -> str:
    """A listing source's progress: files found new and already loaded, what is committed."""
    found, skipped = objects_counts(engine.metrics)
    stats = engine.statistics()
    return (f"{found:,} new files found · {skipped.get('already_loaded', 0):,} already loaded · "
            f"{engine.tracker.pending():,} in flight · {stats.rows:,} rows committed · {rate:,.0f} rows/s")


def objects_counts(metrics: Metrics) -> tuple[int, dict[str, int]]:
    """``ingester_objects_discovered_total`` and ``..._skipped_total`` per reason, of every source label."""
    found, skipped = 0, dict[str, int]()
    for family in metrics.registry.collect():
        for s in family.samples:
            if s.name == "ingester_objects_discovered_total":
                found += int(s.value)
            elif s.name == "ingester_objects_skipped_total":
                skipped[s.labels["reason"]] = skipped.get(s.labels["reason"], 0) + int(s.value)
    return found, skipped


@contextmanager
def engine_progress(settings: Settings, engine: Engine, exit_when_idle: bool) -> Iterator[None]:
    """While the block runs: for ``--exit-when-idle`` on a terminal, a line refreshed by a thread."""
    if not (exit_when_idle and shown(settings)):
        yield
        return
    done = threading.Event()
    listing = settings.source.kind == "listing"
    with queued_events(settings, engine) as queued, Display(True, bar=False) as display:
        update = display.status("ingesting")

        def refresh() -> None:
            rate, finished = RowRate(), False
            while True:  # once more after the engine ended: the line shows the end
                stats = engine.statistics()
                speed = rate.add(stats.rows)
                update(0, listing_line(engine, speed) if listing else ingest_line(queued(), stats.rows, speed, stats.snapshots))
                if finished:
                    return
                finished = done.wait(REFRESH_S)

        thread = threading.Thread(target=refresh, name="ingester-progress", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

