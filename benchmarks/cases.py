"""One benchmark case per process (so peak RSS is the case's own). Prints one JSON line.

    python benchmarks/cases.py CASE --data DIR --rows N [options]
"""

from __future__ import annotations

import argparse
import atexit
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ingester.allocator import prefer_jemalloc

if len(sys.argv) > 1 and sys.argv[1] in ("daemon", "latency", "small_files", "long_stream"):
    prefer_jemalloc()  # as `ingester run` does, before pyarrow loads

import anyio  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data  # noqa: E402


def peak_rss_mb() -> float:
    """This process's peak resident memory since it started, or since ``reset_peak_rss``."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def reset_peak_rss() -> None:
    """Start ``peak_rss_mb`` again from the current resident memory (Linux: ``clear_refs`` 5), so
    that a timed run's peak is its own, not the set-up's (writing and reading the input files)."""
    try:
        with open("/proc/self/clear_refs", "w") as refs:
            refs.write("5")
    except OSError:
        pass


def table_stats(table: Any) -> dict[str, Any]:
    table.refresh()
    return {"snapshots": len(table.metadata.snapshots), "data_files": len(list(table.scan().plan_files()))}


def settings_for(home: Path, data_dir: Path, **overrides: Any) -> Any:
    from ingester.settings import Settings

    overrides.setdefault("storage", {"allowed_prefixes": [data_dir.resolve().as_uri()]})
    return Settings(home=home, **overrides)


def file_events(files: list[Path], tables: int = 1, prefix: str | None = None) -> list[Any]:
    """One event per file, tables ``events_<i>`` round robin; with ``prefix`` the events name
    the copies of the files under it (``s3://...``)."""
    from dataclasses import replace

    from ingester.publish import file_event

    events = [file_event(p, f"events_{i % tables}") for i, p in enumerate(files)]
    return [replace(e, location=f"{prefix}/{p.name}") for e, p in zip(events, files)] if prefix else events


def publish_events(settings: Any, events: list[Any], chunk: int = 5_000) -> None:
    """On the configured queue, keyed by table (as ``ingester publish`` does)."""
    from ingester.events import encode_event
    from ingester.wiring import build_queue

    queue = build_queue(settings)
    for start in range(0, len(events), chunk):
        part = events[start:start + chunk]
        queue.put_many([encode_event(e) for e in part], [e.table.encode() for e in part])
    queue.close()


def publish_files(settings: Any, files: list[Path], tables: int = 1) -> None:
    publish_events(settings, file_events(files, tables))


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def create_topic(bootstrap: str, topic: str, partitions: int = 3) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    async def create() -> None:
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            await admin.create_topics([NewTopic(topic, partitions, 1)])
        finally:
            await admin.close()

    anyio.run(create)


def timed_run(engine: Any, publish: Callable[[], None]) -> tuple[Any, dict[str, float]]:
    """``engine.run(exit_when_idle=True)``, timed (``seconds``, ``cpu_s``). A Kafka consumer first
    joins its group on the empty topic (``join_s``, before the timed run), then ``publish`` runs;
    ``first_event_s``: when the source first delivered (on Kafka: the broker's fetch wait)."""
    timing: dict[str, float] = {}
    kafka = hasattr(engine.source, "statistics")

    async def join() -> None:
        started = time.perf_counter()
        while not engine.source.statistics().assigned:
            assert not await engine.source.poll(10, 0.1)
        timing["join_s"] = time.perf_counter() - started
        await anyio.to_thread.run_sync(publish)

    poll = engine.source.poll

    async def timed_poll(max_records: int, timeout_s: float) -> Any:
        got = await poll(max_records, timeout_s)
        if got and "first_event_s" not in timing:
            timing["first_event_s"] = time.perf_counter() - timing["started"]
        return got

    async def run() -> Any:
        try:
            if kafka:
                await join()
            engine.source.poll = timed_poll
            reset_peak_rss()
            cpu = cpu_seconds()
            started = timing["started"] = time.perf_counter()
            stats = await engine.run(exit_when_idle=True)
            timing["seconds"] = time.perf_counter() - started
            timing["cpu_s"] = cpu_seconds() - cpu
            return stats
        finally:
            await engine.source.aclose()  # leaves the group now, not after a session timeout

    stats = anyio.run(run)
    timing.pop("started")
    return stats, timing


def case_daemon(args: argparse.Namespace) -> dict[str, Any]:
    """Events on the queue -> committed rows (engine run only is timed). With Kafka the
    consumer first joins its group on the empty topic (timed apart: ``join_s``), then the
    events are published."""
    from ingester.wiring import build_engine, build_source

    files = data.write_files(Path(args.data), args.rows, args.rows_per_file)
    home = Path(tempfile.mkdtemp(prefix="bench-home-"))
    source = {"kind": "kafka", "bootstrap_servers": args.kafka, "topics": [f"bench-{time.time_ns()}"],
              "group_id": f"bench-{time.time_ns()}", "session_timeout_ms": 6000} if args.kafka else {}
    settings = settings_for(
        home, Path(args.data), source=source,
        window={"max_batch_files": args.max_files, "max_batch_age_s": args.age, "max_inflight_bytes": args.inflight_mb << 20,
                "max_batch_bytes": args.batch_mb << 20},
        commit={"zero_copy": not args.rewrite, "workers": 4},
    )
    if args.kafka:
        create_topic(args.kafka, settings.source.topics[0])
    else:
        publish_files(settings, files, args.tables)
    engine = build_engine(settings, source=build_source(settings))
    stats, timing = timed_run(engine, lambda: publish_files(settings, files, args.tables))
    seconds = timing["seconds"]
    cat = engine.committer.catalog
    snaps = files_ = 0
    for i in range(args.tables):
        st = table_stats(cat.load_table(("default", f"events_{i}")))
        snaps, files_ = snaps + st["snapshots"], files_ + st["data_files"]
    return {"rows": stats.rows, "seconds": seconds, "snapshots": snaps, "data_files": files_,
            "bytes": sum(p.stat().st_size for p in files), "peak_rss_mb": peak_rss_mb(), "join_s": timing.get("join_s", 0.0),
            "first_event_s": timing.get("first_event_s", 0.0)}


def case_pyiceberg_append(args: argparse.Namespace) -> dict[str, Any]:
    """The limit: one pyiceberg append of the same rows already in memory."""
    from pyiceberg.catalog.sql import SqlCatalog

    files = data.write_files(Path(args.data), args.rows, args.rows_per_file)
    df = pa.concat_tables(pq.read_table(p) for p in files)
    home = Path(tempfile.mkdtemp(prefix="bench-pyiceberg-"))
    cat = SqlCatalog("b", uri=f"sqlite:///{home}/c.db", warehouse=home.as_uri())
    cat.create_namespace("default")
    table = cat.create_table(("default", "events"), schema=df.schema)
    started = time.perf_counter()
    table.append(df)
    seconds = time.perf_counter() - started
    return {"rows": df.num_rows, "seconds": seconds, **table_stats(table),
            "bytes": sum(p.stat().st_size for p in files), "peak_rss_mb": peak_rss_mb()}


def case_latency(args: argparse.Namespace) -> dict[str, Any]:
    """Steady publish rate; latency = snapshot commit time - publish time of each event."""
    from ingester.events import encode_event
    from ingester.publish import file_event
    from ingester.wiring import build_engine, build_queue

    files = data.write_files(Path(args.data), args.rows, args.rows_per_file)
    home = Path(tempfile.mkdtemp(prefix="bench-lat-"))
    settings = settings_for(home, Path(args.data), window={"max_batch_age_s": args.age})
    engine = build_engine(settings)
    published: dict[str, float] = {}

    def producer() -> None:
        queue = build_queue(settings)
        interval = 1.0 / args.rate
        next_at = time.time()
        for i in range(int(args.rate * args.duration)):
            ev = file_event(files[i % len(files)], "events")
            ev = type(ev)(**{**{f: getattr(ev, f) for f in ev.__dataclass_fields__}, "event_id": f"e{i}"})
            published[f"e{i}"] = time.time()
            queue.put_many([encode_event(ev)])
            next_at += interval
            time.sleep(max(0.0, next_at - time.time()))
        queue.close()
        time.sleep(args.age + 2)
        engine.stop()

    thread = threading.Thread(target=producer)
    thread.start()
    anyio.run(engine.run)
    thread.join()
    table = engine.committer.catalog.load_table(("default", "events"))
    lat = []
    for snap in table.metadata.snapshots:
        ids = json.loads(snap.summary.additional_properties.get("ingester.event-ids", "[]"))
        lat += [snap.timestamp_ms / 1000 - published[i] for i in ids]
    lat.sort()
    return {"events": len(lat), "p50_s": lat[len(lat) // 2], "p99_s": lat[int(len(lat) * 0.99) - 1],
            "snapshots": len(table.metadata.snapshots), "peak_rss_mb": peak_rss_mb()}


def case_pyiceberg_upsert(args: argparse.Namespace) -> dict[str, Any]:
    """pyiceberg's own ``upsert`` of ``--merge-rows`` (half updates, half inserts) into ``--rows``."""
    from pyiceberg.catalog.sql import SqlCatalog

    base = data.events(args.rows)
    change = data.events(args.merge_rows, seed=7, first_id=args.rows - args.merge_rows // 2)
    home = Path(tempfile.mkdtemp(prefix="bench-upsert-"))
    cat = SqlCatalog("b", uri=f"sqlite:///{home}/c.db", warehouse=home.as_uri())
    cat.create_namespace("default")
    table = cat.create_table(("default", "events"), schema=base.schema)
    table.append(base)
    started = time.perf_counter()
    result = table.upsert(change, join_cols=["id"])
    seconds = time.perf_counter() - started
    return {"rows": args.merge_rows, "seconds": seconds, "updated": result.rows_updated, "inserted": result.rows_inserted,
            **table_stats(table), "peak_rss_mb": peak_rss_mb()}


def kafka_source(bootstrap: str) -> dict[str, Any]:
    """A fresh topic (3 partitions) and consumer group for one run."""
    run = time.time_ns()
    source = {"kind": "kafka", "bootstrap_servers": bootstrap, "topics": [f"bench-{run}"], "group_id": f"bench-{run}",
              "session_timeout_ms": 6000}
    create_topic(bootstrap, source["topics"][0])
    return source


def small_totals(catalog: Any, namespace: str, tables: int) -> dict[str, int]:
    snaps = 0
    for i in range(tables):
        snaps += len(catalog.load_table((namespace, f"events_{i}")).metadata.snapshots)
    return {"snapshots": snaps}


def case_small_files(args: argparse.Namespace) -> dict[str, Any]:
    """``--files`` files of ``--rows-per-file`` rows over ``--tables`` tables, published, then
    drained by a daemon on the DEFAULT settings (as a new user runs it). Only the engine run
    is timed (process start-up is its own case, ``startup``). On Kafka + S3 (``--kafka`` and
    ``--catalog-json``): the events name copies of the files under ``--prefix``, the tables are
    in the REST catalog, and the consumer joins its group before the timed run."""
    from ingester.wiring import build_engine

    # the count only: a list of 20,000 paths is 5 MB that the engine run's peak RSS would carry
    file_count = len(data.write_small_files(Path(args.data), args.files, args.rows_per_file))
    home = Path(tempfile.mkdtemp(prefix="bench-small-"))
    namespace = f"small{time.time_ns()}"
    extra: dict[str, Any] = {"routing": {"namespace": namespace}}
    if args.kafka:
        extra |= {"source": kafka_source(args.kafka), "catalog": json.loads(args.catalog_json),
                  "storage": {"allowed_prefixes": [args.prefix]}}
    settings = settings_for(home, Path(args.data), **extra)
    publisher = [sys.executable, __file__, "publish_small", "--data", args.data, "--files", str(args.files),
                 "--rows-per-file", str(args.rows_per_file), "--tables", str(args.tables), "--home", str(home)]
    if args.kafka:
        publisher += ["--kafka", args.kafka, "--topic", settings.source.topics[0], "--prefix", args.prefix]

    def publish() -> None:
        # by a producer process of its own, as ``ingester publish`` is: the daemon's peak RSS is
        # its own, not what 20,000 events built and encoded here would leave in its heap
        subprocess.run(publisher, check=True, stdout=subprocess.DEVNULL)

    if not args.kafka:
        publish()
    engine = build_engine(settings)
    stats, timing = timed_run(engine, publish)
    return {"files": file_count, "rows": stats.rows, "events": stats.events, "duplicates": stats.duplicates,
            **timing, **small_totals(engine.committer.catalog, namespace, args.tables), "peak_rss_mb": peak_rss_mb()}


def baseline_tables(args: argparse.Namespace, files: list[Path]) -> list[Any]:
    """Empty tables ``events_<i>`` in an in-memory pyiceberg catalog, schema of the files."""
    from pyiceberg.catalog.memory import InMemoryCatalog

    home = Path(tempfile.mkdtemp(prefix="bench-baseline-"))
    cat = InMemoryCatalog("b", warehouse=home.as_uri())
    cat.create_namespace("default")
    schema = pq.read_schema(files[0])
    return [cat.create_table(("default", f"events_{i}"), schema=schema) for i in range(args.tables)]


def case_add_files(args: argparse.Namespace) -> dict[str, Any]:
    """The limit for small files: one pyiceberg ``add_files`` per table over all of its files
    (in-memory catalog; the files are registered where they are)."""
    files = data.write_small_files(Path(args.data), args.files, args.rows_per_file)
    tables = baseline_tables(args, files)
    cpu, started = cpu_seconds(), time.perf_counter()
    for i, table in enumerate(tables):
        table.add_files([str(p) for p in files[i::args.tables]])
    seconds = time.perf_counter() - started
    return {"files": len(files), "rows": len(files) * args.rows_per_file, "seconds": seconds, "cpu_s": cpu_seconds() - cpu,
            "snapshots": sum(len(t.metadata.snapshots) for t in tables), "peak_rss_mb": peak_rss_mb()}


def case_append_per_file(args: argparse.Namespace) -> dict[str, Any]:
    """The naive consumer: read each file and ``append`` it, one snapshot per file (the first
    ``--files-limit`` files only: its cost grows with every snapshot)."""
    files = data.write_small_files(Path(args.data), args.files, args.rows_per_file)[: args.files_limit or None]
    tables = baseline_tables(args, files)
    cpu, started = cpu_seconds(), time.perf_counter()
    for i, path in enumerate(files):
        tables[i % args.tables].append(pq.read_table(path))
    seconds = time.perf_counter() - started
    return {"files": len(files), "rows": len(files) * args.rows_per_file, "seconds": seconds, "cpu_s": cpu_seconds() - cpu,
            "snapshots": sum(len(t.metadata.snapshots) for t in tables), "peak_rss_mb": peak_rss_mb()}


def case_long_stream(args: argparse.Namespace) -> dict[str, Any]:
    """``--files`` tiny files to one table, one commit per file (``window.max_batch_files=1``),
    other settings default. Per ``--segment`` commits: wall time, the metadata file's size and
    the snapshots in it at the segment's end, peak RSS so far."""
    from ingester.wiring import build_engine

    files = data.write_small_files(Path(args.data), args.files, args.rows_per_file)
    home = Path(tempfile.mkdtemp(prefix="bench-long-"))
    settings = settings_for(home, Path(args.data), window={"max_batch_files": 1})
    publish_files(settings, files)
    engine = build_engine(settings)
    committer = engine.committer
    apply_many = committer.apply_many  # the daemon's commits, one table or several at once
    segments: list[dict[str, Any]] = []
    state = {"commits": 0, "since": 0.0}

    def measured_apply(items: Any) -> Any:
        results = apply_many(items)
        for result in results:
            if result.snapshot_id is not None:
                state["commits"] += 1
                measure()
        return results

    def measure() -> None:
        if state["commits"] % args.segment == 0:
            now = time.perf_counter()
            table = committer.catalog.load_table(("default", "events_0"))
            size = Path(table.metadata_location.removeprefix("file://")).stat().st_size
            segments.append({"commits": state["commits"], "seconds": now - state["since"], "metadata_kb": size / 1024,
                             "snapshots": len(table.metadata.snapshots), "peak_rss_mb": peak_rss_mb()})
            state["since"] = time.perf_counter()  # the measurement itself is not counted

    committer.apply_many = measured_apply  # type: ignore[method-assign]
    state["since"] = time.perf_counter()
    stats, timing = timed_run(engine, lambda: None)
    return {"files": len(files), "commits": state["commits"], "rows": stats.rows, **timing, "segments": segments,
            "peak_rss_mb": peak_rss_mb()}


def case_publish_small(args: argparse.Namespace) -> dict[str, Any]:
    """The small files' events over ``--tables`` tables on the spool of ``--home`` (for a timed
    ``ingester run`` after), or on the Kafka ``--topic`` naming the copies under ``--prefix``."""
    files = data.write_small_files(Path(args.data), args.files, args.rows_per_file)
    extra = {"source": {"kind": "kafka", "bootstrap_servers": args.kafka, "topics": [args.topic]}} if args.kafka else {}
    settings = settings_for(Path(args.home), files[0].parent, **extra)
    started = time.perf_counter()
    publish_events(settings, file_events(files, args.tables, args.prefix if args.kafka else None))
    return {"files": len(files), "seconds": time.perf_counter() - started}


CASES = {"daemon": case_daemon, "pyiceberg_append": case_pyiceberg_append, "latency": case_latency,
         "pyiceberg_upsert": case_pyiceberg_upsert, "small_files": case_small_files, "add_files": case_add_files,
         "append_per_file": case_append_per_file, "long_stream": case_long_stream, "publish_small": case_publish_small}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("case", choices=sorted(CASES))
    p.add_argument("--data", required=True)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--rows-per-file", type=int, default=100_000)
    p.add_argument("--tables", type=int, default=1)
    p.add_argument("--rewrite", action="store_true", help="disable zero-copy")
    p.add_argument("--kafka", default=None, help="bootstrap servers: use the Kafka source")
    p.add_argument("--max-files", type=int, default=1000)
    p.add_argument("--age", type=float, default=10.0)
    p.add_argument("--inflight-mb", type=int, default=1024)
    p.add_argument("--batch-mb", type=int, default=512)
    p.add_argument("--rate", type=float, default=20.0)
    p.add_argument("--duration", type=float, default=20.0)
    p.add_argument("--merge-rows", type=int, default=200_000)
    p.add_argument("--files", type=int, default=2_000, help="small files: how many")
    p.add_argument("--files-limit", type=int, default=0, help="append_per_file: only the first N files")
    p.add_argument("--segment", type=int, default=1_000, help="long_stream: commits per measured segment")
    p.add_argument("--prefix", default=None, help="small_files on Kafka: where the files' copies are (s3://...)")
    p.add_argument("--catalog-json", default=None, help="small_files on Kafka: Settings.catalog as JSON")
    p.add_argument("--home", default=None, help="publish_small: INGESTER_HOME whose spool gets the events")
    p.add_argument("--topic", default=None, help="publish_small on Kafka: the topic")
    args = p.parse_args()
    # every case's catalogs, warehouses and homes in one folder of this process, removed when it
    # ends (a 20,000-file case leaves 1 GB; a full run filled the disk)
    tempfile.tempdir = tempfile.mkdtemp(prefix="bench-case-")
    atexit.register(shutil.rmtree, tempfile.tempdir, True)
    print(json.dumps(CASES[args.case](args)))


if __name__ == "__main__":
    main()
