"""The Kafka daemon against the real broker (Tansu), S3 store and REST catalog (SeaweedFS).

Events name parquet files staged in ``s3://warehouse/staging`` and carry no event id, so
replays after a crash are recognised only by the offsets recorded in the snapshot markers.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anyio
import pytest

from ingester.batch import Batch
from ingester.commit import CommitResult, LoadedBatch, SnapshotCommitter
from ingester.engine import Engine, EngineStats
from ingester.events import decode_event
from ingester.settings import Settings
from ingester.sources.kafka import KafkaSource
from ingester.wiring import build_engine
from tests.integration.kafka_helpers import (
    INGESTER,
    Daemon,
    Staged,
    StagedFile,
    committed_offsets,
    create_topics,
    daemon_env,
    duplicates_of,
    end_offsets,
    events_for,
    expected_ids,
    last_offsets,
    offset_markers,
    produce,
    produce_staged,
    read_topic,
    stage_files,
    table_ids,
    unique,
    wait_all_acked,
    wait_until,
)
from tests.support import duckdb_rows, s3_secret, snapshot_count


class RecordingCommitter:
    """The engine's committer, recording the windows it is handed (and slowing commits)."""

    def __init__(self, inner: SnapshotCommitter, delay_s: float = 0.0) -> None:
        self.inner = inner
        self.delay_s = delay_s
        self.windows: dict[str, set[str]] = defaultdict(set)

    def read(self, batch: Batch) -> LoadedBatch:
        return self.inner.read(batch)

    def apply(self, loaded: LoadedBatch, extra_delete_keys: Any = None) -> CommitResult:
        self.windows[str(loaded.batch.table)].add(loaded.batch.batch_id)
        time.sleep(self.delay_s)
        return self.inner.apply(loaded, extra_delete_keys)

    def apply_many(self, items: Sequence[tuple[LoadedBatch, Any]]) -> list[CommitResult]:
        """Batches of different tables waiting together in one worker (a multi-table commit)."""
        for loaded, _ in items:
            self.windows[str(loaded.batch.table)].add(loaded.batch.batch_id)
        time.sleep(self.delay_s)
        return self.inner.apply_many(items)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.fixture
def settings_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """Builds ``Settings()`` from ``INGESTER_*`` variables, as the daemon does."""

    def make(env: dict[str, str]) -> Settings:
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        return Settings()

    yield make


@pytest.fixture
def daemons(tmp_path: Path) -> Iterator[Callable[[dict[str, str], str], Daemon]]:
    """Starts ``ingester run`` processes; any still alive at the end is killed."""
    started: list[Daemon] = []

    def start(env: dict[str, str], name: str) -> Daemon:
        started.append(Daemon(env, tmp_path / f"{name}.log"))
        return started[-1]

    yield start
    for daemon in started:
        if daemon.alive():
            daemon.kill9()


def run_until_idle(engine: Engine) -> EngineStats:
    async def main() -> EngineStats:
        try:
            with anyio.fail_after(240):
                return await engine.run(exit_when_idle=True)
        finally:
            await engine.source.aclose()

    return anyio.run(main)


@pytest.fixture(scope="module")
def pool(seaweed: Any) -> list[StagedFile]:
    """Small parquet files in the staging bucket, shared by the tests (each test writes its
    own namespace, so the same file may land in several tables)."""
    return stage_files(seaweed, 3000)


class Stream:
    """One test's topics, consumer group, namespace and events."""

    def __init__(self, seaweed: Any, tansu: Any, home: Path, topics: int = 1, **env: str) -> None:
        self.seaweed, self.bootstrap = seaweed, tansu.bootstrap_servers
        self.topics, self.group, self.ns = [unique("events-") for _ in range(topics)], unique("g"), unique("ns")
        create_topics(self.bootstrap, self.topics)
        self.env = daemon_env(seaweed, tansu, home, group=self.group, topics=self.topics, namespace=self.ns, **env)
        self.sent: list[Staged] = []

    def send(self, staged: list[Staged]) -> None:
        produce_staged(self.bootstrap, self.topics, staged)
        self.sent += staged

    def check_exactly_once(self, catalog: Any) -> None:
        """Every sent row once, the offset markers at the last offsets, every offset acked."""
        markers = last_offsets(self.bootstrap, self.topics)
        for name, ids in expected_ids(self.sent).items():
            table = catalog.load_table((self.ns, name))
            got = table_ids(table)
            assert duplicates_of(got) == {}, f"{name}: duplicated rows"
            assert got == ids, f"{name}: {len(got)} rows, expected {len(ids)}"
            assert offset_markers(table, self.group) == markers[name]
        assert committed_offsets(self.bootstrap, self.group, self.topics) == end_offsets(self.bootstrap, self.topics)

    def catalog(self) -> Any:
        return self.seaweed.catalog()


def test_three_topics_thousands_of_events_land_exactly_once(
    seaweed: Any, tansu: Any, tmp_path: Path, settings_env: Any, pool: list[StagedFile]
) -> None:
    # zero-copy off: the 3000 tiny files are rewritten into one data file per snapshot, which
    # keeps the read-back quick (zero-copy registration is covered by the crash tests)
    stream = Stream(seaweed, tansu, tmp_path / "home", topics=3, INGESTER_WINDOW__MAX_BATCH_FILES="200",
                    INGESTER_WINDOW__MAX_BATCH_AGE_S="2", INGESTER_COMMIT__ZERO_COPY="false")
    tables = ["orders", "users", "clicks", "carts", "items", "reviews"]
    stream.send(events_for(pool, tables))
    engine = build_engine(settings_env(stream.env))
    assert isinstance(engine.source, KafkaSource) and engine.source.group == stream.group
    recorder = RecordingCommitter(engine.committer)
    engine.committer = recorder  # type: ignore[assignment]
    started = time.monotonic()
    stats = run_until_idle(engine)
    print(f"ingested 3000 events in {time.monotonic() - started:.1f}s: {stats}")

    assert (stats.events, stats.rows, stats.dead_letters, stats.duplicates) == (3000, 9000, 0, 0)
    ends = end_offsets(stream.bootstrap, stream.topics)
    assert sum(ends.values()) == 3000 and len(ends) == 9
    stream.check_exactly_once(recorder.inner.catalog)
    for name, ids in expected_ids(stream.sent).items():
        table = recorder.inner.catalog.load_table((stream.ns, name))
        assert duckdb_rows(table, "SELECT count(*), count(DISTINCT id), min(id), max(id) FROM t", s3_secret(seaweed)) == [
            (len(ids), len(ids), ids[0], ids[-1])]
        windows = len(recorder.windows[f"{stream.ns}.{name}"])
        committed = engine.metrics.registry.get_sample_value("ingester_snapshots_total", {"table": f"{stream.ns}.{name}"})
        assert snapshot_count(table) == windows == committed


TABLES = ["orders", "users", "items"]  # keyed to partitions 0, 2 and 1


@pytest.mark.parametrize("crash", ["before-commit:1", "after-commit:1", "mid-window"])
def test_kill_9_at_any_point_and_restart_gives_exact_rows(
    crash: str, seaweed: Any, tansu: Any, tmp_path: Path, pool: list[StagedFile], daemons: Any
) -> None:
    stream = Stream(seaweed, tansu, tmp_path / "home", topics=2, INGESTER_WINDOW__MAX_BATCH_FILES="40",
                    INGESTER_WINDOW__MAX_BATCH_AGE_S="1")
    events = events_for(pool[:300], TABLES)
    if crash == "mid-window":  # killed from outside while events stream in and windows are open
        stream.send(events[:100])
        first = daemons(stream.env, "first")
        wait_until("a first snapshot", lambda: first.metric("ingester_snapshots_total") >= 1, 60)
        sent = 100
        while first.metric("ingester_inflight_bytes") == 0:  # until admitted events wait in open windows
            assert first.alive() and sent < len(events), first.log()
            stream.send(events[sent:sent + 5])
            sent += 5
            time.sleep(0.2)
        first.kill9()
        stream.send(events[sent:])
    else:  # the fault hook SIGKILLs the daemon just before / just after its first snapshot commit
        stream.send(events)
        first = daemons({**stream.env, "INGESTER_TEST_CRASH": crash}, "first")
        assert first.wait(120) == -9, first.log()
    catalog = stream.catalog()
    before = {n: len(table_ids(catalog.load_table((stream.ns, n)))) for n in TABLES if catalog.table_exists((stream.ns, n))}
    assert 0 < sum(before.values()) < 900  # some committed, not all

    second = daemons(stream.env, "second")
    wait_all_acked(stream.bootstrap, stream.group, stream.topics)
    duplicates = second.metric("ingester_duplicate_events_total")
    assert second.terminate() == 0, second.log()
    stream.check_exactly_once(catalog)
    if crash == "after-commit:1":  # the first snapshot was never acked: its events came again
        assert duplicates > 0
    print(f"{crash}: rows before restart {before}, duplicates skipped after restart {duplicates:.0f}")


def test_a_second_daemon_joins_and_leaves_mid_stream(
    seaweed: Any, tansu: Any, tmp_path: Path, pool: list[StagedFile], daemons: Any
) -> None:
    stream = Stream(seaweed, tansu, tmp_path / "home", topics=2, INGESTER_WINDOW__MAX_BATCH_FILES="20",
                    INGESTER_WINDOW__MAX_BATCH_AGE_S="1")
    events = events_for(pool[300:900], TABLES)
    stream.send(events[:60])
    a = daemons(stream.env, "a")
    b_committed = threading.Event()
    sent = [60]

    def feed() -> None:
        """The stream goes on while b joins, until b committed: 8 events a second, so the pool
        lasts about 55 s (at 40 a second it ran dry 11 s in, and on a loaded machine b's start
        and rebalance outlasted it: b was given partitions nothing more came to)."""
        step = 4
        while not b_committed.is_set() and sent[0] < len(events) - 100:
            stream.send(events[sent[0]:sent[0] + step])
            sent[0] += step
            time.sleep(0.5)

    with ThreadPoolExecutor(1) as producer:
        fed = producer.submit(feed)
        wait_until("a first snapshot", lambda: a.metric("ingester_snapshots_total") >= 1, 60)
        assert f'ingester_partition_lag{{partition="{stream.topics[0]}/0"}}' in a.scrape()
        b = daemons(stream.env, "b")
        wait_until("b to commit", lambda: b.metric("ingester_snapshots_total") >= 1, 90)
        b_committed.set()
        fed.result()
        assert b.terminate() == 0, b.log()  # drains, commits, acks and leaves the group
    assert "partitions assigned: events-" in b.log() and a.log().count("partitions revoked") >= 1
    wait_until("a to take b's partitions back", lambda: a.log().count("partitions revoked") >= 2, 60)
    stream.send(events[sent[0]:])  # only a is left to read these
    wait_all_acked(stream.bootstrap, stream.group, stream.topics)
    assert a.terminate() == 0, a.log()
    stream.check_exactly_once(stream.catalog())


SIX = ["orders", "clicks", "items", "reviews", "users", "payments"]  # keyed two to each of partitions 0, 1, 2


def assignments(members: list[Daemon]) -> list[set[str]]:
    """Each member's partitions, from the last assignment its log shows."""
    out = []
    for m in members:
        lines = [ln for ln in m.log().splitlines() if "partitions assigned: " in ln]
        last = lines[-1].split("partitions assigned: ", 1)[1].strip() if lines else "none"
        out.append(set() if last == "none" else set(last.split(", ")))
    return out


@pytest.mark.parametrize("keyed", [True, False], ids=["keyed-by-table", "unkeyed"])
def test_three_daemons_in_one_group_make_one_snapshot_per_table_per_window(
    keyed: bool, seaweed: Any, tansu: Any, tmp_path: Path, pool: list[StagedFile], daemons: Any
) -> None:
    stream = Stream(seaweed, tansu, tmp_path / "home", INGESTER_WINDOW__MAX_BATCH_FILES="1000",
                    INGESTER_WINDOW__MAX_BATCH_AGE_S="4")
    members = [daemons(stream.env, name) for name in "abc"]

    def settled() -> bool:
        owned = assignments(members)
        assert all(m.alive() for m in members), [m.log() for m in members]
        return all(len(o) == 1 for o in owned) and len(set.union(*owned)) == 3

    wait_until("three members owning one partition each", settled, 120)
    events = events_for(pool[1400:1760], SIX)  # 60 events per table, in one burst
    if keyed:  # as every producer of the project publishes: keyed by table
        stream.send(events)
    else:  # the counter-example: any partition for any event
        produce(stream.bootstrap, stream.topics[0], [e.payload for e in events], [None] * len(events))  # type: ignore[list-item]
        stream.sent += events
    wait_all_acked(stream.bootstrap, stream.group, stream.topics)
    snapshots = [m.metric("ingester_snapshots_total") for m in members]
    for m in members:
        assert m.terminate() == 0, m.log()
    catalog = stream.catalog()
    per_table = {t: snapshot_count(catalog.load_table((stream.ns, t))) for t in SIX}
    if keyed:  # each table's events on one partition: one member holds the table's one window
        assert all(len(parts) == 1 for parts in last_offsets(stream.bootstrap, stream.topics).values())
        assert snapshots == [2, 2, 2] and per_table == dict.fromkeys(SIX, 1)
        stream.check_exactly_once(catalog)
    else:  # every member has a window of every table: three snapshots each
        assert snapshots == [6, 6, 6] and per_table == dict.fromkeys(SIX, 3)
        assert {t: table_ids(catalog.load_table((stream.ns, t))) for t in SIX} == expected_ids(events)


def test_slow_commits_pause_partitions_and_keep_the_member_in_its_group(
    seaweed: Any, tansu: Any, tmp_path: Path, settings_env: Any, pool: list[StagedFile]
) -> None:
    files = pool[900:930]
    limit = 4 * max(f.byte_size for f in files)
    # a member that stops polling for 2.5 s is dropped by its own consumer: it must keep polling
    stream = Stream(seaweed, tansu, tmp_path / "home", INGESTER_WINDOW__MAX_BATCH_FILES="2",
                    INGESTER_WINDOW__MAX_BATCH_AGE_S="0.5", INGESTER_WINDOW__MAX_INFLIGHT_BYTES=str(limit),
                    INGESTER_SOURCE__KAFKA_OPTIONS='{"max_poll_interval_ms": 2500}')
    stream.send(events_for(files, TABLES))
    engine = build_engine(settings_env(stream.env))
    recorder = RecordingCommitter(engine.committer, delay_s=0.7)
    engine.committer = recorder  # type: ignore[assignment]
    started = time.monotonic()
    stats = run_until_idle(engine)
    elapsed = time.monotonic() - started
    member = engine.source.statistics()  # type: ignore[attr-defined]
    print(f"backpressure: {elapsed:.1f}s, {stats}, {member}")
    assert (stats.events, stats.rows) == (30, 90)
    assert stats.pauses >= 1 and 0 < stats.peak_inflight_bytes <= limit
    assert elapsed > 5  # twice the poll interval, mostly paused
    assert (member.assignments, member.revocations) == (1, 0)  # never left, never rejoined
    stream.check_exactly_once(recorder.inner.catalog)


def bad_events(seaweed: Any, ns: str) -> list[tuple[bytes, str]]:
    """Two of each kind of bad event, and the reason its dead letter must give."""
    s3 = seaweed.s3_client()
    out: list[tuple[bytes, str]] = []
    for i in range(2):
        corrupt = f"staging/{ns}/corrupt-{i}.parquet"
        s3.put_object(Bucket="warehouse", Key=corrupt, Body=b"PAR1 this is no parquet PAR1")

        def env(**fields: Any) -> bytes:
            return json.dumps(fields).encode()

        out += [
            (f"{{not json {i}".encode(), "not JSON"),
            (f"[{i}]".encode(), "envelope must be a JSON object"),
            (env(table="orders", rows=i), "exactly one of fields 'location' and 'data'"),
            (env(table=f"bad name {i}", location=f"s3://warehouse/staging/{i}.parquet"), "field 'table'"),
            (env(v=2, table="orders", location=f"s3://warehouse/staging/v{i}.parquet"), "unsupported envelope version"),
            (env(table="orders", location=f"s3://warehouse/staging/m{i}.parquet", write_disposition="merge"),
             "merge needs a primary_key"),
            (env(table="orders", location=f"s3://warehouse/elsewhere/{i}.parquet", rows=1, bytes=100),
             "outside the allowed prefixes"),
            (env(table="orders", location=f"http://example.com/{i}.parquet", rows=1, bytes=100),
             "unsupported location scheme"),
            (env(table="orders", location=f"s3://warehouse/staging/{ns}/missing-{i}.parquet", rows=1, bytes=100),
             "file not found"),
            (env(table="orders", location=f"s3://warehouse/{corrupt}", rows=1, bytes=100), "not a readable parquet file"),
        ]
    return out


def test_malformed_events_go_to_the_dead_letter_topic_and_the_rest_is_committed(
    seaweed: Any, tansu: Any, tmp_path: Path, settings_env: Any, pool: list[StagedFile]
) -> None:
    dead = unique("dead-")
    stream = Stream(seaweed, tansu, tmp_path / "home", INGESTER_DEADLETTER__TOPIC=dead,
                    INGESTER_WINDOW__MAX_BATCH_AGE_S="0.5")
    create_topics(stream.bootstrap, [dead])
    good = events_for(pool[1000:1180], TABLES)
    bad = bad_events(seaweed, stream.ns)
    assert len(bad) == 20
    stream_items = [(s.payload, s.event.table.encode()) for s in good]
    for i, item in enumerate(bad):  # every 10th event is bad
        stream_items.insert(i * 10 + 5, (item[0], b"bad"))
    produce(stream.bootstrap, stream.topics[0], [p for p, _ in stream_items], [k for _, k in stream_items])
    stream.sent = good
    engine = build_engine(settings_env(stream.env))
    stats = run_until_idle(engine)
    engine.deadletters.close()
    assert (stats.events, stats.dead_letters) == (188, 20)  # 8 named unreadable files were admitted

    where = {r.value: f"{stream.topics[0]}/{r.partition}@{r.offset}"
             for r in read_topic(stream.bootstrap, stream.topics[0], len(stream_items))}
    letters = {}
    for record in read_topic(stream.bootstrap, dead, 20):
        letter = json.loads(record.value)
        letters[f"{letter['partition']}@{letter['offset']}"] = letter
    assert len(letters) == 20
    for payload, reason in bad:
        letter = letters[where[payload]]
        assert reason in letter["reason"], letter
        original = base64.b64decode(letter["payload_b64"])
        if letter["table"] is None:  # undecodable: the payload as it came
            assert original == payload
        else:  # decoded but unreadable: the event, re-encoded
            assert letter["table"] == f"{stream.ns}.orders"
            assert decode_event(original).location == json.loads(payload)["location"]
    stream.check_exactly_once(engine.committer.catalog)


@pytest.mark.parametrize("auth", ["oauth2", "token", "sigv4"])
def test_rest_catalog_auth_oauth2_bearer_sigv4(
    auth: str, seaweed: Any, tansu: Any, tmp_path: Path, settings_env: Any, pool: list[StagedFile]
) -> None:
    stream = Stream(seaweed, tansu, tmp_path / "home", auth=auth, INGESTER_WINDOW__MAX_BATCH_AGE_S="0.5")
    stream.send(events_for(pool[1200:1230], TABLES))
    engine = build_engine(settings_env(stream.env))
    assert (run_until_idle(engine).rows) == 90
    stream.check_exactly_once(engine.committer.catalog)


@pytest.mark.parametrize(("auth", "variable", "wrong", "message"), [
    ("oauth2", "INGESTER_CATALOG__CREDENTIAL", "admin:wrong-secret-4711", "OAuthError: invalid_client"),
    ("token", "INGESTER_CATALOG__TOKEN", "wrong-token-4711", "UnauthorizedError: NotAuthorizedException: Bearer token"),
    ("sigv4", "INGESTER_CATALOG__PROPERTIES", '{"client.secret-access-key": "wrong-secret-4711"}',
     "ForbiddenError: ForbiddenException: The request signature we calculated does not match"),
])
def test_wrong_catalog_credentials_fail_clearly_without_showing_a_secret(
    auth: str, variable: str, wrong: str, message: str, seaweed: Any, tansu: Any, tmp_path: Path,
    pool: list[StagedFile],
) -> None:
    stream = Stream(seaweed, tansu, tmp_path / "home", auth=auth, INGESTER_WINDOW__MAX_BATCH_AGE_S="0.5")
    stream.send(events_for(pool[1300:1303], TABLES))  # a bearer token is first checked by a commit
    env = {**os.environ, **stream.env, variable: wrong}
    run = subprocess.run([INGESTER, "run", "--exit-when-idle"], env=env, capture_output=True, text=True, timeout=120)
    output = run.stdout + run.stderr
    assert run.returncode == 1, output
    assert "stopped on an error" in output and message in output
    assert "Traceback" not in output
    assert "4711" not in output and seaweed.secret_key not in output
