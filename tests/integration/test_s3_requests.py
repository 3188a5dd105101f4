"""What a small file on S3 costs in requests: its footer read (one HEAD and one ranged GET,
which for a file no longer than ``footers.TAIL_BYTES`` is the whole file) is all that is fetched;
the table's as-is copy and the page check read those bytes again, not the store. Counted by a
pass-through proxy in front of SeaweedFS's S3."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from ingester.batch import Batch, Pending, TableRef
from ingester.commit import SnapshotCommitter
from ingester.events import FileEvent
from ingester.iceberg_layer.footers import TAIL_BYTES
from ingester.storage import FileReader, s3_filesystem
from tests.integration.faults import FaultPlan, FaultProxy
from tests.integration.kafka_helpers import STAGING, stage_files, table_ids


@pytest.fixture
def counting_s3(seaweed: Any) -> Iterator[FaultProxy]:
    proxy = FaultProxy(int(seaweed.s3_endpoint.rsplit(":", 1)[1]), FaultPlan(enabled=False)).start()
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.mark.parametrize("verified", [True, False], ids=["verified", "pages-decoded"])
def test_a_small_s3_file_is_fetched_once_for_its_footer_its_pages_and_its_copy(
    seaweed: Any, counting_s3: FaultProxy, verified: bool
) -> None:
    files = stage_files(seaweed, 6)
    assert all(f.byte_size <= TAIL_BYTES for f in files)
    fs = s3_filesystem(counting_s3.url, seaweed.access_key, seaweed.secret_key, seaweed.region)
    committer = SnapshotCommitter(seaweed.catalog(), FileReader([STAGING], fs))
    ref = TableRef(f"q{uuid.uuid4().hex[:8]}", "t")
    events = [FileEvent("t", location=f.location, byte_size=f.byte_size, verified=verified) for f in files]
    result = committer.commit(Batch(ref, tuple(Pending(e) for e in events)))
    assert result.zero_copy and result.files == 6
    table = seaweed.catalog().load_table((ref.namespace, ref.name))
    assert table_ids(table) == sorted(i for f in files for i in f.ids)
    per_key: Counter[tuple[str, str]] = Counter()
    for line, n in counting_s3.requests.items():
        method, target, _ = line.split(" ")
        per_key[(method, target.split("?")[0])] += n
    for f in files:
        key = "/" + f.location.removeprefix("s3://")
        assert per_key[("GET", key)] == 1, (f.location, dict(per_key))
        assert per_key[("HEAD", key)] <= 1
