"""Real SeaweedFS (S3 + Iceberg REST) and Tansu (Kafka) servers started by ingester.testing.localstack."""

from __future__ import annotations

import asyncio
import os
import shlex
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pytest

from ingester.testing.localstack import SEAWEED_PORTS, SeaweedServer, TansuBroker, free_port, is_running, port_free

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    server = SeaweedServer.start(tmp_path_factory.mktemp("seaweed"), buckets=("warehouse", "tansu"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tansu(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TansuBroker]:
    broker = TansuBroker.start(log_path=tmp_path_factory.mktemp("tansu") / "tansu.log")
    yield broker
    broker.stop()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:10]}"


def test_free_port_pairs_are_distinct() -> None:
    ports = [free_port() for _ in range(20)]
    taken = set(ports) | {p + 10000 for p in ports}
    assert len(taken) == 40
    assert all(p < 55535 and port_free(p) and port_free(p + 10000) for p in ports)


def test_start_failure_reports_log_tail(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        ports = {name: free_port() for name in SEAWEED_PORTS} | {"s3": busy.getsockname()[1]}
        with pytest.raises(RuntimeError, match="(?s)exited with code.*tail of.*weed.log.*not available"):
            SeaweedServer.start(tmp_path, ports=ports, timeout=30)


@pytest.mark.parametrize("auth", ["oauth2", "sigv4", "token"])
def test_iceberg_rest_catalog_round_trip(seaweed: SeaweedServer, auth: str) -> None:
    from pyiceberg.catalog.rest import RestCatalog

    props = seaweed.catalog_properties(auth)
    assert ("credential" in props) == (auth == "oauth2") and ("token" in props) == (auth == "token")
    catalog = RestCatalog(auth, **props)
    namespace = unique("ns")
    catalog.create_namespace(namespace)
    assert (namespace,) in catalog.list_namespaces()
    data = pa.table({"id": pa.array([1, 2, 3], pa.int64()), "name": ["a", "b", "c"]})
    table = catalog.create_table(f"{namespace}.events", schema=data.schema)
    table.append(data)
    rows = catalog.load_table(f"{namespace}.events").scan().to_arrow()
    assert rows.num_rows == 3
    assert sorted(rows.column("id").to_pylist()) == [1, 2, 3]


def test_bad_token_is_refused(seaweed: SeaweedServer) -> None:
    from pyiceberg.catalog.rest import RestCatalog
    from pyiceberg.exceptions import UnauthorizedError

    with pytest.raises(UnauthorizedError):
        RestCatalog("bad", **seaweed.catalog_properties("token", token="not-a-token")).list_namespaces()


def test_s3_put_get(seaweed: SeaweedServer) -> None:
    s3 = seaweed.s3_client()
    key = unique("objects/") + ".bin"
    s3.put_object(Bucket="warehouse", Key=key, Body=b"hello seaweed")
    assert s3.get_object(Bucket="warehouse", Key=key)["Body"].read() == b"hello seaweed"
    seaweed.ensure_bucket("extra")
    seaweed.ensure_bucket("extra")  # idempotent
    assert "extra" in {b["Name"] for b in s3.list_buckets()["Buckets"]}


async def produce(bootstrap: str, topic: str, values: list[bytes]) -> None:
    from aiokafka import AIOKafkaProducer

    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value)
    finally:
        await producer.stop()


async def consume_all(bootstrap: str, topic: str, expected: int) -> list[bytes]:
    """Read every partition from the beginning until ``expected`` messages, then a bit more."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        await consumer.topics()  # refresh metadata
        partitions = consumer.partitions_for_topic(topic) or set()
        assert partitions, f"topic {topic} not found"
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got: list[bytes] = []
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 20
        while len(got) < expected and loop.time() < deadline:
            for messages in (await consumer.getmany(timeout_ms=500)).values():
                got += [m.value for m in messages]
        for messages in (await consumer.getmany(timeout_ms=500)).values():  # nothing extra
            got += [m.value for m in messages]
        return got
    finally:
        await consumer.stop()


def test_kafka_produce_consume(tansu: TansuBroker) -> None:
    topic, values = unique("topic-"), [f"message-{i}".encode() for i in range(10)]
    asyncio.run(produce(tansu.bootstrap_servers, topic, values))
    assert sorted(asyncio.run(consume_all(tansu.bootstrap_servers, topic, 10))) == sorted(values)


def test_kafka_s3_storage_survives_restart(seaweed: SeaweedServer, tmp_path: Path) -> None:
    broker = TansuBroker.start(storage="s3://tansu/", env=seaweed.s3_env(), log_path=tmp_path / "tansu.log")
    try:
        topic, values = unique("durable-"), [f"kept-{i}".encode() for i in range(5)]
        asyncio.run(produce(broker.bootstrap_servers, topic, values))
        old_pid = broker.pid
        broker.restart()
        assert broker.pid != old_pid and not is_running(old_pid, "tansu")
        assert sorted(asyncio.run(consume_all(broker.bootstrap_servers, topic, 5))) == sorted(values)
    finally:
        broker.stop()
    assert not is_running(broker.pid, "tansu")


def run_stack(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(REPO / "deploy" / "local-stack"), *args],
                          capture_output=True, text=True, timeout=180, cwd=REPO)


def test_deploy_local_stack_up_env_status_down(tmp_path: Path) -> None:
    folder, pids = str(tmp_path / "stack"), []
    try:
        up = run_stack("up", "--dir", folder)
        assert up.returncode == 0, up.stderr
        env = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())
        env = {key: shlex.split(value)[0] for key, value in env.items()}
        assert set(env) == {
            "INGESTER_CATALOG__TYPE", "INGESTER_CATALOG__URI", "INGESTER_CATALOG__WAREHOUSE",
            "INGESTER_CATALOG__CREDENTIAL", "INGESTER_CATALOG__OAUTH2_SERVER_URI",
            "INGESTER_CATALOG__S3_ENDPOINT", "INGESTER_CATALOG__S3_ACCESS_KEY_ID",
            "INGESTER_CATALOG__S3_SECRET_ACCESS_KEY", "INGESTER_CATALOG__S3_REGION",
            "INGESTER_SOURCE__KIND", "INGESTER_SOURCE__BOOTSTRAP_SERVERS", "INGESTER_SOURCE__TOPICS"}
        assert env["INGESTER_SOURCE__TOPICS"] == '["ingester-events"]'
        assert 'INGESTER_SOURCE__TOPICS=\'["ingester-events"]\'' in up.stdout
        assert run_stack("env", "--dir", folder).stdout == up.stdout
        assert run_stack("status", "--dir", folder).returncode == 0

        from pyiceberg.catalog.rest import RestCatalog

        catalog = RestCatalog("stack", uri=env["INGESTER_CATALOG__URI"],
                              warehouse=env["INGESTER_CATALOG__WAREHOUSE"],
                              credential=env["INGESTER_CATALOG__CREDENTIAL"],
                              **{"oauth2-server-uri": env["INGESTER_CATALOG__OAUTH2_SERVER_URI"]})
        assert catalog.list_namespaces() == []
        bootstrap = env["INGESTER_SOURCE__BOOTSTRAP_SERVERS"]
        asyncio.run(produce(bootstrap, "ingester-events", [b"one", b"two"]))
        assert sorted(asyncio.run(consume_all(bootstrap, "ingester-events", 2))) == [b"one", b"two"]
        pids = [int(w) for line in run_stack("status", "--dir", folder).stdout.splitlines()
                for w in [line.split()[2]]]
        assert len(pids) == 2 and is_running(pids[0], "weed") and is_running(pids[1], "tansu")
    finally:
        down = run_stack("down", "--dir", folder)
    assert down.returncode == 0, down.stderr
    assert not is_running(pids[0], "weed") and not is_running(pids[1], "tansu")
    status = run_stack("status", "--dir", folder)
    assert status.returncode == 1 and status.stdout.count("stopped") == 2
    assert not list(Path("/tmp").glob(f"seaweedfs-*-{env['INGESTER_CATALOG__S3_ENDPOINT'].rsplit(':', 1)[1]}.sock"))
    assert os.path.exists(os.path.join(folder, "seaweed", "weed.log"))
