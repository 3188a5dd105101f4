"""Run every benchmark case side by side in one run and print a table with ratios.

    python3 dev.py bench              # full run (about 15 minutes on 2 cores)
    python3 dev.py bench --quick      # smaller sizes, a few minutes

Sections of their own, instead of the full run (they combine; ``--kafka`` adds the Kafka + S3
variant of the small-files cases; ``--quick`` keeps 2,000 files and 3,000 commits):

    python3 dev.py bench --small-files   # 2,000 / 20,000 files of 500 rows over 1 / 4 / 100 tables
    python3 dev.py bench --long-stream   # 10,000 commits to one table, cost per 1,000
    python3 dev.py bench --cold          # whole dlt pipeline processes, 10k and 1M rows
    python3 dev.py bench --backfill      # ingester backfill of 10,000 small files vs the same as events

dlt-iceberg 0.6.4 runs in its own venv, the one the parity suite uses
(``tests/parity/reference_venv.py``: made on first use, cached under ``~/.cache/ingester/``).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tests.parity.reference_venv import clean_env, dlt_iceberg_python  # noqa: E402  # standard library only

Row = dict[str, Any]


def shown(cmd: list[str]) -> str:
    """``cmd`` as printed: interpreter and script by name, the catalog JSON (it holds the test
    stack's credentials) masked."""
    return " ".join("<catalog JSON>" if i and cmd[i - 1] == "--catalog-json" else Path(c).name if i < 2 else c
                    for i, c in enumerate(cmd))


def run_json(cmd: list[str], env: dict[str, str] | None = None) -> Row:
    print("  $", shown(cmd), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent, env=env)
    if out.returncode:
        raise SystemExit(f"case failed: {shown(cmd)}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def case(name: str, *args: str) -> Row:
    return run_json([sys.executable, str(HERE / "cases.py"), name, *args])


def interleaved(runs: int, thunks: dict[str, Callable[[], Row]]) -> dict[str, Row]:
    """Each thunk ``runs`` times, interleaved (so drift hits all alike); per thunk the run with
    the median seconds."""
    got: dict[str, list[Row]] = {k: [] for k in thunks}
    for _ in range(runs):
        for k, thunk in thunks.items():
            got[k].append(thunk())
    return {k: sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2] for k, rs in got.items()}


def medians(runs: int, cases: dict[str, list[str]]) -> dict[str, Row]:
    """Each case ``runs`` times, interleaved; per case the run with the median seconds."""
    return interleaved(runs, {k: (lambda argv=argv: case(*argv)) for k, argv in cases.items()})


def timed_process(cmd: list[str], env: dict[str, str] | None = None) -> Row:
    """Run ``cmd`` as /usr/bin/time does: whole-process wall seconds, CPU seconds and peak RSS
    of that child (``os.wait4``), plus the JSON its last stdout line holds (if any)."""
    print("  $", shown(cmd), file=sys.stderr, flush=True)
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, cwd=HERE.parent, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise SystemExit(f"process failed: {shown(cmd)}\n{err.read().decode()[-3000:]}")
        lines = out.read().decode().strip().splitlines()
        errors = err.read().decode().strip().splitlines()
    row = json.loads(lines[-1]) if lines and lines[-1].startswith("{") else {"last_line": lines[-1] if lines else ""}
    row["stderr"] = errors[-20:]
    return {**row, "seconds": seconds, "cpu_s": usage.ru_utime + usage.ru_stime, "peak_rss_mb": usage.ru_maxrss / 1024}


def kafka_note(r: Row) -> str:
    """The group join (before the timed run) and the broker's first delivery (inside it)."""
    return f" (join {r['join_s']:.1f}s before; first event after {r['first_event_s']:.2f}s)"


def dlt_load(impl: str, rows: int, work: Path, merge: bool = False, base_rows: int = 0) -> Row:
    py = sys.executable if impl == "ours" else str(dlt_iceberg_python())
    env = None if impl == "ours" else clean_env()  # nothing of this venv leaks into dlt-iceberg's
    common = ["--impl", impl, "--work", str(work / f"{impl}-{rows}-{int(merge)}"), "--rows", str(rows)]
    extra = (["--merge", "--first-id", str(base_rows - rows // 2)] if merge else []) + (["--base-rows", str(base_rows)] if base_rows else [])
    run = [py, str(HERE / "dlt_case.py")]
    prep = subprocess.run([*run, "prepare", *common, *extra], capture_output=True, text=True, cwd=HERE.parent, env=env)
    if prep.returncode:
        raise SystemExit(f"prepare failed for {impl}: {prep.stderr[-3000:]}")
    return run_json([*run, "load", *common, *extra], env)


def fmt(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))) for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def line(case_name: str, impl: str, r: Row, ratio: str = "", target: str = "") -> list[str]:
    secs = r.get("seconds")
    rows = r.get("rows", 0)
    mb = r.get("bytes")
    return [
        case_name, impl, f"{rows:,}", f"{secs:.2f}" if secs is not None else "-",
        f"{rows / secs:,.0f}" if secs else "-", f"{mb / 1e6 / secs:,.0f}" if mb and secs else "-",
        str(r.get("snapshots", "-")), str(r.get("data_files", "-")), f"{r.get('peak_rss_mb', 0):,.0f}", ratio, target,
    ]


SMALL_ROWS = 500
SMALL_HEADER = ["case", "impl", "files", "rows", "seconds", "files/s", "rows/s", "CPU s/1k files", "snapshots", "peak RSS MB",
                "ratio", "target"]


def small_line(name: str, impl: str, r: Row, ratio: str = "", target: str = "") -> list[str]:
    files, secs = r["files"], r["seconds"]
    return [name, impl, f"{files:,}", f"{r['rows']:,}", f"{secs:.2f}", f"{files / secs:,.0f}", f"{r['rows'] / secs:,.0f}",
            f"{r['cpu_s'] * 1000 / files:.2f}", str(r.get("snapshots", "-")), f"{r['peak_rss_mb']:,.0f}", ratio, target]


def files_per_s(r: Row) -> float:
    return float(r["files"] / r["seconds"])


def ingester_command() -> str:
    return str(Path(sys.executable).parent / "ingester")


def startup_line() -> list[str]:
    """``ingester run --exit-when-idle`` on an empty spool, a fresh process: what every run pays
    before its first event (imports, settings, catalog, one empty poll of ``poll_timeout_s``)."""
    home = tempfile.mkdtemp(prefix="bench-startup-")
    r = timed_process([ingester_command(), "run", "--exit-when-idle"], {**os.environ, "INGESTER_HOME": home})
    return ["process start-up", "ingester run --exit-when-idle, empty spool", "-", "-", f"{r['seconds']:.2f}", "-", "-",
            f"CPU {r['cpu_s']:.2f} s", "-", f"{r['peak_rss_mb']:,.0f}", "whole process, timed apart", ""]


class TestStack:
    """SeaweedFS (S3 + REST catalog) and Tansu, as the integration tests start them."""

    def __init__(self) -> None:
        sys.path.insert(0, str(HERE.parent))
        from ingester.testing.localstack import SeaweedServer, TansuBroker

        self.seaweed = SeaweedServer.start(Path(tempfile.mkdtemp(prefix="bench-seaweed-")))
        self.broker = TansuBroker.start()
        self.uploaded: dict[int, str] = {}

    def catalog_json(self) -> str:
        w = self.seaweed
        return json.dumps({"type": "rest", "uri": w.iceberg_uri, "warehouse": w.warehouse,
                           "credential": f"{w.access_key}:{w.secret_key}", "oauth2_server_uri": w.token_endpoint,
                           "s3_endpoint": w.s3_endpoint, "s3_access_key_id": w.access_key,
                           "s3_secret_access_key": w.secret_key, "s3_region": w.region})

    def upload(self, files: list[Path]) -> str:
        """Copies of ``files`` in the S3 bucket (once per file count); returns their prefix."""
        from pyarrow import fs as pafs

        from ingester.storage import s3_filesystem

        if len(files) not in self.uploaded:
            w = self.seaweed
            fs = s3_filesystem(w.s3_endpoint, w.access_key, w.secret_key, w.region)
            key = f"warehouse/bench-small-{len(files)}"
            with ThreadPoolExecutor(16) as pool:
                list(pool.map(lambda p: pafs.copy_files(str(p), f"{key}/{p.name}", destination_filesystem=fs), files))
            self.uploaded[len(files)] = f"s3://{key}"
        return self.uploaded[len(files)]

    def stop(self) -> None:
        self.broker.stop()
        self.seaweed.stop()
        shutil.rmtree(self.seaweed.data_dir, ignore_errors=True)  # GBs after a 20,000-file run


def small_files_table(args: argparse.Namespace, data_dir: Path) -> list[list[str]]:
    """Small files on the spool (and on Kafka + S3), each case interleaved with the ``add_files``
    limit; the naive consumer once per case, on its first ``--naive-files`` files."""
    import data

    table = [SMALL_HEADER, startup_line()]
    stack = TestStack() if args.kafka else None
    first: dict[int, Row] = {}
    try:
        for n in args.small_counts or ([2_000] if args.quick else [2_000, 20_000]):
            files = data.write_small_files(data_dir, n, SMALL_ROWS)
            for tables in args.small_tables or [1, 4, 100]:
                common = ["--data", str(data_dir), "--files", str(n), "--rows-per-file", str(SMALL_ROWS), "--tables", str(tables)]
                cases = {"limit": ["add_files", *common], "ours": ["small_files", *common]}
                if stack is not None:
                    cases["kafka"] = ["small_files", *common, "--kafka", stack.broker.bootstrap_servers,
                                      "--prefix", stack.upload(files), "--catalog-json", stack.catalog_json()]
                got = medians(args.repeat if n < 10_000 else 1, cases)
                naive = case("append_per_file", *common, "--files-limit", str(min(n, args.naive_files)))
                limit, ours = got["limit"], got["ours"]
                name = f"{n:,} files, {tables} tables"
                table.append(small_line(name, "pyiceberg add_files per table", limit))
                table.append(small_line(name, "ingester (spool)", ours, f"{limit['seconds'] / ours['seconds']:.2f}x limit", ">= 1x"))
                if tables in first:
                    base = first[tables]
                    table.append(small_line(name, "ingester (spool) vs 2,000 files", ours,
                                            f"files/s {files_per_s(ours) / files_per_s(base):.2f}x, "
                                            f"RSS {ours['peak_rss_mb'] / base['peak_rss_mb']:.2f}x", ">= 0.9x, <= 1.2x"))
                else:
                    first[tables] = ours
                if "kafka" in got:
                    k = got["kafka"]
                    table.append(small_line(name, "ingester (Kafka + S3)", k,
                                            f"{files_per_s(k) / files_per_s(ours):.2f}x spool{kafka_note(k)}", ">= 0.8x"))
                table.append(small_line(name, "pyiceberg append per file", naive,
                                        f"{files_per_s(naive) / files_per_s(ours):.2f}x ingester"))
    finally:
        if stack is not None:
            stack.stop()
    return table


BACKFILL_SUMMARY = re.compile(r"backfill: (\d+) files loaded \((\d+) rows in (\d+) snapshots\), (\d+) skipped")
RUN_SUMMARY = re.compile(r"stopped: (\d+) events, (\d+) rows, (\d+) snapshots")


def backfill_table(args: argparse.Namespace, data_dir: Path) -> list[list[str]]:
    """``ingester backfill`` of a local folder of small files (whole process), side by side with
    the same files published as events to the spool and drained by ``ingester run --exit-when-idle``
    (whole process; the publishing is timed apart), on default settings; then the same backfill
    again, every file already loaded (the listing and ledger look-up cost)."""
    import data

    n = args.backfill_files or (2_000 if args.quick else 10_000)
    folder = data.write_small_files(data_dir, n, SMALL_ROWS)[0].parent
    cmd = ingester_command()
    backfill = [cmd, "backfill", str(folder), "--route", "**", "--table", "events"]

    def listed() -> Row:
        env = {**os.environ, "INGESTER_HOME": tempfile.mkdtemp(prefix="bench-backfill-"), "INGESTER_LOG_LEVEL": "WARNING"}
        first, again = timed_process(backfill, env), timed_process(backfill, env)
        for r in (first, again):
            m = BACKFILL_SUMMARY.search(r["last_line"])
            if m is None:
                raise SystemExit(f"no backfill summary: {r['last_line']!r}")
            r.update(loaded=int(m[1]), rows=int(m[2]), snapshots=int(m[3]), skipped=int(m[4]), files=n)
        return {**first, "again": again}

    def published() -> Row:
        home = tempfile.mkdtemp(prefix="bench-events-")
        publish = case("publish_small", "--data", str(data_dir), "--files", str(n), "--rows-per-file", str(SMALL_ROWS),
                       "--home", home)
        env = {**os.environ, "INGESTER_HOME": home, "INGESTER_STORAGE__ALLOWED_PREFIXES": json.dumps([folder.as_uri()])}
        r = timed_process([cmd, "run", "--exit-when-idle"], env)
        m = next((m for line in r["stderr"] if (m := RUN_SUMMARY.search(line))), None)
        if m is None:
            raise SystemExit(f"no run summary: {r['stderr'][-3:]!r}")
        return {**r, "files": int(m[1]), "rows": int(m[2]), "snapshots": int(m[3]), "publish_s": publish["seconds"]}

    got = interleaved(args.repeat, {"backfill": listed, "events": published})
    b, e = got["backfill"], got["events"]
    name = f"{n:,} files, local folder"
    table = [SMALL_HEADER, startup_line()]
    assert b["loaded"] == n and b["again"]["skipped"] == n and b["again"]["loaded"] == 0, b
    table.append(small_line(name, "ingester backfill", b, f"{files_per_s(b) / files_per_s(e):.2f}x events"))
    table.append(small_line(name, "publish + ingester run --exit-when-idle", e,
                            f"run alone; publishing took {e['publish_s']:.1f}s more"))
    table.append(small_line(name, "ingester backfill again (all loaded)", {**b["again"], "files": n},
                            f"{files_per_s(b['again']) / files_per_s(b):.1f}x the first backfill"))
    return table


def long_stream_table(args: argparse.Namespace, data_dir: Path) -> list[list[str]]:
    """One commit per tiny file to one table; the cost of each segment of commits."""
    import data

    n = args.long_commits or (3_000 if args.quick else 10_000)
    data.write_small_files(data_dir, n, 10)
    r = case("long_stream", "--data", str(data_dir), "--files", str(n), "--rows-per-file", "10", "--segment", str(args.segment))
    table = [["commits", "seconds", "ms/commit", "metadata KB", "snapshots", "peak RSS MB", "ratio", "target"]]
    segments = r["segments"]
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        table.append([f"{seg['commits'] - args.segment:,}-{seg['commits']:,}", f"{seg['seconds']:.1f}",
                      f"{seg['seconds'] * 1000 / args.segment:.0f}", f"{seg['metadata_kb']:,.0f}", str(seg["snapshots"]),
                      f"{seg['peak_rss_mb']:,.0f}", f"{seg['seconds'] / segments[0]['seconds']:.2f}x the first" if i else "",
                      "<= 1.2x" if last and i else ""])
    table.append([f"all {r['commits']:,}", f"{r['seconds']:.1f}", f"{r['seconds'] * 1000 / max(r['commits'], 1):.0f}", "-", "-",
                  f"{r['peak_rss_mb']:,.0f}", f"CPU {r['cpu_s']:.0f} s", ""])
    return table


def cold_table(args: argparse.Namespace, work: Path) -> list[list[str]]:
    """A cron-run dlt pipeline (import, connect, extract, normalize, load) as a fresh process per
    run, ours against dlt-iceberg, interleaved; both destinations' tables exist already."""
    table = [["case", "impl", "rows", "process seconds", "CPU seconds", "peak RSS MB", "ratio", "target"]]
    script = str(HERE / "dlt_case.py")
    for rows in (10_000, 1_000_000):
        thunks: dict[str, Callable[[], Row]] = {}
        for impl in ("ours", "dlt_iceberg"):
            py = sys.executable if impl == "ours" else str(dlt_iceberg_python())
            env = None if impl == "ours" else clean_env()
            common = ["--impl", impl, "--work", str(work / f"cold-{impl}-{rows}"), "--rows", str(rows)]
            prep = subprocess.run([py, script, "prepare", "--cold", *common], capture_output=True, text=True, cwd=HERE.parent,
                                  env=env)
            if prep.returncode:
                raise SystemExit(f"prepare failed for {impl}: {prep.stderr[-3000:]}")
            thunks[impl] = lambda py=py, common=common, env=env: timed_process([py, script, "run", *common], env)
        got = interleaved(args.repeat, thunks)
        ours, theirs = got["ours"], got["dlt_iceberg"]
        for impl, r in (("ingester iceberg()", ours), ("dlt-iceberg 0.6.4", theirs)):
            ratio = f"ours {theirs['seconds'] / ours['seconds']:.2f}x faster" if r is theirs else ""
            target = (">= 1x" if rows < 100_000 else ">= 1.5x") if r is theirs else ""
            table.append([f"cold dlt run {rows:,} rows", impl, f"{rows:,}", f"{r['seconds']:.2f}", f"{r['cpu_s']:.2f}",
                          f"{r['peak_rss_mb']:,.0f}", ratio, target])
    return table


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="smaller sizes")
    p.add_argument("--kafka", action="store_true", help="also run the Kafka source (starts a local broker)")
    p.add_argument("--skip-dlt-iceberg", action="store_true")
    p.add_argument("--repeat", type=int, default=3, help="runs per daemon throughput case (median shown)")
    p.add_argument("--small-files", action="store_true", help="run the small-files section")
    p.add_argument("--small-counts", type=lambda v: [int(x) for x in v.split(",")], default=None,
                   help="small files: file counts, e.g. 2000,20000")
    p.add_argument("--small-tables", type=lambda v: [int(x) for x in v.split(",")], default=None,
                   help="small files: table counts, e.g. 1,4,100")
    p.add_argument("--naive-files", type=int, default=500, help="small files: files the naive consumer appends")
    p.add_argument("--long-stream", action="store_true", help="run the long-stream section")
    p.add_argument("--long-commits", type=int, default=0, help="long stream: commits (default 10,000; --quick 3,000)")
    p.add_argument("--segment", type=int, default=1_000, help="long stream: commits per measured segment")
    p.add_argument("--cold", action="store_true", help="run the cold-process dlt section")
    p.add_argument("--backfill", action="store_true", help="run the backfill section (listing vs published events)")
    p.add_argument("--backfill-files", type=int, default=0, help="backfill: small files (default 10,000; --quick 2,000)")
    args = p.parse_args()
    m = 1_000_000
    sizes = {"append": [m, 5 * m], "merge_base": m, "merge": 200_000, "memory": [m, 10 * m] if args.quick else [m, 10 * m, 50 * m]}
    if args.quick:
        sizes["append"] = [m]
    data = Path(os.environ.get("INGESTER_BENCH_DATA", Path(tempfile.gettempdir()) / "ingester-bench-data"))
    work = Path(tempfile.mkdtemp(prefix="ingester-bench-"))
    header = ["case", "impl", "rows", "seconds", "rows/s", "MB/s", "snapshots", "data files", "peak RSS MB", "ratio", "target"]
    table: list[list[str]] = [header]
    d = ["--data", str(data)]
    if args.small_files or args.long_stream or args.cold or args.backfill:
        sections = [(args.small_files, "small files", lambda: small_files_table(args, data)),
                    (args.backfill, "backfill", lambda: backfill_table(args, data)),
                    (args.long_stream, "long stream", lambda: long_stream_table(args, data)),
                    (args.cold, "cold process", lambda: cold_table(args, work))]
        for wanted, title, build in sections:
            if wanted:
                print(f"[{title}]", file=sys.stderr)
                print(f"\n{title}\n\n{fmt(build())}", flush=True)
        return

    print("[1] dlt destination mode vs dlt-iceberg (load step)", file=sys.stderr)
    for rows in sizes["append"]:
        ours = dlt_load("ours", rows, work)
        table.append(line(f"dlt append {rows // m}M", "ingester", ours))
        if not args.skip_dlt_iceberg:
            theirs = dlt_load("dlt_iceberg", rows, work)
            table.append(line(f"dlt append {rows // m}M", "dlt-iceberg", theirs,
                              f"{theirs['seconds'] / ours['seconds']:.1f}x faster", ">= 3x"))
    ours = dlt_load("ours", sizes["merge"], work, merge=True, base_rows=sizes["merge_base"])
    table.append(line("dlt merge 200k into 1M", "ingester", ours, f"delete files {ours.get('delete_files')}"))
    upsert = case("pyiceberg_upsert", *d, "--rows", str(sizes["merge_base"]), "--merge-rows", str(sizes["merge"]))
    table.append(line("dlt merge 200k into 1M", "pyiceberg upsert", upsert,
                      f"{upsert['seconds'] / ours['seconds']:.1f}x faster", ">= 10x"))
    if not args.skip_dlt_iceberg:
        theirs = dlt_load("dlt_iceberg", sizes["merge"], work, merge=True, base_rows=sizes["merge_base"])
        table.append(line("dlt merge 200k into 1M", "dlt-iceberg", theirs,
                          f"ours {ours['seconds'] / theirs['seconds']:.2f}x its time; its delete files {theirs.get('delete_files')}", "<= 1.5x"))

    print(f"[2,3] daemon throughput: zero-copy vs rewrite vs one pyiceberg append (median of {args.repeat})", file=sys.stderr)
    spool = medians(args.repeat, {"limit": ["pyiceberg_append", *d, "--rows", str(m)],
                                  "zero": ["daemon", *d, "--rows", str(m)],
                                  "rewrite": ["daemon", *d, "--rows", str(m), "--rewrite"]})
    limit, zero, rewrite = spool["limit"], spool["zero"], spool["rewrite"]
    table.append(line("daemon 1M (spool)", "pyiceberg append", limit))
    table.append(line("daemon 1M (spool)", "ingester zero-copy", zero, f"{limit['seconds'] / zero['seconds']:.2f}x limit", ">= 1x"))
    table.append(line("daemon 1M (spool)", "ingester rewrite", rewrite, f"{limit['seconds'] / rewrite['seconds']:.2f}x limit", ">= 0.8x"))
    if args.kafka:
        from ingester.testing.localstack import TansuBroker

        broker = TansuBroker.start()
        try:
            kafka = medians(args.repeat, {"zero": ["daemon", *d, "--rows", str(m), "--kafka", broker.bootstrap_servers],
                                          "rewrite": ["daemon", *d, "--rows", str(m), "--kafka", broker.bootstrap_servers, "--rewrite"]})
            kz, kr = kafka["zero"], kafka["rewrite"]
            table.append(line("daemon 1M (kafka)", "ingester zero-copy", kz,
                              f"{limit['seconds'] / kz['seconds']:.2f}x limit{kafka_note(kz)}", ">= 1x"))
            table.append(line("daemon 1M (kafka)", "ingester rewrite", kr,
                              f"{limit['seconds'] / kr['seconds']:.2f}x limit{kafka_note(kr)}", ">= 0.8x"))
        finally:
            broker.stop()

    print("[4] commit latency at a steady rate", file=sys.stderr)
    for age in (1.0, 10.0):
        lat = case("latency", *d, "--rows", "100000", "--rows-per-file", "5000", "--age", str(age), "--rate", "20", "--duration", "30")
        table.append([f"latency age {age:g}s", "ingester", f"{lat['events']:,} events", "-", "-", "-", str(lat["snapshots"]), "-",
                      f"{lat['peak_rss_mb']:,.0f}", f"p50 {lat['p50_s']:.2f}s p99 {lat['p99_s']:.2f}s", f"p99 <= {age + 2:g}s"])

    print("[5] memory with input size", file=sys.stderr)
    for mode in ("zero-copy", "rewrite"):
        peaks = []
        for rows in sizes["memory"]:
            r = case("daemon", *d, "--rows", str(rows), "--inflight-mb", "512", "--batch-mb", "256", *(["--rewrite"] if mode == "rewrite" else []))
            peaks.append(r["peak_rss_mb"])
            table.append(line(f"memory daemon {rows // m}M", f"ingester {mode}", r,
                              f"{peaks[-1] / peaks[0]:.2f}x the 1M peak" if len(peaks) > 1 else "", "<= 1.2x" if len(peaks) > 1 else ""))
    peaks = []
    for rows in sizes["memory"]:
        r = dlt_load("ours", rows, work)
        peaks.append(r["peak_rss_mb"])
        table.append(line(f"memory dlt {rows // m}M", "ingester", r,
                          f"{peaks[-1] / peaks[0]:.2f}x the 1M peak" if len(peaks) > 1 else "", "<= 1.2x" if len(peaks) > 1 else ""))

    print("[6] scaling with tables (1M rows in 100 files, interleaved)", file=sys.stderr)
    for tables in (1, 10, 100):
        r = case("daemon", *d, "--rows", str(m), "--rows-per-file", "10000", "--tables", str(tables))
        table.append(line(f"tables {tables}", "ingester zero-copy", r))

    print(fmt(table))


if __name__ == "__main__":
    main()
