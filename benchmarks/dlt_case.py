"""dlt destination cases, for ours and for dlt-iceberg (run in its own venv).

    python benchmarks/dlt_case.py prepare|load|run --impl ours|dlt_iceberg --work DIR --rows N [--merge]

``prepare`` makes one small load (tables exist, as in steady state), then extracts and
normalizes the measured rows (not timed; ``--cold``: the small load only); ``load`` runs only
the load step in a fresh process and prints one JSON line: seconds, peak RSS, snapshots, data
files, rows. ``run`` is a whole cron-run pipeline (``pipeline.run``: extract, normalize, load)
for the cold-process case: the caller times the process from outside (imports included).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import dlt

sys.path.insert(0, str(Path(__file__).resolve().parent))
import data  # noqa: E402

CHUNK = 100_000


def destination(impl: str, work: Path) -> Any:
    if impl == "ours":
        from ingester import iceberg

        return iceberg(namespace="bench", ingester_home=str(work / "home"))
    from dlt_iceberg import iceberg_rest

    (work / "warehouse").mkdir(parents=True, exist_ok=True)
    return iceberg_rest(catalog_uri=f"sqlite:///{work}/catalog.db", warehouse=(work / "warehouse").as_uri(), namespace="bench")


def pipeline(impl: str, work: Path, name: str) -> Any:
    return dlt.pipeline(pipeline_name=name, destination=destination(impl, work), pipelines_dir=str(work / "pipelines"),
                        dataset_name="bench")


def resource_for(rows: int, first_id: int, merge: bool) -> Any:
    @dlt.resource(name="events", write_disposition="merge" if merge else "append", primary_key="id" if merge else None)
    def events() -> Any:
        for start in range(0, rows, CHUNK):
            yield data.events(min(CHUNK, rows - start), first_id=first_id + start)

    return events


def warm_imports(impl: str) -> None:
    """Import each destination's modules before timing: the load step is measured, not imports."""
    import pyiceberg.catalog.sql  # noqa: F401
    import pyiceberg.io.pyarrow  # noqa: F401

    if impl == "ours":
        import ingester.dlt.client  # noqa: F401
    else:
        import dlt_iceberg.destination_client  # noqa: F401


def table_stats(impl: str, work: Path) -> dict[str, Any]:
    from pyiceberg.catalog.sql import SqlCatalog

    if impl == "ours":
        home = work / "home"
        cat = SqlCatalog("ingester", uri=f"sqlite:///{home / 'catalog.db'}", warehouse=(home / "warehouse").as_uri())
    else:
        cat = SqlCatalog("dlt_catalog", uri=f"sqlite:///{work}/catalog.db", warehouse=(work / "warehouse").as_uri())
        names = [n for n in cat.list_tables("bench")]
        if not names:  # dlt-iceberg names its SQL catalog after the pipeline in some versions
            raise SystemExit(f"no tables found: {names}")
    table = cat.load_table(("bench", "events"))
    snap = table.current_snapshot()
    rows = int(snap.summary.additional_properties.get("total-records", 0)) if snap else 0
    return {"rows_in_table": rows, "snapshots": len(table.metadata.snapshots),
            "data_files": len(list(table.scan().plan_files())),
            "delete_files": sum(len(t.delete_files) for t in table.scan().plan_files())}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("phase", choices=["prepare", "load", "run"])
    p.add_argument("--impl", choices=["ours", "dlt_iceberg"], required=True)
    p.add_argument("--work", required=True)
    p.add_argument("--rows", type=int, required=True)
    p.add_argument("--first-id", type=int, default=0)
    p.add_argument("--merge", action="store_true")
    p.add_argument("--base-rows", type=int, default=0, help="rows loaded before the measured load")
    p.add_argument("--cold", action="store_true", help="prepare: only the first small load")
    args = p.parse_args()
    work = Path(args.work)
    pl = pipeline(args.impl, work, "bench")
    if args.phase == "prepare":
        # steady state: tables and dlt's own tables exist (one small load first), then the
        # measured load is extracted and normalized
        pl.run(resource_for(1_000, 10**12, args.merge), loader_file_format="parquet")
        if args.cold:
            return
        if args.base_rows:
            pl.run(resource_for(args.base_rows, 0, args.merge), loader_file_format="parquet")
        pl.extract(resource_for(args.rows, args.first_id, args.merge), loader_file_format="parquet")
        pl.normalize()
        return
    if args.phase == "run":
        info = pl.run(resource_for(args.rows, args.first_id, args.merge), loader_file_format="parquet")
        info.raise_on_failed_jobs()
        print(json.dumps({"rows": args.rows}))  # no table stats: they would be timed too
        return
    warm_imports(args.impl)
    started = time.perf_counter()
    pl.load()
    seconds = time.perf_counter() - started
    out = {"rows": args.rows, "seconds": seconds, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}
    try:
        out |= table_stats(args.impl, work)
    except Exception as exc:  # stats are informative; the timing stands
        out["stats_error"] = f"{type(exc).__name__}: {exc}"
    print(json.dumps(out))


if __name__ == "__main__":
    main()
