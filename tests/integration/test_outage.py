"""The REST catalog down for a minute: the daemon backs off, pauses its source within the
in-flight bound, and resumes by itself with nothing lost."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pytest

from ingester.settings import Settings
from ingester.sources.spool import SpoolQueue, SpoolSource
from ingester.wiring import build_engine
from tests.faults import FaultPlan, FaultProxy
from tests.support import event_for, rest_catalog_settings, write_parquet

pytestmark = pytest.mark.integration

OUTAGE_S = 60.0


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
