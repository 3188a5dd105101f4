"""Listing discovery on the real servers: files in SeaweedFS S3, tables in each catalog.

A file whose notification was dropped lands by the relist within one interval (beside a Kafka
source carrying envelopes, on the real broker), a file announced and listed lands once, a prefix
re-listed after its snapshots were expired adds nothing, and a backfill of 1,000 files killed
with SIGKILL and started again loads every file exactly once."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ingester.batch import TableRef
from ingester.catalog import open_catalog
from ingester.engine import Engine
from ingester.events import FileEvent, encode_event
from ingester.iceberg_layer import markers as mk
from ingester.metrics import Metrics
from ingester.object_keys import ObjectRef
from ingester.settings import Settings, SourceSettings
from ingester.sources.kafka import KafkaEventQueue, producer_options
from ingester.sources.listers import ListingFailed, StoreLister
from ingester.sources.listing import ListingSource
from ingester.sources.merged import MergedSource
from ingester.wiring import build_engine, build_maintenance
from tests.integration.kafka_helpers import create_topics
from tests.support import CatalogUnderTest, catalog_env, duckdb_rows

BUCKET = "landing"
INGESTER = str(Path(sys.executable).parent / "ingester")
ROUTE = "{namespace}/{table}/**"


def store(cat: CatalogUnderTest, seaweed: Any) -> dict[str, Any]:
    """``Settings.catalog``: the catalog under test, and SeaweedFS as the store the files are in."""
    if cat.kind == "rest":
        return cat.settings
    return {"s3_endpoint": seaweed.s3_endpoint, "s3_access_key_id": seaweed.access_key,
            "s3_secret_access_key": seaweed.secret_key, "s3_region": seaweed.region}


def put_file(client: Any, key: str, ids: list[int]) -> ObjectRef:
    buf = io.BytesIO()
    pq.write_table(pa.table({"file_id": pa.array(ids, pa.int64())}), buf)
    body = buf.getvalue()
    etag = client.put_object(Bucket=BUCKET, Key=key, Body=body)["ETag"]
    return ObjectRef(f"s3://{BUCKET}/{key}", len(body), etag)


def file_ids(cat: CatalogUnderTest, settings: Settings, ns: str, table: str) -> tuple[list[int], list[tuple[Any, ...]]]:
    """The table's file ids by pyiceberg (sorted) and DuckDB's count / distinct count."""
    loaded = open_catalog(settings.catalog, settings.home_dir).load_table((ns, table))
    ids = sorted(loaded.scan().to_arrow().column("file_id").to_pylist())
    return ids, duckdb_rows(loaded, "SELECT count(*), count(DISTINCT file_id) FROM t", cat.s3)


def wait_for(check: Callable[[], bool], timeout_s: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"not within {timeout_s:.0f} s: {what}")
        time.sleep(0.2)
    return time.monotonic() - started


@pytest.fixture
def landing(seaweed: Any) -> Any:
    seaweed.ensure_bucket(BUCKET)
    return seaweed.s3_client()


class Running:
    """An engine running in a thread until ``stop``."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            anyio.run(self.engine.run)
        except BaseException as exc:  # shown by stop()
            self.error = exc

    def stop(self) -> None:
        wait_for(lambda: self.engine.ready or not self._thread.is_alive(), 30, "engine running")
        self.engine.stop(20)
        self._thread.join(60)
        assert self.error is None, self.error


@pytest.fixture
def running() -> Iterator[list[Running]]:
    engines: list[Running] = []
    yield engines
    for r in engines:
        if r._thread.is_alive():
            r.stop()


def test_a_file_whose_notification_was_dropped_lands_by_the_relist_within_one_interval_and_one_announced_and_listed_lands_once(
    any_catalog: CatalogUnderTest, seaweed: Any, tansu: Any, landing: Any, tmp_path: Path, running: list[Running]
) -> None:
    ns, topic, interval = f"r{uuid.uuid4().hex[:8]}", f"notify-{uuid.uuid4().hex[:8]}", 3.0
    create_topics(tansu.bootstrap_servers, [topic], 1)
    source = {"kind": "kafka", "bootstrap_servers": tansu.bootstrap_servers, "topics": [topic],
              "group_id": f"g-{ns}", "session_timeout_ms": 3000}
    settings = Settings(
        home=tmp_path / "home", catalog=store(any_catalog, seaweed), source=source, window={"max_batch_age_s": 0.5},
        objects={"prefixes": [f"s3://{BUCKET}/{ns}/"], "routes": [{"pattern": ROUTE}], "relist_interval_s": interval},
    )
    announced = put_file(landing, f"{ns}/events/announced.parquet", [1, 2])
    queue = KafkaEventQueue(producer_options(SourceSettings(**source)), topic)
    try:  # announced on the queue (our envelope, the object's identity as event id) and listed too
        queue.put_many([encode_event(FileEvent("events", ns, announced.location, byte_size=announced.size,
                                               event_id=announced.event_id()))])
    finally:
        queue.close()
    engine = build_engine(settings)
    assert isinstance(engine.source, MergedSource)
    listing = engine.source.sources[1]
    assert isinstance(listing, ListingSource)
    running.append(Running(engine))
    wait_for(lambda: listing.statistics().rounds >= 1 and not listing.statistics().inflight, 60, "the start round")
    assert wait_for(lambda: engine.statistics().rows >= 2, 30, "the announced file")

    dropped = put_file(landing, f"{ns}/events/dropped.parquet", [3, 4, 5])  # its notification never comes
    took = wait_for(lambda: engine.statistics().rows >= 5, interval + 10, "the dropped file, by listing")
    time.sleep(interval + 1)  # one more relist: nothing more lands
    running[0].stop()
    ids, duck = file_ids(any_catalog, settings, ns, "events")
    assert ids == [1, 2, 3, 4, 5] and duck == [(5, 5)], (ids, duck, took)
    assert engine.statistics().rows == 5 and dropped.size > 0


def test_the_listing_daemon_loads_a_new_file_within_one_interval_and_dead_letters_an_unroutable_key_once(
    seaweed: Any, landing: Any, tmp_path: Path, running: list[Running]
) -> None:
    ns, interval = f"d{uuid.uuid4().hex[:8]}", 2.0
    cat = CatalogUnderTest("sql", {})
    settings = Settings(
        home=tmp_path / "home", catalog=store(cat, seaweed), source={"kind": "listing"}, window={"max_batch_age_s": 0.5},
        objects={"prefixes": [f"s3://{BUCKET}/{ns}/"], "routes": [{"pattern": ROUTE}], "listing_interval_s": interval},
    )
    put_file(landing, f"{ns}/stray.parquet", [0])  # no {namespace}/{table}/ in its key
    engine = build_engine(settings)
    running.append(Running(engine))
    wait_for(lambda: engine.statistics().dead_letters == 1, 30, "the unroutable key dead-lettered")
    put_file(landing, f"{ns}/events/new.parquet", [1, 2])
    wait_for(lambda: engine.statistics().rows == 2, interval + 10, "the new file, by listing")
    time.sleep(2 * interval)  # more rounds: the stray key is not dead-lettered again
    running[0].stop()
    assert engine.statistics().dead_letters == 1
    letters = (settings.deadletter_folder / "deadletters.jsonl").read_text().splitlines()
    assert len(letters) == 1 and f"no route matches key '{ns}/stray.parquet' in bucket '{BUCKET}'" in letters[0]
    ids, duck = file_ids(cat, settings, ns, "events")
    assert ids == [1, 2] and duck == [(2, 2)]


def test_a_prefix_relisted_after_its_snapshots_were_expired_adds_nothing(
    any_catalog: CatalogUnderTest, seaweed: Any, landing: Any, tmp_path: Path
) -> None:
    ns, files = f"x{uuid.uuid4().hex[:8]}", 6
    settings = Settings(
        home=tmp_path / "home", catalog=store(any_catalog, seaweed), source={"kind": "listing"},
        window={"max_batch_files": 2, "max_batch_age_s": 60}, objects={
            "prefixes": [f"s3://{BUCKET}/{ns}/"], "routes": [{"pattern": ROUTE}], "max_inflight_files": 2},
        maintenance={"enabled": False, "retain_last": 1, "max_snapshots": 2, "expire_older_than_s": 0,
                     "min_input_files": 1000},
    )
    refs = [put_file(landing, f"{ns}/events/f{i}.parquet", [i]) for i in range(files)]

    def backfill() -> tuple[Any, Metrics]:
        metrics = Metrics()
        engine = build_engine(settings, metrics=metrics, listing_rounds=1)
        return anyio.run(lambda: engine.run(exit_when_idle=True)), metrics

    first, _ = backfill()
    assert (first.events, first.rows, first.snapshots) == (files, files, files // 2)
    catalog = open_catalog(settings.catalog, settings.home_dir)
    report = build_maintenance(settings, catalog).run(TableRef(ns, "events"))
    assert report.error is None, report.error
    table = catalog.load_table((ns, "events"))
    assert len(table.metadata.snapshots) == 1
    retained = {i for s in table.metadata.snapshots for i in json.loads(s.summary.additional_properties.get(mk.EVENT_IDS, "[]"))}
    assert refs[0].event_id() not in retained  # only the ledger knows the first files now

    again, metrics = backfill()
    assert (again.events, again.rows, again.snapshots) == (0, 0, 0)
    skipped = metrics.registry.get_sample_value("ingester_objects_skipped_total", {"source": "listing", "reason": "already_loaded"})
    assert skipped == files
    ids, duck = file_ids(any_catalog, settings, ns, "events")
    assert ids == list(range(files)) and duck == [(files, files)]


def test_kill_9_mid_backfill_of_1000_files_then_a_restart_loads_every_file_exactly_once(
    seaweed: Any, landing: Any, tmp_path: Path
) -> None:
    ns, files = f"k{uuid.uuid4().hex[:8]}", 1000
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda i: put_file(landing, f"{ns}/events/{i:04d}.parquet", [i]), range(files)))
    cat = CatalogUnderTest("sql", {})
    env = {**os.environ, **catalog_env(store(cat, seaweed)), "INGESTER_HOME": str(tmp_path / "home"),
           "INGESTER_WINDOW__MAX_BATCH_FILES": "100", "INGESTER_WINDOW__MAX_BATCH_AGE_S": "30",
           "INGESTER_LOG_LEVEL": "WARNING"}
    args = [INGESTER, "backfill", f"s3://{BUCKET}/{ns}/", "--route", ROUTE]
    crashed = subprocess.run(args, env={**env, "INGESTER_TEST_CRASH": "after-commit:3"}, capture_output=True, text=True,
                             timeout=300)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    settings = Settings(home=tmp_path / "home", catalog=store(cat, seaweed))
    before, _ = file_ids(cat, settings, ns, "events")
    assert 0 < len(before) < files and len(set(before)) == len(before)

    done = subprocess.run(args, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"backfill: {files - len(before)} files loaded ({files - len(before)} rows" in done.stdout
    assert f"{len(before)} skipped as already loaded" in done.stdout
    ids, duck = file_ids(cat, settings, ns, "events")
    assert ids == list(range(files)) and duck == [(files, files)]


def test_s3_listing_pages_with_etags_shows_a_multipart_upload_once_finished_and_names_a_missing_bucket(
    seaweed: Any, landing: Any
) -> None:
    ns = f"p{uuid.uuid4().hex[:8]}"
    refs = [put_file(landing, f"{ns}/events/f{i}.parquet", [i]) for i in range(5)]
    key = f"{ns}/events/big.parquet"
    upload = landing.create_multipart_upload(Bucket=BUCKET, Key=key)["UploadId"]
    parts = [landing.upload_part(Bucket=BUCKET, Key=key, UploadId=upload, PartNumber=n, Body=bytes([n]) * (5 * 1024 * 1024))
             for n in (1, 2)]
    lister = StoreLister(seaweed.s3_client, page_objects=2)
    pages = list(lister.pages(f"s3://{BUCKET}/{ns}/"))
    assert [len(p) for p in pages] == [2, 2, 1]  # the unfinished upload's parts are not objects
    assert [o.ref for p in pages for o in p] == refs  # location, size and etag: the same identity as at PUT
    landing.complete_multipart_upload(Bucket=BUCKET, Key=key, UploadId=upload, MultipartUpload={
        "Parts": [{"ETag": p["ETag"], "PartNumber": n} for n, p in zip((1, 2), parts)]})
    listed = [o.ref for p in lister.pages(f"s3://{BUCKET}/{ns}/") for o in p]
    big = [r for r in listed if r.location.endswith("big.parquet")]
    assert len(listed) == 6 and len(big) == 1 and big[0].size == 10 * 1024 * 1024
    with pytest.raises(ListingFailed, match="cannot list s3://no-such-bucket-x/a/: NoSuchBucket"):
        list(lister.pages("s3://no-such-bucket-x/a/"))
