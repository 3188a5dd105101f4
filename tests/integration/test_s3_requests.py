"""What a small file on S3 costs in requests: its footer read (one ranged GET, which for a file
no longer than ``footers.TAIL_BYTES`` is the whole file; a HEAD first only when the event does
not say the file's size, or says a wrong one) is all that is fetched; the table's as-is copy
and the page check read those bytes again, not the store. Counted by a pass-through proxy in
front of SeaweedFS's S3."""

from __future__ import annotations

import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingester.batch import Batch, Pending, TableRef
from ingester.catalog import open_catalog
from ingester.commit import SnapshotCommitter
from ingester.errors import is_auth_failure, is_transient
from ingester.events import FileEvent
from ingester.iceberg_layer.footers import TAIL_BYTES
from ingester.publish import Stager
from ingester.settings import CatalogSettings
from ingester.storage import FileReader, s3_filesystem
from tests.integration.faults import FaultPlan, FaultProxy
from tests.integration.kafka_helpers import STAGING, stage_files, table_ids
from tests.support import rest_catalog_settings


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
    per_key = _requests_per_key(counting_s3)
    for f in files:
        key = "/" + f.location.removeprefix("s3://")
        assert per_key[("GET", key)] == 1, (f.location, dict(per_key))
        assert per_key[("HEAD", key)] == 0, (f.location, dict(per_key))  # the event gave the size


def _requests_per_key(proxy: FaultProxy) -> Counter[tuple[str, str]]:
    per_key: Counter[tuple[str, str]] = Counter()
    for line, n in proxy.requests.items():
        method, target, _ = line.split(" ")
        per_key[(method, target.split("?")[0])] += n
    return per_key


def test_the_event_need_not_say_the_size(seaweed: Any, counting_s3: FaultProxy) -> None:
    """The footer read is a suffix-range GET: an event without ``bytes`` costs no HEAD either."""
    files = stage_files(seaweed, 3)
    fs = s3_filesystem(counting_s3.url, seaweed.access_key, seaweed.secret_key, seaweed.region)
    committer = SnapshotCommitter(seaweed.catalog(), FileReader([STAGING], fs))
    ref = TableRef(f"q{uuid.uuid4().hex[:8]}", "t")
    events = [FileEvent("t", location=f.location, verified=True) for f in files]
    result = committer.commit(Batch(ref, tuple(Pending(e) for e in events)))
    assert result.files == 3 and not result.rejected, result
    table = seaweed.catalog().load_table((ref.namespace, ref.name))
    assert table_ids(table) == sorted(i for f in files for i in f.ids)
    per_key = _requests_per_key(counting_s3)
    for f in files:
        key = "/" + f.location.removeprefix("s3://")
        assert (per_key[("GET", key)], per_key[("HEAD", key)]) == (1, 0), dict(per_key)


def test_a_footer_longer_than_the_first_read_is_fetched_whole(seaweed: Any, counting_s3: FaultProxy) -> None:
    """A file whose footer alone is longer than ``TAIL_BYTES`` (1,500 columns) lands whole:
    the rest of its footer comes in a second ranged GET."""
    fs = s3_filesystem(seaweed.s3_endpoint, seaweed.access_key, seaweed.secret_key, seaweed.region)
    key = f"warehouse/staging/{uuid.uuid4().hex}/wide.parquet"
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64()), **{f"c{i:04d}": pa.array([i, None, -i]) for i in range(1500)}})
    with fs.open_output_stream(key) as out:
        pq.write_table(data, out)
    assert pq.read_metadata(fs.open_input_file(key)).serialized_size > TAIL_BYTES
    proxied = s3_filesystem(counting_s3.url, seaweed.access_key, seaweed.secret_key, seaweed.region)
    committer = SnapshotCommitter(seaweed.catalog(), FileReader([STAGING], proxied))
    ref = TableRef(f"q{uuid.uuid4().hex[:8]}", "t")
    result = committer.commit(Batch(ref, (Pending(FileEvent("t", location=f"s3://{key}", verified=True)),)))
    assert result.files == 1 and not result.rejected, result
    back = seaweed.catalog().load_table((ref.namespace, ref.name)).scan().to_arrow()
    assert back.sort_by("id").select(data.column_names).equals(data)


def test_a_commit_writes_each_small_object_with_one_put(seaweed: Any, counting_s3: FaultProxy, tmp_path: Path) -> None:
    """The table's copies, manifests, manifest list and metadata file of a commit through the
    daemon's catalog are one ``PutObject`` each, not a three-request multipart upload; three
    small files make one copy."""
    files = stage_files(seaweed, 3)
    catalog = open_catalog(CatalogSettings(**(rest_catalog_settings(seaweed) | {"s3_endpoint": counting_s3.url})),
                           tmp_path / "home")
    fs = s3_filesystem(counting_s3.url, seaweed.access_key, seaweed.secret_key, seaweed.region)
    committer = SnapshotCommitter(catalog, FileReader([STAGING], fs))
    ref = TableRef(f"q{uuid.uuid4().hex[:8]}", "t")
    events = [FileEvent("t", location=f.location, byte_size=f.byte_size, verified=True) for f in files]
    counting_s3.requests.clear()
    assert committer.commit(Batch(ref, tuple(Pending(e) for e in events))).files == 3
    table = seaweed.catalog().load_table((ref.namespace, ref.name))
    assert table_ids(table) == sorted(i for f in files for i in f.ids)
    lines = [line.split(" ")[:2] for line, n in counting_s3.requests.items() for _ in range(n)]
    assert not [t for m, t in lines if m == "POST"], lines  # no multipart upload started
    data_puts = [t for m, t in lines if m == "PUT" and "/data/" in t]
    # the three small files joined into one data file (ingester.commit.joining): one request
    assert len(data_puts) == len(set(data_puts)) == 1, lines
    assert any(m == "PUT" and t.endswith(".avro") for m, t in lines), lines  # pyiceberg's own writes went here too


def test_an_empty_or_broken_object_is_set_aside_not_retried(seaweed: Any) -> None:
    """An empty object (its suffix-range GET is answered 416), one shorter than a footer and one
    without a footer are rejected as unreadable, naming the file; the good file beside them lands."""
    fs = s3_filesystem(seaweed.s3_endpoint, seaweed.access_key, seaweed.secret_key, seaweed.region)
    good = stage_files(seaweed, 1)[0]
    run = uuid.uuid4().hex
    broken = {"empty": b"", "short": b"PAR1", "junk": b"x" * 5000}
    for name, body in broken.items():
        with fs.open_output_stream(f"warehouse/staging/{run}/{name}.parquet") as out:
            out.write(body)
    committer = SnapshotCommitter(seaweed.catalog(), FileReader([STAGING], fs))
    ref = TableRef(f"q{uuid.uuid4().hex[:8]}", "t")
    events = [FileEvent("t", location=f"{STAGING}/{run}/{name}.parquet") for name in broken]
    result = committer.commit(Batch(ref, tuple(Pending(e) for e in [*events, FileEvent("t", location=good.location)])))
    assert result.files == 1 and len(result.rejected) == 3, result
    for name, rejected in zip(broken, result.rejected):
        assert f"{name}.parquet: not a readable parquet file" in rejected.reason, rejected.reason
    assert table_ids(seaweed.catalog().load_table((ref.namespace, ref.name))) == sorted(good.ids)


def test_refused_credentials_on_a_source_file_stop_the_read_not_the_file(seaweed: Any) -> None:
    """The store refusing our key is not the file's fault: the read raises it (the daemon stops
    with "authentication failed") instead of setting the file aside as unreadable."""
    good = stage_files(seaweed, 1)[0]
    fs = s3_filesystem(seaweed.s3_endpoint, seaweed.access_key, "not-the-secret", seaweed.region)
    committer = SnapshotCommitter(seaweed.catalog(), FileReader([STAGING], fs))
    batch = Batch(TableRef(f"q{uuid.uuid4().hex[:8]}", "t"), (Pending(FileEvent("t", location=good.location)),))
    with pytest.raises(OSError) as refused:
        committer.read(batch)
    assert is_auth_failure(refused.value) and not is_transient(refused.value)
    assert "not-the-secret" not in str(refused.value)


def test_publish_stages_each_small_file_with_one_put(seaweed: Any, counting_s3: FaultProxy, tmp_path: Path) -> None:
    """``ingester publish`` to an ``s3://`` staging prefix: one ``PutObject`` per small file
    (pyarrow's copy was a multipart upload: three requests), the object byte for byte the file;
    a refused upload raises naming the object and no secret."""
    fs = s3_filesystem(counting_s3.url, seaweed.access_key, seaweed.secret_key, seaweed.region)
    prefix = f"{STAGING}/publish-{uuid.uuid4().hex[:8]}"
    stager = Stager(prefix, fs)
    paths = []
    for i in range(3):
        paths.append(tmp_path / f"{i}.parquet")
        pq.write_table(pa.table({"id": pa.array(range(i * 100, i * 100 + 100), pa.int64())}), paths[-1])
    counting_s3.requests.clear()
    staged = [stager.stage(p, p.name) for p in paths]
    assert staged == [f"{prefix}/{p.name}" for p in paths]
    lines = [line.split(" ")[:2] for line, n in counting_s3.requests.items() for _ in range(n)]
    assert sorted(m for m, _ in lines) == ["PUT"] * 3, lines
    for p, location in zip(paths, staged, strict=True):
        with fs.open_input_stream(location.removeprefix("s3://")) as got:
            assert got.read() == p.read_bytes()
    refused = Stager(prefix, s3_filesystem(counting_s3.url, seaweed.access_key, "not-the-secret", seaweed.region))
    with pytest.raises(OSError) as caught:
        refused.stage(paths[0], "refused.parquet")
    assert is_auth_failure(caught.value) and "refused.parquet" in str(caught.value) and "not-the-secret" not in str(caught.value)
