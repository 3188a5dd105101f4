"""Run every benchmark case side by side in one run and print a table with ratios.

    python3 dev.py bench              # full run (about 15 minutes on 2 cores)
    python3 dev.py bench --quick      # smaller sizes, a few minutes

dlt-iceberg 0.6.4 runs in its own venv, the one the parity suite uses
(``tests/parity/reference_venv.py``: made on first use, cached under ``~/.cache/ingester/``).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
from tests.parity.reference_venv import clean_env, dlt_iceberg_python  # noqa: E402  # standard library only

Row = dict[str, Any]


def run_json(cmd: list[str], env: dict[str, str] | None = None) -> Row:
    print("  $", " ".join(Path(c).name if i < 2 else c for i, c in enumerate(cmd)), file=sys.stderr, flush=True)
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=HERE.parent, env=env)
    if out.returncode:
        raise SystemExit(f"case failed: {' '.join(cmd)}\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def case(name: str, *args: str) -> Row:
    return run_json([sys.executable, str(HERE / "cases.py"), name, *args])


def medians(runs: int, cases: dict[str, list[str]]) -> dict[str, Row]:
    """Each case ``runs`` times, interleaved (so drift hits all alike); per case the run with
    the median seconds."""
    got: dict[str, list[Row]] = {k: [] for k in cases}
    for _ in range(runs):
        for k, argv in cases.items():
            got[k].append(case(*argv))
    return {k: sorted(rs, key=lambda r: r["seconds"])[len(rs) // 2] for k, rs in got.items()}


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


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="smaller sizes")
    p.add_argument("--kafka", action="store_true", help="also run the Kafka source (starts a local broker)")
    p.add_argument("--skip-dlt-iceberg", action="store_true")
    p.add_argument("--repeat", type=int, default=3, help="runs per daemon throughput case (median shown)")
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
