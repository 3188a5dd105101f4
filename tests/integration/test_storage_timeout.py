"""``storage.read_timeout_s`` bounds every S3 request: a stalled store fails fast (a transient
error the engine retries) instead of holding a commit worker for minutes."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingester.errors import is_transient
from ingester.events import FileEvent
from ingester.settings import Settings
from ingester.storage import FileReader, s3_filesystem
from ingester.wiring import s3_for
from tests.integration.faults import FaultPlan, FaultProxy

STALL_S = 60.0


@pytest.fixture
def stalling_s3(seaweed: Any) -> Iterator[FaultProxy]:
    """A proxy in front of the S3 store that holds every request for a minute once enabled."""
    proxy = FaultProxy(int(seaweed.s3_endpoint.rsplit(":", 1)[1]), FaultPlan(("timeout",), rate=1.0, timeout_s=STALL_S, enabled=False))
    proxy.start()
    try:
        yield proxy
    finally:
        proxy.stop()


def test_a_stalled_s3_read_fails_within_the_timeout_as_transient(seaweed: Any, stalling_s3: FaultProxy) -> None:
    fs = s3_filesystem(seaweed.s3_endpoint, seaweed.access_key, seaweed.secret_key, seaweed.region)
    with fs.open_output_stream("warehouse/timeout/f.parquet") as out:
        pq.write_table(pa.table({"id": [1, 2, 3]}), out)
    settings = Settings(catalog={"s3_endpoint": stalling_s3.url, "s3_access_key_id": seaweed.access_key,
                                 "s3_secret_access_key": seaweed.secret_key, "s3_region": seaweed.region},
                        storage={"allowed_prefixes": ["s3://warehouse/timeout"], "read_timeout_s": 1.0})
    reader = FileReader(settings.allowed_prefixes, s3_for(settings))
    event = FileEvent(table="t", location="s3://warehouse/timeout/f.parquet")
    assert reader.open(event).metadata.num_rows == 3  # through the proxy while it forwards

    stalling_s3.plan.enabled = True
    started = time.monotonic()
    with pytest.raises(OSError) as failed:
        reader.open(event)
    elapsed = time.monotonic() - started
    assert elapsed < STALL_S / 3, f"the read waited {elapsed:.1f}s for a stalled store"
    assert is_transient(failed.value), failed.value
