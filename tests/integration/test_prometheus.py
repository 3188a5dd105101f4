"""The dashboard and the alert rules against a real Prometheus (Debian's ``prometheus`` package,
which ``python3 dev.py test`` installs) scraping a real daemon every second while a stream flows.

Every dashboard query and every alert expression evaluates without error and returns series;
``IngesterNoCommit`` (rendered with a short window, the shipped file has production values) fires
when the catalog is cut off through the fault proxy, and clears once it is back.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ingester.cli.monitoring import to_yaml
from ingester.cli.monitoring.alerts import Windows, alerts, rule_groups
from ingester.cli.monitoring.dashboard import dashboard
from ingester.testing.localstack import free_port
from tests.integration.faults import FaultPlan, FaultProxy
from tests.integration.kafka_helpers import Daemon, events_for, produce, stage_files, wait_until
from tests.integration.test_kafka_daemon import Stream

WINDOWS = Windows(no_commit_after_s=8, no_commit_for="2s")
LABELS = {"namespace": "test", "pod": "ingester-0"}
VARIABLES = {"$namespace": LABELS["namespace"], "$pod": LABELS["pod"], "$table": ".*", "$__rate_interval": "10s"}
TABLES = ["orders", "users", "items"]


@dataclass
class Prometheus:
    url: str
    process: subprocess.Popen[bytes]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """Instant query; raises with Prometheus's error when the expression does not evaluate."""
        url = f"{self.url}/api/v1/query?{urllib.parse.urlencode({'query': expr})}"
        try:
            with urllib.request.urlopen(url, timeout=10) as response:
                body = json.load(response)
        except urllib.error.HTTPError as exc:
            raise AssertionError(f"{expr}: {exc.read().decode()}") from None
        assert body["status"] == "success", body
        return list(body["data"]["result"])

    def alerts(self, name: str, state: str = "firing") -> list[dict[str, str]]:
        return [r["metric"] for r in self.query(f'ALERTS{{alertname="{name}", alertstate="{state}"}}')]


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Any]:
    """``start(target)``: a Prometheus on loopback scraping ``target`` every second with the
    rules rendered for ``WINDOWS``, evaluated every second."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is missing: run `python3 dev.py test`, which installs Debian's prometheus package")
    started: list[Prometheus] = []

    def start(target: str) -> Prometheus:
        (tmp_path / "rules.yaml").write_text(to_yaml(rule_groups(WINDOWS)))
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(tmp_path / "rules.yaml")],
            "scrape_configs": [{"job_name": "ingester", "static_configs": [{"targets": [target], "labels": LABELS}]}],
        }
        (tmp_path / "prometheus.yml").write_text(json.dumps(config))
        port = free_port()
        with open(tmp_path / "prometheus.log", "ab") as log:
            process = subprocess.Popen(
                [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
                 f"--web.listen-address=127.0.0.1:{port}"], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        started.append(Prometheus(f"http://127.0.0.1:{port}", process))
        wait_until("Prometheus to be ready", lambda: _ready(started[-1]), 30, 0.2)
        return started[-1]

    yield start
    for p in started:
        p.process.terminate()
        p.process.wait(15)


def _ready(p: Prometheus) -> bool:
    assert p.process.poll() is None, "prometheus exited"
    try:
        with urllib.request.urlopen(f"{p.url}/-/ready", timeout=2) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def substituted(expr: str) -> str:
    for name, value in VARIABLES.items():
        expr = expr.replace(name, value)
    assert "$" not in expr, expr
    return expr


def panel_queries() -> list[tuple[str, str]]:
    return [(p["title"], substituted(t["expr"])) for p in dashboard()["panels"] for t in p["targets"]]


def check_everything_returns_series(prometheus: Prometheus) -> None:
    for title, expr in panel_queries():
        assert prometheus.query(expr), f"panel {title!r}: no series for {expr}"
    for variable in dashboard()["templating"]["list"][1:]:
        selector, label = re.fullmatch(r"label_values\((.*), (\w+)\)", variable["query"]["query"]).groups()  # type: ignore[union-attr]
        values = {r["metric"].get(label) for r in prometheus.query(substituted(selector))}
        assert values - {None}, f"variable {variable['name']}: no values"
    for a in alerts(WINDOWS):
        prometheus.query(a.expr)  # evaluates
        for signal in a.signals:
            assert prometheus.query(signal), f"{a.name}: no series for {signal}"


def test_dashboard_and_alerts_on_a_real_prometheus(seaweed: Any, tansu: Any, tmp_path: Path, prometheus: Any) -> None:
    catalog_port = int(seaweed.iceberg_uri.rsplit(":", 1)[1])
    proxy = FaultProxy(catalog_port, FaultPlan(faults=("http_503", "drop"), rate=1.0, enabled=False)).start()
    stream = Stream(seaweed, tansu, tmp_path / "home", INGESTER_WINDOW__MAX_BATCH_AGE_S="0.5",
                    INGESTER_CATALOG__URI=proxy.url, INGESTER_COMMIT__RETRY_MAX_WAIT_S="1")
    events = events_for(stage_files(seaweed, 450), TABLES)
    stop = threading.Event()

    def feed() -> None:
        for start in range(0, len(events), 3):
            if stop.wait(0.5):
                return
            stream.send(events[start:start + 3])

    daemon = Daemon(stream.env, tmp_path / "daemon.log")
    feeder = threading.Thread(target=feed)
    feeder.start()
    try:
        p = prometheus(f"127.0.0.1:{daemon.port}")
        wait_until("rows flowing in Prometheus", lambda: bool(p.query("sum(rate(ingester_rows_total[10s])) > 0")), 90, 0.5)
        produce(stream.bootstrap, stream.topics[0], [b"{not json"], [b"bad"])  # a dead letter, once scraped at 0
        wait_until("IngesterDeadLetters to fire", lambda: bool(p.alerts("IngesterDeadLetters")), 30, 0.5)
        assert p.alerts("IngesterNoCommit", "pending") == p.alerts("IngesterNoCommit") == []

        proxy.plan.enabled = True  # the catalog is cut off: commits fail and retry, events keep coming
        cut = time.monotonic()
        wait_until("IngesterNoCommit to fire", lambda: bool(p.alerts("IngesterNoCommit")), 60, 0.5)
        fired = p.alerts("IngesterNoCommit")
        print(f"IngesterNoCommit fired {time.monotonic() - cut:.1f} s after the cut: {sorted(a['table'] for a in fired)}")
        assert {a["table"] for a in fired} <= {f"{stream.ns}.{t}" for t in TABLES}
        assert all(a["pod"] == "ingester-0" and a["severity"] == "critical" for a in fired)

        proxy.plan.enabled = False
        back = time.monotonic()
        wait_until("IngesterNoCommit to clear", lambda: not p.alerts("IngesterNoCommit"), 60, 0.5)
        print(f"IngesterNoCommit cleared {time.monotonic() - back:.1f} s after the catalog came back")
        check_everything_returns_series(p)

        assert daemon.terminate() == 0, daemon.log()
        down = [a for a in alerts(WINDOWS) if a.name == "IngesterDown"][0]
        wait_until("the daemon to show as down", lambda: bool(p.query(down.expr)), 30, 0.5)
    finally:
        stop.set()
        feeder.join()
        if daemon.alive():
            daemon.kill9()
        proxy.stop()
