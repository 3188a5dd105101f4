"""Orphan file cleanup: files in a table's ``data/`` and ``metadata/`` folders that nothing
the table's metadata reaches refers to, and that are older than a cut-off.

Orphans come from commits that never landed (a crash between writing files and the catalog
commit, a commit that failed for good) and from snapshots that expiry dropped (expiry only
edits metadata, so a reader planning on an old snapshot keeps reading it). The cut-off
protects the files of commits in flight and those readers: nothing younger is touched (the
table's copy of a zero-copy file is written when it is registered, so it is young whatever its
producer's age).

Reachable: the current metadata file and those in its log, statistics files, and for every
retained snapshot its manifest list, its manifests and their live data and delete files.
Only ``PyArrowFileIO`` tables (local and S3 warehouses) can be listed.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pyarrow import fs as pafs
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table import Table

log = logging.getLogger(__name__)

FOLDERS = ("data", "metadata")
DEFAULT_OLDER_THAN_S = 3 * 24 * 3600.0
"""Iceberg's own default for ``remove_orphan_files``."""


@dataclass(frozen=True, slots=True)
class OrphanReport:
    table: str
    orphans: tuple[str, ...]
    bytes: int
    deleted: bool

    def describe(self) -> str:
        verb = "removed" if self.deleted else "would remove (dry run)"
        return f"{self.table}: {verb} {len(self.orphans)} orphan files, {self.bytes} bytes"


def reachable_paths(table: Table) -> set[str]:
    """Filesystem paths (``PyArrowFileIO.parse_location``) of every file the metadata reaches."""
    md, io = table.metadata, table.io
    locations = {table.metadata_location, *(e.metadata_file for e in md.metadata_log)}
    locations |= {s.statistics_path for s in md.statistics} | {s.statistics_path for s in md.partition_statistics}
    manifests: set[str] = set()
    for snapshot in md.snapshots:
        locations.add(snapshot.manifest_list)
        for manifest in snapshot.manifests(io):
            if manifest.manifest_path in manifests:  # snapshots share most manifests: read each once
                continue
            manifests.add(manifest.manifest_path)
            locations.update(e.data_file.file_path for e in manifest.fetch_manifest_entry(io, discard_deleted=True))
    locations |= manifests
    return {PyArrowFileIO.parse_location(loc, io.properties)[2] for loc in locations}


def remove_orphans(table: Table, name: str, older_than_s: float = DEFAULT_OLDER_THAN_S, dry_run: bool = False) -> OrphanReport:
    """Delete (or with ``dry_run`` only list) the table's orphan files older than ``older_than_s``."""
    io = table.io
    if not isinstance(io, PyArrowFileIO):
        raise ValueError(f"{name}: orphan cleanup needs pyiceberg's PyArrowFileIO, the table uses {type(io).__name__}")
    scheme, netloc, root = PyArrowFileIO.parse_location(table.location().rstrip("/"), io.properties)
    fs = io.fs_by_scheme(scheme, netloc)
    cutoff = time.time() - older_than_s
    listed = [
        info
        for folder in FOLDERS
        for info in fs.get_file_info(pafs.FileSelector(f"{root}/{folder}", recursive=True, allow_not_found=True))
        if info.type == pafs.FileType.File and info.mtime is not None and info.mtime.timestamp() < cutoff
    ]
    table.refresh()  # after the listing: a listed file committed meanwhile is reachable
    reachable = reachable_paths(table)
    orphans = sorted((info for info in listed if info.path not in reachable), key=lambda i: i.path)
    if not dry_run:
        for info in orphans:
            fs.delete_file(info.path)
            log.debug("%s: removed orphan %s", name, info.path)
    return OrphanReport(name, tuple(i.path for i in orphans), sum(i.size or 0 for i in orphans), not dry_run)

