"""A closed batch -> exactly one Iceberg snapshot: the committer (``committer``), the batch's
source files (``source_files``), the dispositions (``dispositions``: append, replace, merge),
as-is registration (``as_is``: zero-copy) and when the ledger is written (``ledger_writes``)."""

from __future__ import annotations

from ingester.commit.committer import CommitResult, LoadedBatch, Rejected, SnapshotCommitter
from ingester.commit.options import WriteOptions

__all__ = ["CommitResult", "LoadedBatch", "Rejected", "SnapshotCommitter", "WriteOptions"]
