"""What a person at a terminal sees, driven in tmux (send-keys, capture-pane): ``ingester top``
showing and updating the tables of a running daemon; progress lines of ``publish``,
``run --exit-when-idle``, ``maintain`` and ``remove-orphans`` on a terminal, and none of it
when piped or with JSON logs.

tmux is a Debian package that ``python3 dev.py test`` installs when it is missing.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from ingester.sources.spool import SpoolQueue
from tests.integration.kafka_helpers import Daemon, wait_until
from tests.support import event_for, write_parquet

INGESTER = str(Path(sys.executable).parent / "ingester")


class Tmux:
    """A private tmux server (own socket); sessions run a shell command on a 200x50 terminal."""

    def __init__(self) -> None:
        binary = shutil.which("tmux")
        if binary is None:
            pytest.fail("tmux is missing: run `python3 dev.py test`, which installs Debian's tmux package")
        self.base = [binary, "-L", f"ingester-{uuid.uuid4().hex[:8]}", "-f", "/dev/null"]

    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.base, *args], capture_output=True, text=True, check=check, timeout=30)

    def start(self, name: str, command: str, env: dict[str, str]) -> None:
        exports = " ".join(f"{k}={shlex.quote(v)}" for k, v in env.items())
        # COLUMNS/LINES would pin the size (the server inherits 80x24 from somewhere under pytest)
        self._tmux("new-session", "-d", "-s", name, "-x", "200", "-y", "50", f"env -u COLUMNS -u LINES {exports} {command}")

    def screen(self, name: str) -> str:
        return self._tmux("capture-pane", "-p", "-t", name).stdout

    def keys(self, name: str, *keys: str) -> None:
        self._tmux("send-keys", "-t", name, *keys)

    def alive(self, name: str) -> bool:
        return self._tmux("has-session", "-t", name, check=False).returncode == 0

    def close(self) -> None:
        self._tmux("kill-server", check=False)


@pytest.fixture
def tmux() -> Iterator[Tmux]:
    server = Tmux()
    try:
        yield server
    finally:
        server.close()


def base_env(home: Path) -> dict[str, str]:
    """What the commands need from this environment (tmux sessions start from the server's)."""
    keep = {k: v for k, v in os.environ.items() if k in ("PATH", "PYTHONPATH", "HOME", "LANG", "LC_ALL")}
    return {**keep, "INGESTER_HOME": str(home), "TERM": "xterm-256color"}


def row_of(screen: str, table: str) -> list[str] | None:
    """The cells of ``table``'s row: daemon, table, rows/s, events/s, rows, snapshots, last commit,
    lag, paused, dead letters, ready."""
    for line in screen.splitlines():
        cells = line.split()
        if len(cells) > 2 and cells[1] == table:
            age = cells[6:8] if cells[6] != "never" else cells[6:7]
            return [*cells[:6], " ".join(age), *cells[6 + len(age):]]
    return None


def queue_events(home: Path, table: str, count: int, first_id: int, extra: tuple[bytes, ...] = ()) -> None:
    """``count`` one-row files for ``table`` on the daemon's spool, then the ``extra`` payloads."""
    queue = SpoolQueue(home / "queue.db")
    try:
        queue.put_many([event_for(write_parquet(home / "staging", {"id": [first_id + i]}), table) for i in range(count)])
        queue.put_many(extra)
    finally:
        queue.close()


def test_top_shows_the_tables_of_a_running_daemon_and_updates_them(tmp_path: Path, tmux: Tmux) -> None:
    home = tmp_path / "home"
    daemon = Daemon({"INGESTER_HOME": str(home), "INGESTER_WINDOW__MAX_BATCH_AGE_S": "0.3"}, tmp_path / "daemon.log")
    try:
        queue_events(home, "orders", 10, 0)
        queue_events(home, "users", 4, 100)
        wait_until("the first rows", lambda: daemon.metric("ingester_rows_total") == 14, 60)
        tmux.start("top", f"{INGESTER} top 127.0.0.1:{daemon.port} --interval 0.5", base_env(home))
        wait_until("top to show both tables", lambda: row_of(tmux.screen("top"), "default.users") is not None, 20, 0.2)
        first = tmux.screen("top")
        print(first)
        orders = row_of(first, "default.orders")
        assert orders is not None and orders[0] == f"127.0.0.1:{daemon.port}"
        assert orders[4:6] == ["10", "1"] and orders[6].endswith("s ago")  # rows, snapshots, last commit
        assert orders[7:] == ["-", "no", "0", "yes"]  # no lag (a spool), not paused, no dead letters, ready
        assert row_of(first, "default.users")[4] == "4"  # type: ignore[index]

        queue_events(home, "orders", 20, 1000, extra=(b"not json",))
        rates: set[str] = set()

        def updated() -> bool:
            row = row_of(tmux.screen("top"), "default.orders")
            rates.add(row[2] if row else "-")
            return row is not None and row[4] == "30" and row[9] == "1"

        wait_until("top to show the new rows and the dead letter", updated, 30, 0.2)
        assert any(r not in ("-", "0.0") for r in rates), rates  # rows/s while they landed
        print(tmux.screen("top"))
        tmux.keys("top", "q")
        wait_until("q to quit top", lambda: not tmux.alive("top"), 10, 0.2)
    finally:
        assert daemon.terminate() == 0, daemon.log()


def test_progress_on_a_terminal_and_none_when_piped_or_with_json_logs(tmp_path: Path, tmux: Tmux) -> None:
    home, src = tmp_path / "home", tmp_path / "src"
    files = [str(write_parquet(src, {"id": pa.array(range(i * 10, i * 10 + 10), pa.int64())})) for i in range(20)]
    script = " && ".join([
        f"{INGESTER} publish {' '.join(files)} --table orders",
        f"{INGESTER} run --exit-when-idle",
        f"{INGESTER} maintain",
        f"{INGESTER} remove-orphans --dry-run",
        "echo ALL-DONE",
    ])
    tmux.start("tty", f"sh -c {shlex.quote(script + '; sleep 120')}", base_env(home))
    wait_until("the commands on the terminal", lambda: "ALL-DONE" in tmux.screen("tty"), 120, 0.5)
    screen = tmux.screen("tty")
    print(screen)
    assert re.search(r"staging .*20/20", screen), screen
    assert re.search(r"ingesting 0 events queued · 200 rows committed · [\d,]+ rows/s · 1 snapshots", screen), screen
    # remove-orphans cleans the table and its dedupe ledger (ingester_ledger__orders)
    assert re.search(r"maintaining .*1/1", screen) and re.search(r"removing orphans .*2/2", screen), screen
    assert "published 20 events" in screen

    piped_home = tmp_path / "piped"  # the same files published through a pipe: no progress, no escape codes
    piped = subprocess.run([INGESTER, "publish", *files, "--table", "orders"], env={**os.environ, **base_env(piped_home)},
                           capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0 and piped.stdout == "published 20 events\n" and "\x1b[" not in piped.stderr, piped

    tmux.start("json", f"sh -c {shlex.quote(f'{INGESTER} --log-format json run --exit-when-idle; echo JSON-DONE; sleep 120')}",
               base_env(piped_home))  # a terminal, but JSON logs: no progress either
    wait_until("the JSON-logging run", lambda: "JSON-DONE" in tmux.screen("json"), 60, 0.5)
    json_screen = tmux.screen("json")
    assert '"msg": "stopped: 20 events, 200 rows' in json_screen and "ingesting" not in json_screen, json_screen
