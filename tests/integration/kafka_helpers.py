"""Helpers for the Kafka daemon tests: topics, staged files and their events, daemons as
subprocesses, and reading back Kafka offsets and Iceberg tables."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from prometheus_client.parser import text_string_to_metric_families
from pyiceberg.table import Table

from ingester.events import FileEvent, encode_event
from ingester.iceberg_layer import markers
from ingester.settings import SourceSettings
from ingester.sources.kafka import KafkaEventQueue, partition_name, producer_options
from ingester.storage import s3_filesystem
from ingester.testing.localstack import free_port
from tests.support import rest_catalog_settings

INGESTER = str(Path(sys.executable).parent / "ingester")
STAGING = "s3://warehouse/staging"
SESSION_TIMEOUT_MS = 3000
_ids = itertools.count()


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def create_topics(bootstrap: str, topics: Sequence[str], partitions: int = 3) -> None:
    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(t, partitions, 1) for t in topics])
        finally:
            await admin.close()

    asyncio.run(create())


@dataclass(frozen=True)
class StagedFile:
    """A small parquet file in the staging bucket; ``id`` values are unique across files."""

    location: str
    ids: tuple[int, ...]
    byte_size: int


@dataclass(frozen=True)
class Staged:
    """An event naming a staged file, for one table. No event id: replays are recognised by
    the offsets in the snapshot markers only."""

    event: FileEvent
    ids: tuple[int, ...]

    @property
    def payload(self) -> bytes:
        return encode_event(self.event)


def stage_files(seaweed: Any, count: int, rows_per_file: int = 3) -> list[StagedFile]:
    """Write ``count`` small parquet files under ``STAGING``, in parallel."""
    fs = s3_filesystem(seaweed.s3_endpoint, seaweed.access_key, seaweed.secret_key, seaweed.region)
    run = unique("pool")

    def write(n: int) -> StagedFile:
        ids = tuple(next(_ids) for _ in range(rows_per_file))
        data = pa.table({"id": pa.array(ids, pa.int64()), "note": [f"row {i}" for i in ids]})
        key = f"warehouse/staging/{run}/{n}.parquet"
        with fs.open_output_stream(key) as out:
            pq.write_table(data, out)
        return StagedFile(f"s3://{key}", ids, fs.get_file_info(key).size)

    with ThreadPoolExecutor(16) as pool:
        return list(pool.map(write, range(count)))


def events_for(files: Sequence[StagedFile], tables: Sequence[str]) -> list[Staged]:
    """One event per file, tables round robin (a stream of mixed tables)."""
    return [
        Staged(FileEvent(table=tables[i % len(tables)], location=f.location, row_count=len(f.ids), byte_size=f.byte_size), f.ids)
        for i, f in enumerate(files)
    ]


def produce(bootstrap: str, topic: str, payloads: Sequence[bytes], keys: Sequence[bytes]) -> None:
    """Through the project's own producer: acks=all, key = table name."""
    queue = KafkaEventQueue(producer_options(SourceSettings(kind="kafka", bootstrap_servers=bootstrap)), topic)
    try:
        assert queue.put_many(payloads, keys) == len(payloads)
    finally:
        queue.close()


def produce_staged(bootstrap: str, topics: Sequence[str], staged: Sequence[Staged]) -> None:
    """Spread the events over ``topics`` round robin, keyed by table."""
    for n, topic in enumerate(topics):
        items = staged[n::len(topics)]
        produce(bootstrap, topic, [s.payload for s in items], [s.event.table.encode() for s in items])


def expected_ids(staged: Iterable[Staged]) -> dict[str, list[int]]:
    out: dict[str, list[int]] = {}
    for s in staged:
        out.setdefault(s.event.table, []).extend(s.ids)
    return {t: sorted(ids) for t, ids in out.items()}


async def _with_consumer(bootstrap: str, group: str | None, fn: Callable[[AIOKafkaConsumer], Any]) -> Any:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        return await fn(consumer)
    finally:
        await consumer.stop()


def _partitions(topics: Sequence[str], partitions: int) -> list[TopicPartition]:
    return [TopicPartition(t, p) for t in topics for p in range(partitions)]


def end_offsets(bootstrap: str, topics: Sequence[str], partitions: int = 3) -> dict[str, int]:
    """End of each partition, from the high watermark of fetch responses (Tansu 0.6 answers
    ListOffsets "latest" with 1 once a batch of several records was produced)."""
    async def read(consumer: AIOKafkaConsumer) -> dict[str, int]:
        tps = _partitions(topics, partitions)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        while any(consumer.highwater(tp) is None for tp in tps):
            await consumer.getmany(timeout_ms=100)
        return {partition_name(tp): consumer.highwater(tp) for tp in tps}

    return asyncio.run(_with_consumer(bootstrap, None, read))


def committed_offsets(bootstrap: str, group: str, topics: Sequence[str], partitions: int = 3) -> dict[str, int]:
    """The group's committed offsets (0 where nothing is committed)."""
    async def read(consumer: AIOKafkaConsumer) -> dict[str, int]:
        return {partition_name(tp): (await consumer.committed(tp)) or 0 for tp in _partitions(topics, partitions)}

    return asyncio.run(_with_consumer(bootstrap, group, read))


def read_topic(bootstrap: str, topic: str, expected: int, partitions: int = 3, timeout_s: float = 20) -> list[Any]:
    """Every record of ``topic`` from the beginning (waits for ``expected``, then a bit more)."""
    async def read(consumer: AIOKafkaConsumer) -> list[Any]:
        tps = _partitions([topic], partitions)
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        got: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while len(got) < expected and time.monotonic() < deadline:
            got += [r for rs in (await consumer.getmany(timeout_ms=300)).values() for r in rs]
        got += [r for rs in (await consumer.getmany(timeout_ms=500)).values() for r in rs]
        return got

    return asyncio.run(_with_consumer(bootstrap, None, read))


def wait_until(what: str, check: Callable[[], bool], timeout_s: float, every_s: float = 0.3) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f} s waiting for {what}")
        time.sleep(every_s)


def wait_all_acked(bootstrap: str, group: str, topics: Sequence[str], timeout_s: float = 90) -> None:
    """Wait until the group committed every partition up to its end (everything is in Iceberg)."""
    ends = end_offsets(bootstrap, topics)
    wait_until(f"group {group} to ack {ends}", lambda: committed_offsets(bootstrap, group, topics) == ends, timeout_s, 1.0)


def daemon_env(seaweed: Any, tansu: Any, home: Path, *, group: str, topics: Sequence[str], namespace: str,
               auth: str = "oauth2", **extra: str) -> dict[str, str]:
    """``INGESTER_*`` variables of a Kafka daemon on the real servers (``extra``: more of them)."""
    catalog = rest_catalog_settings(seaweed, auth)
    env = {f"INGESTER_CATALOG__{k.upper()}": str(v).lower() if isinstance(v, bool) else str(v) for k, v in catalog.items()}
    topic_list = ",".join(f'"{t}"' for t in topics)
    return {
        **env,
        "INGESTER_HOME": str(home),
        "INGESTER_SOURCE__KIND": "kafka",
        "INGESTER_SOURCE__BOOTSTRAP_SERVERS": tansu.bootstrap_servers,
        "INGESTER_SOURCE__TOPICS": f"[{topic_list}]",
        "INGESTER_SOURCE__GROUP_ID": group,
        "INGESTER_SOURCE__SESSION_TIMEOUT_MS": str(SESSION_TIMEOUT_MS),
        "INGESTER_STORAGE__STAGING": STAGING,
        "INGESTER_STORAGE__ALLOWED_PREFIXES": f'["{STAGING}"]',
        "INGESTER_ROUTING__NAMESPACE": namespace,
        **extra,
    }


class Daemon:
    """``ingester run`` in its own process group, logging to a file, with a metrics port."""

    def __init__(self, env: Mapping[str, str], log_path: Path) -> None:
        self.port = free_port()
        self.log_path = log_path
        full = {**os.environ, **env, "INGESTER_METRICS__PORT": str(self.port)}
        with open(log_path, "ab") as out:
            self.proc = subprocess.Popen([INGESTER, "run"], env=full, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)

    def scrape(self) -> str:
        """The ``/metrics`` page ("" while the endpoint is not up)."""
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=2) as resp:
                return str(resp.read().decode())
        except OSError:
            return ""

    def metric(self, name: str) -> float:
        """Sum of the samples called ``name`` (0 while the endpoint is not up)."""
        return sum(s.value for fam in text_string_to_metric_families(self.scrape()) for s in fam.samples if s.name == name)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 60) -> int:
        """SIGTERM (drain, commit, ack, leave the group); returns the exit code."""
        if self.alive():
            os.killpg(self.proc.pid, signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def wait(self, timeout_s: float = 60) -> int:
        return self.proc.wait(timeout_s)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


def table_ids(table: Table) -> list[int]:
    table.refresh()
    return sorted(table.scan(selected_fields=("id",)).to_arrow().column("id").to_pylist())


def duplicates_of(ids: Sequence[int]) -> dict[int, int]:
    return {i: n for i, n in Counter(ids).items() if n > 1}


def offset_markers(table: Table, group: str) -> dict[str, int]:
    """The cumulative offsets of ``group`` recorded in the table's current snapshot."""
    table.refresh()
    snap = table.current_snapshot()
    assert snap is not None and snap.summary is not None
    return {p: int(o) for p, o in json.loads(snap.summary.additional_properties[markers.OFFSETS_PREFIX + group]).items()}


def last_offsets(bootstrap: str, topics: Sequence[str]) -> dict[str, dict[str, int]]:
    """Highest offset per event key (table) and partition, read back from the topics."""
    ends = end_offsets(bootstrap, topics)
    out: dict[str, dict[str, int]] = {}
    for topic in topics:
        expected = sum(n for p, n in ends.items() if p.rpartition("/")[0] == topic)
        for record in read_topic(bootstrap, topic, expected):
            offsets = out.setdefault(record.key.decode(), {})
            name = f"{topic}/{record.partition}"
            offsets[name] = max(offsets.get(name, -1), record.offset)
    return out
