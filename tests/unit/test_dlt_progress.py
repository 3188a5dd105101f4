"""The dlt destination's load step through dlt's own progress: with ``progress=`` on the
pipeline, dlt's "Jobs" counter counts our per-table commit job (a follow-up of the file jobs),
so the load shows done only once the snapshot is committed."""

from __future__ import annotations

import io
import re
from pathlib import Path

import dlt
from dlt.common.runtime.collector import LogCollector

from ingester import iceberg


def test_the_commit_job_shows_in_dlts_load_progress(tmp_path: Path) -> None:
    out = io.StringIO()
    pipeline = dlt.pipeline(
        "progress", destination=iceberg(ingester_home=str(tmp_path / "home"), namespace="unit"),
        pipelines_dir=str(tmp_path / "pipelines"), dataset_name="unit", progress=LogCollector(log_period=0.0, logger=out, dump_system_stats=False),
    )
    pipeline.run([{"id": i} for i in range(100)], table_name="orders")
    load = out.getvalue().split(" Load progress in ", 1)[1]
    counts = [(int(done), int(total)) for done, total in re.findall(r"Jobs: (\d+)/(\d+)", load)]
    # two file jobs (orders and dlt's state table), then one commit job per table joins the count
    assert counts[0] == (0, 2) and max(total for _, total in counts) == 4 and counts[-1] == (4, 4)
    with pipeline.sql_client() as client:
        assert client.execute_sql("SELECT count(*) FROM orders")[0][0] == 100
