"""The ``ingester`` command as a user runs it: publish, run, tables, demo; SIGTERM; kill -9."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
from pyiceberg.catalog import load_catalog

from ingester.sources.spool import SpoolQueue
from tests.support import duckdb_rows, flip_page_bytes, write_parquet

INGESTER = str(Path(sys.executable).parent / "ingester")


def cli(home: Path, *args: str, env: dict[str, str] | None = None, check: bool = True) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, "INGESTER_HOME": str(home), **(env or {})}
    done = subprocess.run([INGESTER, *args], env=full_env, capture_output=True, text=True, timeout=300)
    assert not check or done.returncode == 0, f"ingester {args[0]} failed: {done.stderr}"
    return done


def daemon(home: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    full_env = {**os.environ, "INGESTER_HOME": str(home), **(env or {})}
    return subprocess.Popen([INGESTER, "run", *args], env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def tables(home: Path) -> dict[str, dict[str, Any]]:
    return {t["name"]: t for t in json.loads(cli(home, "tables", "--json").stdout)}


def catalog(home: Path) -> Any:
    return load_catalog("ingester", type="sql", uri=f"sqlite:///{home / 'catalog.db'}", warehouse=(home / "warehouse").as_uri())


def test_publish_run_tables(tmp_path: Path) -> None:
    home, src = tmp_path / "home", tmp_path / "src"
    files = [str(write_parquet(src, {"id": pa.array(range(i * 50, i * 50 + 50), pa.int64())})) for i in range(4)]
    assert "published 4 events" in cli(home, "publish", *files, "--table", "orders").stdout
    run = cli(home, "run", "--exit-when-idle")
    assert run.returncode == 0
    info = tables(home)["default.orders"]
    assert info["rows"] == 200 and info["snapshots"] == 1 and info["metadata_location"].endswith(".metadata.json")
    table = catalog(home).load_table(("default", "orders"))
    assert duckdb_rows(table, "SELECT count(DISTINCT id) FROM t") == [(200,)]
    # publishing the same files again commits nothing new (event ids in the snapshot summary)
    cli(home, "publish", *files, "--table", "orders")
    cli(home, "run", "--exit-when-idle")
    assert tables(home)["default.orders"]["rows"] == 200


def test_bad_settings_and_paths_are_clear_errors(tmp_path: Path) -> None:
    bad = cli(tmp_path, "run", "--exit-when-idle", env={"INGESTER_WINDOW__MAX_BATCH_FILES": "zero"}, check=False)
    assert bad.returncode == 2 and "max_batch_files" in bad.stderr and "Traceback" not in bad.stderr
    missing = cli(tmp_path, "publish", str(tmp_path / "nope.parquet"), check=False)
    assert missing.returncode == 2 and "nope.parquet" in missing.stderr and "Traceback" not in missing.stderr


def test_page_verification_follows_the_producer_and_verify_pages(tmp_path: Path) -> None:
    """``ingester publish`` decodes the file where it is (a corrupt one is refused there, nothing
    published); the daemon trusts its ``verified`` events, and with ``verify_pages=all`` decodes
    them again: a corrupt file then goes to the dead letters, the good one lands."""
    home, src = tmp_path / "home", tmp_path / "src"
    good = write_parquet(src, {"id": pa.array(range(6000), pa.int64())})
    bad = flip_page_bytes(write_parquet(src, {"id": pa.array(range(6000, 12000), pa.int64())}))
    refused = cli(home, "publish", str(good), str(bad), "--table", "t", check=False)
    assert refused.returncode == 1 and bad.name in refused.stderr and "Traceback" not in refused.stderr
    assert "t" not in {k.split(".")[-1] for k in tables(home)}
    staging = home / "staging" / "files" / "t"
    staging.mkdir(parents=True)
    for f in (good, bad):
        (staging / f.name).write_bytes(f.read_bytes())
    queue = SpoolQueue(home / "queue.db")
    queue.put_many([json.dumps({"table": "t", "location": str(staging / f.name), "verified": True}).encode() for f in (good, bad)])
    queue.close()
    run = cli(home, "run", "--exit-when-idle", env={"INGESTER_COMMIT__VERIFY_PAGES": "all"})
    assert run.returncode == 0, run.stderr
    assert tables(home)["default.t"]["rows"] == 6000
    letters = [json.loads(line) for line in (home / "deadletter" / "deadletters.jsonl").read_text().splitlines()]
    assert len(letters) == 1 and bad.name in letters[0]["reason"] and "cannot read" in letters[0]["reason"]


def test_sigterm_drains_open_batches_and_exits_zero(tmp_path: Path) -> None:
    home, src = tmp_path / "home", tmp_path / "src"
    proc = daemon(home, env={"INGESTER_WINDOW__MAX_BATCH_AGE_S": "3600"})
    files = [str(write_parquet(src, {"id": [i]})) for i in range(5)]
    cli(home, "publish", *files, "--table", "t")
    time.sleep(3)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    assert tables(home)["default.t"]["rows"] == 5 and tables(home)["default.t"]["snapshots"] == 1


def test_kill_9_and_restart_loses_nothing_and_duplicates_nothing(tmp_path: Path) -> None:
    home, src = tmp_path / "home", tmp_path / "src"
    rng = random.Random(3)
    env = {"INGESTER_WINDOW__MAX_BATCH_FILES": "3", "INGESTER_WINDOW__MAX_BATCH_AGE_S": "0.2"}
    n = 0
    for cycle in range(6):
        batch = []
        for _ in range(12):
            batch.append(str(write_parquet(src, {"id": pa.array([n, n + 1], pa.int64())})))
            n += 2
        cli(home, "publish", *batch, "--table", f"k{cycle % 2}")
        proc = daemon(home, env=env)
        time.sleep(rng.uniform(0.8, 3.0))
        proc.kill()
        proc.wait()
    assert cli(home, "run", "--exit-when-idle", env=env).returncode == 0
    cat = catalog(home)
    ids = sorted(
        i for name in ("k0", "k1") for i in cat.load_table(("default", name)).scan().to_arrow().column("id").to_pylist()
    )
    assert ids == list(range(n))


def test_remove_orphans_deletes_only_old_unreachable_files(tmp_path: Path) -> None:
    home, src = tmp_path / "home", tmp_path / "src"
    cli(home, "publish", *[str(write_parquet(src, {"id": [i]})) for i in range(3)], "--table", "t")
    cli(home, "run", "--exit-when-idle")
    data = home / "warehouse" / "default" / "t" / "data"
    committed = sorted(data.iterdir())
    old, young = data / "leftover-old.parquet", data / "leftover-young.parquet"
    for path in (old, young):
        path.write_bytes(b"left over by a commit that never landed")
    four_days_ago = time.time() - 4 * 86400
    os.utime(old, (four_days_ago, four_days_ago))
    dry = cli(home, "remove-orphans", "--dry-run", "--older-than-hours", "24").stdout
    assert "default.t: would remove (dry run) 1 orphan files" in dry and str(old) in dry and old.exists()
    done = cli(home, "remove-orphans").stdout
    assert "default.t: removed 1 orphan files" in done
    assert not old.exists() and young.exists() and all(p.exists() for p in committed)
    assert tables(home)["default.t"]["rows"] == 3
    assert duckdb_rows(catalog(home).load_table(("default", "t")), "SELECT count(*) FROM t") == [(3,)]
    missing = cli(home, "remove-orphans", "--table", "nope", check=False)
    assert missing.returncode == 1 and missing.stderr.startswith("error: default.nope: NoSuchTableError")
    assert "Traceback" not in missing.stderr


def test_demo_prints_the_tables(tmp_path: Path) -> None:
    out = subprocess.run([INGESTER, "demo"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={**os.environ, "INGESTER_HOME": str(tmp_path / "h")})
    assert out.returncode == 0, out.stderr
    lines = {line.split()[0]: line.split()[1:] for line in out.stdout.splitlines() if line.startswith("default.")}
    assert lines["default.customers"][0] == "500" and lines["default.orders"][0] == "2000"
    assert lines["default.page_views"][0] == "10000" and int(lines["default.orders__items"][0]) > 2000
