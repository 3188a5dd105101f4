"""``ingester top``: a live terminal view of daemons' metrics endpoints, refreshed in place.

One row per table of each daemon: rows and events per second (between two readings), rows and
snapshots committed, the age of the last commit; and the daemon's partition lag, whether its
source is paused, its dead letters. ``q`` quits. ``--once`` prints one view (two readings an
interval apart, so that rates are real); ``--json`` prints it as JSON for scripts.
"""

from __future__ import annotations

import json
import select
import sys
import termios
import time
import tty
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from prometheus_client.parser import text_string_to_metric_families
from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

SCRAPE_TIMEOUT_S = 2.0
QUIT_KEYS = ("q", "Q")
WIDE = 160
"""Columns of a view printed to a pipe or file."""
Labels = tuple[tuple[str, str], ...]


def endpoint_url(endpoint: str) -> str:
    """``host:port`` or a URL, as the URL of its ``/metrics`` page."""
    url = endpoint if "://" in endpoint else f"http://{endpoint}"
    scheme, _, rest = url.partition("://")
    host, slash, path = rest.partition("/")
    return f"{scheme}://{host}/{path if slash and path else 'metrics'}"


@dataclass(frozen=True, slots=True)
class Reading:
    """One scrape of one endpoint: its samples, or why there are none."""

    endpoint: str
    at: float
    samples: Mapping[tuple[str, Labels], float]
    error: str | None = None

    def value(self, name: str) -> float | None:
        found = [v for (n, _), v in self.samples.items() if n == name]
        return sum(found) if found else None

    def by(self, name: str, label: str) -> dict[str, float]:
        out: dict[str, float] = {}
        for (n, labels), v in self.samples.items():
            key = dict(labels).get(label)
            if n == name and key is not None:
                out[key] = out.get(key, 0.0) + v
        return out


def scrape(endpoint: str, timeout_s: float = SCRAPE_TIMEOUT_S) -> Reading:
    at = time.time()
    try:
        with urllib.request.urlopen(endpoint_url(endpoint), timeout=timeout_s) as response:
            text = response.read().decode()
    except (OSError, ValueError) as exc:
        return Reading(endpoint, at, {}, f"{type(exc).__name__}: {exc}")
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for family in text_string_to_metric_families(text) for s in family.samples}
    return Reading(endpoint, at, samples)


@dataclass(frozen=True, slots=True)
class TableView:
    table: str
    rows_per_s: float | None
    events_per_s: float | None
    rows: int
    snapshots: int
    last_commit_age_s: float | None


@dataclass(frozen=True, slots=True)
class DaemonView:
    endpoint: str
    up: bool
    error: str | None
    ready: bool
    lag: int | None
    paused: bool
    dead_letters: int
    inflight_bytes: int
    max_inflight_bytes: int
    tables: tuple[TableView, ...]


def _rate(before: Reading | None, after: Reading, name: str, table: str) -> float | None:
    if before is None or before.error or after.at <= before.at:
        return None
    now, then = after.by(name, "table").get(table, 0.0), before.by(name, "table").get(table, 0.0)
    return (now - then) / (after.at - before.at) if now >= then else None  # a restart resets the counters


def view(before: Reading | None, after: Reading) -> DaemonView:
    """What the screen shows of one daemon; rates need the ``before`` reading."""
    commits = after.by("ingester_last_commit_timestamp_seconds", "table")
    rows, snapshots = after.by("ingester_rows_total", "table"), after.by("ingester_snapshots_total", "table")
    names = sorted(set(after.by("ingester_events_total", "table")) | set(rows))
    lag = after.value("ingester_partition_lag")
    return DaemonView(
        endpoint=after.endpoint, up=after.error is None, error=after.error,
        ready=after.value("ingester_ready") == 1, lag=None if lag is None else int(lag),
        paused=after.value("ingester_source_paused") == 1, dead_letters=int(after.value("ingester_dead_letters_total") or 0),
        inflight_bytes=int(after.value("ingester_inflight_bytes") or 0),
        max_inflight_bytes=int(after.value("ingester_max_inflight_bytes") or 0),
        tables=tuple(
            TableView(name, _rate(before, after, "ingester_rows_total", name), _rate(before, after, "ingester_events_total", name),
                      int(rows.get(name, 0)), int(snapshots.get(name, 0)),
                      max(0.0, after.at - commits[name]) if name in commits else None)
            for name in names
        ),
    )


def _num(value: float | None, digits: int = 0) -> str:
    return "-" if value is None else f"{value:,.{digits}f}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "never"
    return f"{seconds:.0f}s ago" if seconds < 120 else f"{seconds / 60:.0f}m ago"


def render(views: Sequence[DaemonView], interval_s: float, live: bool = True) -> Group:
    """The screen: a header line and one table row per table of each daemon."""
    timing = f"every {interval_s:g} s · q quits" if live else f"rates over {interval_s:g} s"
    header = Text(f"ingester top · {len(views)} daemon(s) · {timing} · {time.strftime('%H:%M:%S')}", style="bold")
    table = Table(box=None, header_style="bold", pad_edge=False)
    for column in ("daemon", "table", "rows/s", "events/s", "rows", "snapshots", "last commit", "lag", "paused",
                   "dead letters", "ready"):
        table.add_column(column, justify="left" if column in ("daemon", "table") else "right", no_wrap=True)
    for d in views:
        if not d.up:
            table.add_row(d.endpoint, Text(f"down: {d.error}", style="red"), *[""] * 9)
            continue
        daemon_cells = (_num(d.lag), "yes" if d.paused else "no", str(d.dead_letters), "yes" if d.ready else "no")
        for t in d.tables or (TableView("-", None, None, 0, 0, None),):
            table.add_row(d.endpoint, t.table, _num(t.rows_per_s, 1), _num(t.events_per_s, 1), f"{t.rows:,}",
                          f"{t.snapshots:,}", _age(t.last_commit_age_s), *daemon_cells)
    return Group(header, table)


def read_all(endpoints: Sequence[str]) -> list[Reading]:
    with ThreadPoolExecutor(max(1, len(endpoints))) as pool:
        return list(pool.map(scrape, endpoints))


def once(endpoints: Sequence[str], interval_s: float) -> list[DaemonView]:
    """Two readings ``interval_s`` apart: one view per endpoint."""
    first = read_all(endpoints)
    time.sleep(interval_s)
    return [view(before, after) for before, after in zip(first, read_all(endpoints))]


def print_once(views: Sequence[DaemonView], interval_s: float) -> None:
    Console(width=None if sys.stdout.isatty() else WIDE).print(render(views, interval_s, live=False))


def as_json(views: Sequence[DaemonView]) -> str:
    return json.dumps([asdict(v) for v in views], indent=2)


@contextmanager
def _keys() -> Iterator[Any]:
    """``wait(timeout_s)``: a key pressed within the timeout, or ``""`` (stdin in cbreak mode
    while it is a terminal; otherwise only sleeps)."""
    if not sys.stdin.isatty():
        def sleep(timeout_s: float) -> str:
            time.sleep(timeout_s)
            return ""

        yield sleep
        return
    fd = sys.stdin.fileno()
    saved = termios.tcgetattr(fd)
    tty.setcbreak(fd)

    def wait(timeout_s: float) -> str:
        ready, _, _ = select.select([fd], [], [], timeout_s)
        return sys.stdin.read(1) if ready else ""

    try:
        yield wait
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def live(endpoints: Sequence[str], interval_s: float, console: Console | None = None) -> None:
    """Refresh the view in place every ``interval_s`` until ``q`` (or Ctrl-C)."""
    previous: dict[str, Reading] = {}
    with _keys() as wait, Live(console=console or Console(), auto_refresh=False, transient=False) as screen:
        while True:
            readings = read_all(endpoints)
            screen.update(render([view(previous.get(r.endpoint), r) for r in readings], interval_s), refresh=True)
            previous = {r.endpoint: r for r in readings}
            deadline = time.monotonic() + interval_s
            while (left := deadline - time.monotonic()) > 0:
                if wait(left) in QUIT_KEYS:
                    return
