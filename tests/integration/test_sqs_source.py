"""The SQS source against moto's server mode, a protocol double (no real SQS server exists
here): receive, delete below the watermark, redelivery after the visibility timeout; and S3
notifications over SQS naming objects of the real SeaweedFS, landing once in Iceberg."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import boto3
import pytest

from ingester.errors import is_transient
from ingester.sources.sqs import SqsSource
from ingester.testing.localstack import free_port
from tests.integration.kafka_helpers import unique
from tests.integration.object_helpers import dead_letters, object_settings, put_parquet, run_once, s3_event
from tests.support import duckdb_rows, s3_secret

REGION = "us-east-1"


@pytest.fixture(scope="module")
def moto_sqs() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{server._port}"
    finally:
        server.stop()


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)


def sqs_client(endpoint: str) -> Any:
    return boto3.client("sqs", endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing")


def queue_counts(client: Any, url: str) -> tuple[int, int]:
    attrs = client.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages",
                                                                      "ApproximateNumberOfMessagesNotVisible"])["Attributes"]
    return int(attrs["ApproximateNumberOfMessages"]), int(attrs["ApproximateNumberOfMessagesNotVisible"])


def test_receive_delete_below_the_watermark_and_redelivery(moto_sqs: str, aws_env: None) -> None:
    client = sqs_client(moto_sqs)
    url = client.create_queue(QueueName=unique("q"))["QueueUrl"]
    for n in range(3):
        client.send_message(QueueUrl=url, MessageBody=f"m{n}")
    source = SqsSource(url, endpoint_url=moto_sqs, region=REGION, wait_time_s=0, visibility_timeout_s=1, max_messages=2)

    async def scenario() -> None:
        got: list[Any] = []
        while len(got) < 3:
            polled = await source.poll(10, 0.2)
            assert len(polled) <= 2  # sqs_max_messages
            got += polled
        assert sorted(m.payload for m in got) == [b"m0", b"m1", b"m2"]
        assert [m.position.offset for m in got] == [0, 1, 2] and {m.position.partition for m in got} == {source.partition}
        by_offset = {m.position.offset: m.payload for m in got}
        await source.commit({source.partition: 2})  # the first two are in Iceberg: deleted
        assert queue_counts(client, url) == (0, 1) and await source.is_idle()  # the third is in flight, invisible
        await anyio.sleep(1.5)  # the third was not deleted: visible again after the visibility timeout
        again = []
        deadline = time.monotonic() + 10
        while not again and time.monotonic() < deadline:
            again = await source.poll(10, 0.2)
        assert [m.payload for m in again] == [by_offset[2]] and again[0].position.offset == 3
        source.pause()
        assert await source.poll(10, 0.01) == []
        source.resume()
        await source.commit({source.partition: 4})
        assert source.statistics() == {"received": 4, "deleted": 4, "outstanding": 0}
        await source.aclose()

    anyio.run(scenario)
    assert queue_counts(client, url) == (0, 0)


def test_s3_notifications_over_sqs_land_once(moto_sqs: str, aws_env: None, seaweed: Any, tmp_path: Path) -> None:
    bucket = unique("sqs")
    seaweed.ensure_bucket(bucket)
    s3 = seaweed.s3_client()
    a = put_parquet(s3, bucket, "in/orders/dt=2026-12-01/a file.parquet")
    b = put_parquet(s3, bucket, "in/orders/dt=2026-12-02/b.parquet")
    stray = put_parquet(s3, bucket, "elsewhere/c.parquet")
    client = sqs_client(moto_sqs)
    url = client.create_queue(QueueName=unique("events"))["QueueUrl"]
    sns = {"Type": "Notification", "MessageId": "1", "TopicArn": "arn:aws:sns:us-east-1:1:t", "Message": json.dumps(s3_event(a))}
    for body in [sns, s3_event(b), s3_event(a), s3_event(stray), {"Service": "Amazon S3", "Event": "s3:TestEvent"}]:
        client.send_message(QueueUrl=url, MessageBody=json.dumps(body))
    namespace = unique("ns_")
    settings = object_settings(seaweed, tmp_path / "home", bucket, namespace, kind="sqs", format="s3-events",
                               sqs_queue_url=url, sqs_endpoint=moto_sqs, sqs_region=REGION, sqs_wait_time_s=0)

    stats = run_once(settings)
    table = seaweed.catalog().load_table((namespace, "orders"))
    expected = sorted(a.ids + b.ids)
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == expected
    assert [r[0] for r in duckdb_rows(table, "SELECT id FROM t ORDER BY id", s3_secret(seaweed))] == expected
    assert stats.duplicates == 1 and queue_counts(client, url) == (0, 0)
    assert [d["reason"] for d in dead_letters(tmp_path / "home")] == [
        f"invalid event at {SqsSource(url).partition}@3: no route matches key 'elsewhere/c.parquet' in bucket {bucket!r} "
        "(routes: 'in/{table}/**')"
    ]
    client.send_message(QueueUrl=url, MessageBody=json.dumps(s3_event(b)))  # announced again later
    snapshots = len(table.metadata.snapshots)
    stats = run_once(settings)
    table.refresh()
    assert sorted(table.scan().to_arrow().column("id").to_pylist()) == expected
    assert len(table.metadata.snapshots) == snapshots and stats.duplicates == 1 and queue_counts(client, url) == (0, 0)


def test_an_unreachable_queue_is_a_transient_error(aws_env: None) -> None:
    """The engine's retry policy retries it (until shutdown), it does not stop the daemon."""
    source = SqsSource("http://127.0.0.1:1/000000000000/q", endpoint_url=f"http://127.0.0.1:{free_port()}", region=REGION)

    async def poll() -> None:
        try:
            await source.poll(10, 0.2)
        finally:
            await source.aclose()

    with pytest.raises(ConnectionError, match="SQS receive") as caught:
        anyio.run(poll)
    assert is_transient(caught.value)
