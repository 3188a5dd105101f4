"""Our snapshot producers: pyiceberg's private producer classes, extended.

``MergeOnReadFiles``: one OVERWRITE snapshot adding data files and position delete files (merge).
``CompactionFiles``: one REPLACE snapshot rewriting data files and dropping their delete files.
``DeleteRewriteFiles``: one REPLACE snapshot swapping delete files for position delete files.
``DeleteManifestWriter``: a v2 manifest of delete files.
"""

from __future__ import annotations

from collections.abc import Callable

from pyiceberg.exceptions import ValidationException
from pyiceberg.io import FileIO
from pyiceberg.manifest import (
    DataFile,
    DataFileContent,
    ManifestContent,
    ManifestEntry,
    ManifestEntryStatus,
    ManifestFile,
    ManifestWriter,
    ManifestWriterV2,
)
from pyiceberg.table import Table, Transaction
from pyiceberg.table.snapshots import Operation, Summary
from pyiceberg.table.update.snapshot import _FastAppendFiles, _OverwriteFiles
from pyiceberg.table.update.validate import _validate_data_files_exist, _validate_no_new_deletes_for_data_files
from pyiceberg.typedef import EMPTY_DICT


class DeleteManifestWriter(ManifestWriterV2):
    def content(self) -> ManifestContent:  # type: ignore[override]
        return ManifestContent.DELETES

    @property
    def _meta(self) -> dict[str, str]:
        return {**super()._meta, "content": "deletes"}


def _with_delete_manifests(producer: _FastAppendFiles | _OverwriteFiles, manifests: Callable[[], list[ManifestFile]]) -> list[ManifestFile]:
    """``manifests()`` (the base class's) over the added data files only, plus one delete
    manifest per spec for the added position delete files."""
    everything = list(producer._added_data_files)
    deletes = [f for f in everything if f.content == DataFileContent.POSITION_DELETES]
    producer._added_data_files = [f for f in everything if f.content == DataFileContent.DATA]
    try:
        out = manifests()
    finally:
        producer._added_data_files = everything
    meta = producer._transaction.table_metadata
    by_spec: dict[int, list[DataFile]] = {}
    for f in deletes:
        by_spec.setdefault(f.spec_id, []).append(f)
    for spec_id, files in by_spec.items():
        writer = DeleteManifestWriter(meta.specs()[spec_id], meta.schema(), producer.new_manifest_output(),
                                      producer._snapshot_id, producer._compression)
        with writer:
            for f in files:
                writer.add(ManifestEntry.from_args(status=ManifestEntryStatus.ADDED, snapshot_id=producer._snapshot_id,
                                                   sequence_number=None, file_sequence_number=None, data_file=f))
        out.append(writer.to_manifest_file())
    return out


class MergeOnReadFiles(_FastAppendFiles):
    """One OVERWRITE snapshot that adds data files and position delete files."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, operation=Operation.OVERWRITE, **kwargs)  # type: ignore[arg-type, misc]

    def _manifests(self) -> list[ManifestFile]:
        return _with_delete_manifests(self, super()._manifests)


class CompactionFiles(_OverwriteFiles):
    """One ``replace`` snapshot: adds the rewritten data files, removes the data files and
    position delete files given to ``delete_data_file`` (in their own manifests, so delete
    files are removed as delete files). On a pyiceberg commit retry the summary properties are
    recomputed from the new head (``properties``) and only real conflicts are validated:
    our input files removed, or new deletes added for them. Concurrent appends are fine."""

    def __init__(self, transaction: Transaction, io: FileIO, properties: Callable[[Table], dict[str, str]]) -> None:
        super().__init__(
            operation=Operation.OVERWRITE, transaction=transaction, io=io, snapshot_properties=properties(transaction._table)
        )
        self._properties = properties

    def added_files(self) -> list[DataFile]:
        return list(self._added_data_files)

    def _refresh_for_retry(self) -> None:
        super()._refresh_for_retry()
        self.snapshot_properties = self._properties(self._transaction._table)

    def _validate_concurrency(self) -> None:
        window = self._commit_window
        if window is None or window.is_empty() or window.head is None:
            return
        table = self._transaction._table
        inputs = {f for f in self._deleted_data_files if f.content == DataFileContent.DATA}
        _validate_data_files_exist(table, window.head, inputs, window.base)
        _validate_no_new_deletes_for_data_files(table, window.head, None, inputs, window.base)

    def _summary(self, snapshot_properties: dict[str, str] = EMPTY_DICT) -> Summary:
        # pyiceberg totals only OVERWRITE/APPEND/DELETE summaries; the operation is a REPLACE
        summary = super()._summary(snapshot_properties)
        return Summary(Operation.REPLACE, **summary.additional_properties)

    def _deleted_entries(self) -> list[ManifestEntry]:
        return []  # the DELETED entries go into the rewritten manifests (_existing_manifests)

    def _existing_manifests(self) -> list[ManifestFile]:
        parent_id = self._parent_snapshot_id
        parent = self._transaction.table_metadata.snapshot_by_id(parent_id) if parent_id is not None else None
        if parent is None:
            raise ValidationException("cannot compact a table without a snapshot")
        manifests, found = [], set()
        for manifest in parent.manifests(self._io):
            entries = manifest.fetch_manifest_entry(self._io, discard_deleted=True)
            gone = {e.data_file.file_path for e in entries if e.data_file in self._deleted_data_files}
            if not gone:
                manifests.append(manifest)
                continue
            found |= gone
            with self._manifest_writer(manifest) as writer:
                for e in entries:
                    (writer.delete if e.data_file.file_path in gone else writer.existing)(e)
            manifests.append(writer.to_manifest_file())
        missing = sorted(f.file_path for f in self._deleted_data_files if f.file_path not in found)
        if missing:
            raise ValidationException(f"files to compact are gone: {missing[:3]}")
        return manifests

    def _manifest_writer(self, manifest: ManifestFile) -> ManifestWriter:
        spec = self.spec(manifest.partition_spec_id)
        if manifest.content == ManifestContent.DELETES:
            return DeleteManifestWriter(spec, self.schema(), self.new_manifest_output(), self._snapshot_id, self._compression)
        return self.new_manifest_writer(spec)


class DeleteRewriteFiles(CompactionFiles):
    """A ``CompactionFiles`` whose added files are position delete files (the rows stay; only
    how their deletion is recorded changes), e.g. for equality delete files given to
    ``delete_data_file``."""

    def _manifests(self) -> list[ManifestFile]:
        return _with_delete_manifests(self, super()._manifests)
