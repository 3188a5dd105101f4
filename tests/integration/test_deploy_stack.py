"""The README's local stack, end to end: `deploy/local-stack up`, `ingester run` against it, the
demo producer publishing to Kafka, its rows landing exactly once in the REST catalog, SIGTERM
draining the daemon, `deploy/local-stack down` stopping everything."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from ingester.testing.localstack import free_port, is_running

REPO = Path(__file__).resolve().parents[2]
INGESTER = str(Path(sys.executable).parent / "ingester")
DEMO_ROWS = {"default.customers": 500, "default.orders": 2000, "default.page_views": 10000}


def stack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "deploy" / "local-stack"), *args],
                          capture_output=True, text=True, timeout=180, cwd=REPO, check=False)


def exports(stdout: str) -> dict[str, str]:
    """The environment `eval "$(deploy/local-stack up)"` would set."""
    return {key: shlex.split(value)[0]
            for key, value in (line.removeprefix("export ").split("=", 1) for line in stdout.splitlines())}


def table_rows(env: dict[str, str]) -> dict[str, int]:
    out = subprocess.run([INGESTER, "tables", "--json"], env=env, capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stderr
    return {t["name"]: t["rows"] for t in json.loads(out.stdout)}


def get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.read().decode()


def test_local_stack_daemon_and_demo_producer(tmp_path: Path) -> None:
    folder, pids = str(tmp_path / "stack"), []
    daemon: subprocess.Popen[str] | None = None
    try:
        up = stack("up", "--dir", folder)
        assert up.returncode == 0, up.stderr
        status = stack("status", "--dir", folder).stdout.splitlines()
        pids = [int(line.split()[2]) for line in status]
        port = free_port()
        env = {**os.environ, **exports(up.stdout), "INGESTER_HOME": str(tmp_path / "home"),
               "INGESTER_METRICS__PORT": str(port), "INGESTER_SOURCE__SESSION_TIMEOUT_MS": "6000",
               "INGESTER_WINDOW__MAX_BATCH_AGE_S": "1"}
        daemon = subprocess.Popen([INGESTER, "run"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        deadline = time.monotonic() + 60
        while True:
            try:
                assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
                break
            except OSError:
                assert daemon.poll() is None and time.monotonic() < deadline, "daemon did not come up"
                time.sleep(0.5)

        demo = subprocess.run([INGESTER, "demo"], env={**env, "INGESTER_METRICS__PORT": "0"},
                              capture_output=True, text=True, timeout=600, check=False)
        assert demo.returncode == 0, demo.stderr[-3000:]

        deadline = time.monotonic() + 180
        while (rows := table_rows(env)) != {**rows, **DEMO_ROWS} and time.monotonic() < deadline:
            assert daemon.poll() is None, "daemon died"
            time.sleep(2)
        assert {name: rows.get(name) for name in DEMO_ROWS} == DEMO_ROWS  # every row exactly once
        status_code, metrics = get(f"http://127.0.0.1:{port}/metrics")
        assert status_code == 200 and "ingester_events_total" in metrics

        daemon.send_signal(signal.SIGTERM)
        out, _ = daemon.communicate(timeout=120)
        assert daemon.returncode == 0, out[-3000:]
        assert table_rows(env) == rows  # draining committed nothing twice
    finally:
        if daemon is not None and daemon.poll() is None:
            daemon.kill()
            daemon.wait()
        down = stack("down", "--dir", folder)
    assert down.returncode == 0, down.stderr
    assert len(pids) == 2 and not is_running(pids[0], "weed") and not is_running(pids[1], "tansu")
    assert stack("status", "--dir", folder).returncode == 1
