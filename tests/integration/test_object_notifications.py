"""Bucket sources, notifications: AWS-format S3 events on Kafka, and SeaweedFS filer events
published by a real ``weed`` to the real broker, landing in Iceberg once each."""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from boto3.s3.transfer import TransferConfig
from prometheus_client.parser import text_string_to_metric_families

from ingester.object_events import decode_filer_event
from ingester.testing.localstack import SeaweedServer
from tests.integration.kafka_helpers import (
    Daemon, committed_offsets, create_topics, daemon_env, end_offsets, produce, read_topic, unique, wait_all_acked,
    wait_until,
)
from tests.integration.object_helpers import dead_letters, object_settings, put_parquet, run_once, s3_event
from tests.support import duckdb_rows, s3_secret


def test_aws_format_events_on_kafka_land_once(seaweed: Any, tansu: Any, tmp_path: Path) -> None:
    bucket, topic, namespace = unique("aws"), unique("s3events"), unique("ns_")
    seaweed.ensure_bucket(bucket)
    s3 = seaweed.s3_client()
    a = put_parquet(s3, bucket, "in/orders/dt=2026-12-01/a file+é.parquet")
    b = put_parquet(s3, bucket, "in/orders/dt=2026-12-02/b.parquet")
    c = put_parquet(s3, bucket, "in/items/c.parquet")
    stray = put_parquet(s3, bucket, "misc/stray.parquet")
    bridge = {"version": "0", "detail-type": "Object Created", "source": "aws.s3",
              "detail": {"bucket": {"name": bucket}, "object": {"key": b.key, "size": b.size, "etag": b.etag}}}
    minio = {"EventName": "s3:ObjectCreated:Put", "Key": f"{bucket}/{a.key}", "Records": s3_event(a, name="s3:ObjectCreated:Put")["Records"]}
    payloads = [s3_event(a, c), bridge, minio, s3_event(stray), {"Service": "Amazon S3", "Event": "s3:TestEvent"},
                s3_event(b, name="ObjectRemoved:Delete")]
    create_topics(tansu.bootstrap_servers, [topic], 1)
    produce(tansu.bootstrap_servers, topic, [json.dumps(p).encode() for p in payloads], [b"k"] * len(payloads))
    home = tmp_path / "home"
    source = {"kind": "kafka", "format": "s3-events", "bootstrap_servers": tansu.bootstrap_servers, "topics": [topic],
              "session_timeout_ms": 3000}
    stats = run_once(object_settings(seaweed, home, bucket, namespace, group_id="g1", **source))
    catalog = seaweed.catalog()
    orders, items = catalog.load_table((namespace, "orders")), catalog.load_table((namespace, "items"))
    for table, expected in ((orders, sorted(a.ids + b.ids)), (items, sorted(c.ids))):
        assert sorted(table.scan().to_arrow().column("id").to_pylist()) == expected
        assert [r[0] for r in duckdb_rows(table, "SELECT id FROM t ORDER BY id", s3_secret(seaweed))] == expected
    assert stats.duplicates == 1  # a, announced by S3 and again by MinIO
    assert [d["reason"] for d in dead_letters(home)] == [
        f"invalid event at {topic}/0@3: no route matches key 'misc/stray.parquet' in bucket {bucket!r} (routes: 'in/{{table}}/**')"
    ]
    assert committed_offsets(tansu.bootstrap_servers, "g1", [topic], 1) == end_offsets(tansu.bootstrap_servers, [topic], 1)
    snapshots = len(orders.metadata.snapshots)
    stats = run_once(object_settings(seaweed, tmp_path / "home2", bucket, namespace, group_id="g2", **source))
    orders.refresh()
    assert sorted(orders.scan().to_arrow().column("id").to_pylist()) == sorted(a.ids + b.ids)
    assert len(orders.metadata.snapshots) == snapshots and stats.duplicates == 4 and stats.snapshots == 0


def sample(daemon: Daemon, name: str, **labels: str) -> float:
    return sum(s.value for fam in text_string_to_metric_families(daemon.scrape()) for s in fam.samples
               if s.name == name and all(s.labels.get(k) == v for k, v in labels.items()))


def big_parquet(first_id: int, rows: int) -> tuple[bytes, list[int]]:
    """Over 10 MB (random bytes do not compress): a multipart upload of 5 MB parts."""
    ids = list(range(first_id, first_id + rows))
    rng = np.random.default_rng(7)
    blobs = pa.array([rng.bytes(16) for _ in range(rows)], pa.binary())
    out = io.BytesIO()
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "blob": blobs}), out)
    return out.getvalue(), ids


def test_seaweedfs_puts_land_through_filer_events(tansu: Any, tmp_path: Path) -> None:
    topic, namespace, group = unique("filer"), unique("ns_"), unique("g")
    create_topics(tansu.bootstrap_servers, [topic], 3)  # the broker first: weed exits if it cannot reach it
    server = SeaweedServer.start(tmp_path / "weed", buckets=("lake",), notify_kafka=(tansu.bootstrap_servers, topic))
    home = tmp_path / "home"
    env = daemon_env(server, tansu, home, group=group, topics=[topic], namespace=namespace,
                     INGESTER_SOURCE__FORMAT="seaweedfs-filer",
                     INGESTER_OBJECTS__ROUTES='[{"pattern": "in/{table}/**"}]', INGESTER_OBJECTS__BUCKETS='["lake"]',
                     INGESTER_STORAGE__ALLOWED_PREFIXES='["s3://lake/"]', INGESTER_WINDOW__MAX_BATCH_AGE_S="0.5",
                     INGESTER_MAINTENANCE__ENABLED="false")
    daemon = Daemon(env, tmp_path / "daemon.log")
    try:
        s3 = server.s3_client()
        small = put_parquet(s3, "lake", "in/orders/dt=2026-12-01/small.parquet")
        body, big_ids = big_parquet(1_000_000, 480_000)
        assert len(body) > 10 * 1024 * 1024
        s3.upload_fileobj(io.BytesIO(body), "lake", "in/orders/dt=2026-12-01/big.parquet",
                          Config=TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024))
        s3.put_object(Bucket="lake", Key="in/orders/folder/", Body=b"")  # a directory
        s3.put_object(Bucket="lake", Key="in/orders/_SUCCESS", Body=b"")  # not a data file (empty, another suffix)
        expected = sorted(small.ids) + big_ids

        catalog = server.catalog()

        def landed() -> bool:
            try:
                table = catalog.load_table((namespace, "orders"))
            except Exception:
                return False
            return table.scan().to_arrow().num_rows >= len(expected)

        wait_until("the two objects to land", landed, 120)
        table = catalog.load_table((namespace, "orders"))
        assert sorted(table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist()) == expected
        assert duckdb_rows(table, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM t", s3_secret(server)) == [
            (len(expected), len(expected), expected[0], expected[-1])]
        assert len(list(table.scan().plan_files())) == 2  # the multipart object once, as one file (its parts are not)

        # the filer event's etag is the one S3 reports (the listing path keys identity by it)
        ends = end_offsets(tansu.bootstrap_servers, [topic])
        records = read_topic(tansu.bootstrap_servers, topic, sum(ends.values()))
        refs = {r.location: r for rec in records for r in decode_filer_event(rec.key, rec.value)}
        for key in ("in/orders/dt=2026-12-01/small.parquet", "in/orders/dt=2026-12-01/big.parquet"):
            head = s3.head_object(Bucket="lake", Key=key)
            assert refs[f"s3://lake/{key}"].etag == head["ETag"].strip('"')
            assert refs[f"s3://lake/{key}"].size == head["ContentLength"]
        assert refs["s3://lake/in/orders/dt=2026-12-01/big.parquet"].etag.endswith("-3")

        wait_all_acked(tansu.bootstrap_servers, group, [topic])
        unfinished = sample(daemon, "ingester_objects_skipped_total", source="seaweedfs-filer", reason="not_finished")
        before = sum(end_offsets(tansu.bootstrap_servers, [topic]).values())
        s3.delete_object(Bucket="lake", Key="in/orders/dt=2026-12-01/small.parquet")  # a delete: nothing to load
        wait_until("the delete event", lambda: sum(end_offsets(tansu.bootstrap_servers, [topic]).values()) > before, 30)
        wait_all_acked(tansu.bootstrap_servers, group, [topic])
        table.refresh()
        assert table.scan().to_arrow().num_rows == len(expected)
        assert dead_letters(home) == []
        assert sample(daemon, "ingester_objects_loaded_total", source="seaweedfs-filer") == 2
        assert sample(daemon, "ingester_objects_skipped_total", source="seaweedfs-filer", reason="not_a_data_file") == 1
        assert sample(daemon, "ingester_objects_skipped_total", source="seaweedfs-filer", reason="not_finished") == unfinished + 1
        assert sample(daemon, "ingester_objects_discovered_total", source="seaweedfs-filer") == (
            2 + 1 + sample(daemon, "ingester_objects_skipped_total", source="seaweedfs-filer", reason="other_bucket"))
        assert sample(daemon, "ingester_dead_letters_total") == 0
        assert daemon.terminate() == 0
    finally:
        if daemon.alive():
            daemon.kill9()
        server.stop()
