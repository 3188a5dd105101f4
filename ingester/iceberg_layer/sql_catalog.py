"""The SQL catalog with a commit that costs one metadata write, not three passes over the history.

pyiceberg's ``SqlCatalog.commit_table`` loads the table again from its metadata file (parsing
every snapshot), applies the updates, deep-copies the result and writes it: on a stream, whose
table holds hundreds of snapshots, that is most of a small commit. Here the base is the
committing table's own metadata when the catalog row still points at the file it was read from
(metadata files are immutable: same location, same content), else the table is loaded as
pyiceberg does; the updates are applied without the final deep copy (``updated_metadata``:
pyiceberg's update functions copy what they change and share the rest, and nothing mutates
table metadata in place); the new file is written and the row moved only if it still points
at the base (the optimistic check pyiceberg makes), else ``CommitFailedException``.

``updated_metadata`` is also the view ``transactions`` builds and what ``multi_commit`` stages.
"""

from __future__ import annotations

from typing import Any

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError
from pyiceberg.table import CommitTableResponse, StagedTable, Table
from pyiceberg.table.locations import load_location_provider
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import (
    TableRequirement,
    TableUpdate,
    _apply_table_update,
    _TableMetadataUpdateContext,
    _update_table_metadata_log,
)
from pyiceberg.utils.datetime import datetime_to_millis


def updated_metadata(base: TableMetadata, updates: tuple[TableUpdate, ...], metadata_location: str | None = None) -> TableMetadata:
    """``update_table_metadata(base, updates, metadata_location=...)`` without its deep copy of
    the result (the same checks; unchanged parts are shared with ``base``)."""
    from datetime import datetime

    context = _TableMetadataUpdateContext()
    new = base
    for update in updates:
        new = _apply_table_update(update, new, context)
    if context.has_changes():
        if metadata_location:
            new = _update_table_metadata_log(new, metadata_location, base.last_updated_ms)
        if base.last_updated_ms == new.last_updated_ms:
            new = new.model_copy(update={"last_updated_ms": datetime_to_millis(datetime.now().astimezone())})
    new.spec().check_compatible(new.schema())
    new.sort_order().check_compatible(new.schema())
    return new


def pointer(catalog: SqlCatalog, identifier: tuple[str, ...]) -> str | None:
    """The metadata location the catalog's row of ``identifier`` points at (None: no such table)."""
    from sqlalchemy import select
    from sqlalchemy.orm import Session

    *namespace, name = identifier
    with Session(catalog.engine) as session:
        stmt = select(IcebergTables.metadata_location).where(
            IcebergTables.catalog_name == catalog.name, IcebergTables.table_namespace == ".".join(namespace),
            IcebergTables.table_name == name)
        return session.execute(stmt).scalar_one_or_none()


def current(catalog: SqlCatalog, table: Table) -> Table:
    """``table`` itself when the catalog still points at its metadata file, else the table as
    the catalog has it now (``NoSuchTableError`` when it is gone)."""
    location = pointer(catalog, table.name())
    if location is None:
        raise NoSuchTableError(f"Table does not exist: {'.'.join(table.name())}")
    return table if location == table.metadata_location else catalog.load_table(table.name())


def stage(catalog: SqlCatalog, base: Table, requirements: tuple[TableRequirement, ...],
          updates: tuple[TableUpdate, ...]) -> StagedTable:
    """``SqlCatalog._update_and_stage_table`` for an existing table, without the deep copy."""
    for requirement in requirements:
        requirement.validate(base.metadata)
    metadata = updated_metadata(base.metadata, updates, base.metadata_location)
    version = catalog._parse_metadata_version(base.metadata_location) + 1
    location = load_location_provider(metadata.location, metadata.properties).new_table_metadata_file_location(version)
    return StagedTable(identifier=base.name(), metadata=metadata, metadata_location=location,
                       io=catalog._load_file_io(properties=metadata.properties, location=location), catalog=catalog)


class StreamingSqlCatalog(SqlCatalog):
    """``SqlCatalog`` whose ``commit_table`` of an existing table skips the reload and the deep
    copy (module docstring); creating a table and everything else is pyiceberg's."""

    def commit_table(
        self, table: Table, requirements: tuple[TableRequirement, ...], updates: tuple[TableUpdate, ...]
    ) -> CommitTableResponse:
        from sqlalchemy import update
        from sqlalchemy.orm import Session

        if not self.engine.dialect.supports_sane_rowcount:
            return super().commit_table(table, requirements, updates)
        try:
            base = current(self, table)
        except NoSuchTableError:
            return super().commit_table(table, requirements, updates)  # pyiceberg creates it
        if not updates:
            return CommitTableResponse(metadata=base.metadata, metadata_location=base.metadata_location)
        staged = stage(self, base, requirements, updates)
        self._write_metadata(metadata=staged.metadata, io=staged.io, metadata_path=staged.metadata_location)
        *namespace, name = table.name()
        with Session(self.engine) as session:
            stmt = update(IcebergTables).where(
                IcebergTables.catalog_name == self.name, IcebergTables.table_namespace == ".".join(namespace),
                IcebergTables.table_name == name, IcebergTables.metadata_location == base.metadata_location,
            ).values(metadata_location=staged.metadata_location, previous_metadata_location=base.metadata_location)
            if session.execute(stmt).rowcount < 1:  # type: ignore[attr-defined]  # a CursorResult
                raise CommitFailedException(f"Table has been updated by another process: {'.'.join(table.name())}")
            session.commit()
        return CommitTableResponse(metadata=staged.metadata, metadata_location=staged.metadata_location)


def load(name: str, properties: dict[str, Any]) -> Catalog:
    """``load_catalog(name, **properties)``, with ``StreamingSqlCatalog`` for ``type = sql`` and
    ``fileio.PutOnceFileIO`` unless the properties name a FileIO."""
    from pyiceberg.catalog import load_catalog

    from ingester.iceberg_layer.fileio import with_file_io

    properties = with_file_io(properties)
    if properties.get("type") == "sql":
        return StreamingSqlCatalog(name, **properties)
    return load_catalog(name, **properties)


