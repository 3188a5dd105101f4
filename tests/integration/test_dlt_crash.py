"""Kill-and-resume: a dlt load of three tables SIGKILLed at random moments, then resumed by
``pipeline.load()`` in a new process, lands every row exactly once, one snapshot per table
per load, over several cycles, on the embedded catalog and on the REST catalog; right after
the kill the load is in all four tables (with ``dlt_loads``) or in none (atomic loads).

This file is also the child program: ``python test_dlt_crash.py run|resume <workdir> <cycle>``
with the target in ``$CRASH_TARGET`` (JSON).
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

EVENTS_PER_CYCLE = 400
USERS_PER_CYCLE = 120
USERS_STEP = 30
FILE_MAX_ITEMS = 40  # ~10 files per table per load
STARTUP_TIMEOUT_S = 120


# ------------------------------------------------------------------ the data
def cycle_source(cycle: int) -> list[Any]:
    import dlt

    @dlt.resource(name="events", write_disposition="append")
    def events() -> Iterator[dict[str, Any]]:
        for i in range(cycle * EVENTS_PER_CYCLE, (cycle + 1) * EVENTS_PER_CYCLE):
            yield {"id": i, "cycle": cycle, "payload": f"event {i}"}

    @dlt.resource(
        name="users", write_disposition="merge", primary_key="id",
        columns={"deleted": {"data_type": "bool", "hard_delete": True}},
    )
    def users() -> Iterator[dict[str, Any]]:
        yield from user_rows(cycle)

    @dlt.resource(name="snapshot", write_disposition="replace")
    def snapshot() -> Iterator[dict[str, Any]]:
        yield from snapshot_rows(cycle)

    return [events(), users(), snapshot()]


def user_rows(cycle: int) -> list[dict[str, Any]]:
    start = cycle * USERS_STEP
    return [
        {"id": i, "name": f"user {i} v{cycle}", "deleted": cycle > 0 and i % 7 == 0}
        for i in range(start, start + USERS_PER_CYCLE)
    ]


def snapshot_rows(cycle: int) -> list[dict[str, Any]]:
    return [{"k": k, "cycle": cycle} for k in range(50 + cycle)]


def expected_users(last_cycle: int) -> dict[int, str]:
    users: dict[int, str] = {}
    for c in range(last_cycle + 1):
        for row in user_rows(c):
            if row["deleted"]:
                users.pop(row["id"], None)
            else:
                users[row["id"]] = row["name"]
    return users


# ---------------------------------------------------------------- the target
def destination(spec: dict[str, Any]) -> Any:
    from ingester import iceberg, iceberg_rest

    if spec["kind"] == "embedded":
        return iceberg(ingester_home=spec["home"], namespace=spec["namespace"])
    return iceberg_rest(**{k: v for k, v in spec.items() if k != "kind"})


def catalog(spec: dict[str, Any]) -> Any:
    from pyiceberg.catalog import load_catalog

    from ingester.dlt.configuration import IcebergClientConfiguration, IcebergRestClientConfiguration

    if spec["kind"] == "embedded":
        config: IcebergClientConfiguration = IcebergClientConfiguration(ingester_home=spec["home"])
    else:
        config = IcebergRestClientConfiguration(**{k: v for k, v in spec.items() if k not in ("kind", "namespace")})
    return load_catalog(config.resolved_catalog_name(), **config.catalog_props())


def child(mode: str, workdir: Path, cycle: int) -> None:
    import dlt

    spec = json.loads(os.environ["CRASH_TARGET"])
    os.environ["NORMALIZE__DATA_WRITER__FILE_MAX_ITEMS"] = str(FILE_MAX_ITEMS)
    pipeline = dlt.pipeline("crash", destination=destination(spec), pipelines_dir=str(workdir / "pipelines"), dataset_name="crash")
    if mode == "run":
        pipeline.extract(cycle_source(cycle))
        pipeline.normalize()
        print("NORMALIZED", flush=True)
    started = time.monotonic()
    pipeline.load()
    print(f"LOADED pending={len(pipeline.list_normalized_load_packages())} seconds={time.monotonic() - started:.2f}", flush=True)


# ------------------------------------------------------------------- parent
def _spawn(mode: str, workdir: Path, cycle: int, spec: dict[str, Any]) -> subprocess.Popen[str]:
    env = {**os.environ, "CRASH_TARGET": json.dumps(spec), "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, __file__, mode, str(workdir), str(cycle)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=workdir,
    )


def _wait_for(proc: subprocess.Popen[str], marker: str) -> list[str]:
    assert proc.stdout is not None
    lines = []
    deadline = time.monotonic() + STARTUP_TIMEOUT_S
    for line in proc.stdout:
        lines.append(line)
        if line.startswith(marker):
            return lines
        assert time.monotonic() < deadline, "".join(lines[-30:])
    raise AssertionError(f"child exited before {marker}:\n{''.join(lines[-40:])}")


def _rows(cat: Any, namespace: str, name: str) -> list[dict[str, Any]]:
    return cat.load_table((namespace, name)).scan().to_arrow().to_pylist()


def _check(spec: dict[str, Any], cycle: int, note: str) -> None:
    cat, ns = catalog(spec), spec["namespace"]
    events = [r["id"] for r in _rows(cat, ns, "events")]
    assert len(events) == len(set(events)), f"{note}: duplicate events"
    assert sorted(events) == list(range((cycle + 1) * EVENTS_PER_CYCLE)), note
    users = _rows(cat, ns, "users")
    assert len(users) == len({r["id"] for r in users}), f"{note}: duplicate users"
    assert {r["id"]: r["name"] for r in users} == expected_users(cycle), note
    snapshot = sorted((r["k"], r["cycle"]) for r in _rows(cat, ns, "snapshot"))
    assert snapshot == sorted((r["k"], r["cycle"]) for r in snapshot_rows(cycle)), note
    for name in ("events", "users", "snapshot", "dlt_loads"):
        snaps = cat.load_table((ns, name)).metadata.snapshots
        assert len(snaps) == cycle + 1, f"{note}: {name} has {len(snaps)} snapshots after {cycle + 1} loads"
    loads = [r["load_id"] for r in _rows(cat, ns, "dlt_loads")]
    assert len(loads) == len(set(loads)) == cycle + 1, note


def _committed(spec: dict[str, Any], cycle: int) -> int:
    """How many tables of the load already hold its snapshot (diagnostics)."""
    cat, ns = catalog(spec), spec["namespace"]
    done = 0
    for name in ("events", "users", "snapshot", "dlt_loads"):
        try:
            done += len(cat.load_table((ns, name)).metadata.snapshots) > cycle
        except Exception:  # noqa: BLE001 - not created yet
            pass
    return done


def _kill_and_resume(spec: dict[str, Any], workdir: Path, kills: int, max_loads: int) -> None:
    """Kill moments are spread over the span of a whole load (one per slice, in shuffled order),
    and the span follows what this machine measures: a load that finishes before its kill (it
    printed ``LOADED``) sets the span to its own duration, as does a resume that had to load
    everything. Loads go on until ``kills`` of them died mid-way (at most ``max_loads``)."""
    seed = int(os.environ.get("CRASH_SEED", time.time_ns() % 1_000_000))
    rng = random.Random(seed)
    slices = list(range(kills))
    rng.shuffle(slices)
    span_s, killed, cycle = 1.0, 0, 0
    while killed < kills:
        assert cycle < max_loads, f"seed {seed}: only {killed} of {cycle} loads were killed mid-way"
        delay = (slices[killed] + rng.random()) * span_s / kills
        proc = _spawn("run", workdir, cycle, spec)
        _wait_for(proc, "NORMALIZED")
        time.sleep(delay)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        tail = proc.communicate(timeout=60)[0].splitlines()
        finished = [line for line in tail if line.startswith("LOADED")]
        committed = _committed(spec, cycle)
        note = f"seed {seed}, cycle {cycle}, kill {delay:.2f}s into a {span_s:.2f}s load"
        if finished:
            span_s = float(finished[-1].rsplit("seconds=", 1)[1])
            print(f"{note}: finished first in {span_s:.2f}s")
        else:
            killed += 1
            print(f"{note}: killed with {committed} of 4 tables committed")
            assert committed in (0, 4), f"{note}: a partial load is visible ({committed} of 4 tables)"  # atomic
        resume = _spawn("resume", workdir, cycle, spec)
        lines = _wait_for(resume, "LOADED")
        assert lines[-1].startswith("LOADED pending=0 "), note
        assert resume.wait(timeout=60) == 0, note
        if not finished and committed == 0:
            span_s = float(lines[-1].rsplit("seconds=", 1)[1])
        _check(spec, cycle, note)
        cycle += 1


def test_kill_and_resume_embedded(tmp_path: Path) -> None:
    spec = {"kind": "embedded", "home": str(tmp_path / "home"), "namespace": "crash"}
    _kill_and_resume(spec, tmp_path, kills=3, max_loads=8)


def test_kill_and_resume_rest(tmp_path: Path, seaweed: Any) -> None:
    spec = {
        "kind": "rest", "catalog_uri": seaweed.iceberg_uri, "warehouse": seaweed.warehouse,
        "namespace": f"crash_{uuid.uuid4().hex[:8]}",
        "credential": f"{seaweed.access_key}:{seaweed.secret_key}", "s3_endpoint": seaweed.s3_endpoint,
        "s3_access_key_id": seaweed.access_key, "s3_secret_access_key": seaweed.secret_key, "s3_region": seaweed.region,
        "internal_table_prefix": "dlt",  # S3 Tables naming: no leading "_"
    }
    _kill_and_resume(spec, tmp_path, kills=2, max_loads=6)


if __name__ == "__main__":
    child(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]))
