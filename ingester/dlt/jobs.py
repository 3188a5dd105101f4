"""Load jobs both dlt destinations share: every parquet job is staged without work; once a
table chain's jobs are done, each table gets one follow-up reference job listing its files
(``iceberg`` commits them, ``ingester_queue`` publishes them).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from dlt.common.destination.client import FollowupJobRequest, HasFollowupJobs, PreparedTableSchema, RunnableLoadJob
from dlt.common.storages import FileStorage
from dlt.common.storages.load_package import LoadJobInfo
from dlt.destinations.job_impl import ReferenceFollowupJobRequest


class StagedFileJob(RunnableLoadJob, HasFollowupJobs):
    """A first-level job: the file stays in the load package for its table's follow-up job.

    Runs (doing nothing) in dlt's pool instead of finishing at creation, so dlt's loader is
    woken when it completes and schedules the follow-up job at once (a job finalized at
    creation leaves the loader asleep for its 1 s poll)."""

    def run(self) -> None:
        return None


def table_followups(
    table_chain: Sequence[PreparedTableSchema], completed_jobs: Sequence[LoadJobInfo] | None
) -> list[FollowupJobRequest]:
    """One reference job per table of the chain that has parquet files in this load, and one
    listing no file for each nested table of a merge chain without rows in this load (the
    children of its updated parents still go)."""
    jobs: list[FollowupJobRequest] = []
    for table in table_chain:
        paths = [
            job.file_path
            for job in completed_jobs or ()
            if job.job_file_info.table_name == table["name"] and job.job_file_info.file_format == "parquet"
        ]
        if paths:
            jobs.append(ReferenceFollowupJobRequest(FileStorage.get_file_name_from_file_path(paths[0]), paths))
        elif table.get("parent") and table_chain[0].get("write_disposition") == "merge":
            jobs.append(ReferenceFollowupJobRequest(f"{table['name']}.{uuid.uuid4().hex[:10]}.0.parquet", []))
    return jobs
