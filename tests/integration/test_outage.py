"""The REST catalog down for a minute: the daemon backs off, pauses its source within the
in-flight bound, and resumes by itself with nothing lost."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
from prometheus_client.parser import text_string_to_metric_families

from ingester.settings import Settings
from ingester.sources.spool import SpoolQueue, SpoolSource
from ingester.testing.localstack import free_port
from ingester.wiring import build_engine
from tests.integration.faults import FaultPlan, FaultProxy
from tests.support import catalog_env, event_for, rest_catalog_settings, write_parquet

OUTAGE_S = 60.0
INGESTER = str(Path(sys.executable).parent / "ingester")


def test_catalog_outage_backs_off_pauses_and_recovers(seaweed: Any, tmp_path: Path) -> None:
    port = int(seaweed.iceberg_uri.rsplit(":", 1)[1])
    proxy = FaultProxy(port, FaultPlan(faults=("http_503", "drop"), rate=1.0, enabled=False)).start()
    catalog = rest_catalog_settings(seaweed) | {"uri": proxy.url, "oauth2_server_uri": seaweed.token_endpoint}
    ns = f"outage{uuid.uuid4().hex[:6]}"
    staging = tmp_path / "home" / "staging"
    files = [write_parquet(staging, {"id": pa.array(range(i * 10, i * 10 + 10), pa.int64()), "pad": ["x" * 200] * 10})
             for i in range(60)]
    limit = 5 * max(f.stat().st_size for f in files)
    settings = Settings(
        home=tmp_path / "home", catalog=catalog, routing={"namespace": ns},
        window={"max_batch_files": 2, "max_batch_age_s": 0.2, "max_inflight_bytes": limit},
        commit={"retry_min_wait_s": 0.5, "retry_max_wait_s": 5.0, "workers": 2},
    )
    queue = SpoolQueue(settings.spool_file)
    queue.put_many([event_for(f, "t") for f in files[:10]])
    engine = build_engine(settings, source=SpoolSource(SpoolQueue(settings.spool_file)))
    observed: dict[str, Any] = {}

    def scenario() -> None:
        while engine.statistics().rows < 100:  # the first files land normally
            time.sleep(0.1)
        proxy.plan.enabled = True
        queue.put_many([event_for(f, "t") for f in files[10:]])
        time.sleep(OUTAGE_S)
        observed["during"] = engine.statistics()
        proxy.plan.enabled = False
        deadline = time.time() + 120
        while engine.statistics().rows < 600 and time.time() < deadline:
            time.sleep(0.2)
        engine.stop()

    thread = threading.Thread(target=scenario)
    thread.start()
    stats = anyio.run(engine.run)
    thread.join()
    proxy.stop()
    during = observed["during"]
    assert during.rows == 100 and during.retries > 0  # nothing landed while the catalog was down
    assert during.pauses >= 1 and during.paused  # the source waited instead of buffering
    assert stats.peak_inflight_bytes <= limit
    assert stats.rows == 600 and stats.dead_letters == 0
    table = seaweed.catalog().load_table((ns, "t"))
    ids = sorted(table.scan().to_arrow().column("id").to_pylist())
    assert ids == list(range(600))
    assert proxy.counts["http_503"] + proxy.counts["drop"] > 0
    assert queue.depth() == 0


def test_a_daemon_started_while_the_catalog_is_down_is_alive_not_ready_then_commits(seaweed: Any, tmp_path: Path) -> None:
    """``ingester run`` as a pod runs it: its probes answer while it waits for the catalog
    (alive, not ready, the connect retries counted), and it commits once the catalog is up."""
    port = int(seaweed.iceberg_uri.rsplit(":", 1)[1])
    proxy = FaultProxy(port, FaultPlan(faults=("drop",), rate=1.0, enabled=True)).start()
    catalog = rest_catalog_settings(seaweed) | {"uri": proxy.url, "oauth2_server_uri": seaweed.token_endpoint}
    ns, home, metrics_port = f"late{uuid.uuid4().hex[:6]}", tmp_path / "home", free_port()
    files = [write_parquet(home / "staging", {"id": pa.array(range(i * 10, i * 10 + 10), pa.int64())}) for i in range(5)]
    SpoolQueue(Settings(home=home).spool_file).put_many([event_for(f, "t") for f in files])
    env = {**os.environ, **catalog_env(catalog), "INGESTER_HOME": str(home), "INGESTER_ROUTING__NAMESPACE": ns,
           "INGESTER_METRICS__PORT": str(metrics_port), "INGESTER_COMMIT__RETRY_MAX_WAIT_S": "1"}
    proc = subprocess.Popen([INGESTER, "run", "--exit-when-idle"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_until("connect retries on the metrics endpoint",
                   lambda: retries(get(metrics_port, "/metrics")[1]) >= 2, timeout_s=60, proc=proc)
        assert get(metrics_port, "/healthz") == (200, "ok\n")
        assert get(metrics_port, "/readyz") == (503, "not ok\n")
        proxy.plan.enabled = False
        out, _ = proc.communicate(timeout=120)
    finally:
        proc.kill()
        proxy.stop()
    assert proc.returncode == 0, out
    assert "connect to the catalog failed" in out
    ids = sorted(seaweed.catalog().load_table((ns, "t")).scan().to_arrow().column("id").to_pylist())
    assert ids == list(range(50))


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def retries(text: str) -> float:
    return sum(s.value for family in text_string_to_metric_families(text) for s in family.samples
               if s.name == "ingester_retries_total" and s.labels.get("what") == "connect to the catalog")


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert proc.poll() is None, f"the daemon exited while waiting for {what}: {proc.communicate()[0]}"
        assert time.monotonic() < deadline, f"no {what} after {timeout_s:.0f}s"
        time.sleep(0.2)
