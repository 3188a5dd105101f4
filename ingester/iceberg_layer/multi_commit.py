"""One commit for the staged transactions of several tables: all land, or none.

``MultiTableCommit.commit`` takes pyiceberg transactions whose snapshot producers have run
(their updates and requirements staged, nothing committed) and commits them:

- REST catalog with ``POST /v1/{prefix}/transactions/commit`` (advertised in ``/v1/config``, or
  answered by an empty probe): one request holding each table's ``identifier``, ``requirements``
  and ``updates``, serialised exactly as pyiceberg's ``commit_table`` serialises its
  ``CommitTableRequest``, on the catalog's own HTTP session (auth, SigV4, prefix). The server
  applies every change or none (409 on a stale requirement: ``CommitFailedException``).
- SQL catalog: each table's new metadata file is written first, then every table's row of
  ``iceberg_tables`` moves to its new file in ONE database transaction, each update checked
  against the metadata location the change was validated on; one mismatch rolls back all.
- Otherwise (mode ``off``, another catalog type, a REST server without the endpoint): the
  tables commit one after another (today's per-table commits: a reader may see some first).

No pyiceberg commit retry runs here (its rebuild of a snapshot after a 409 would skip our
idempotency markers): a ``CommitFailedException`` goes to the caller, which refreshes its
tables, re-reads the markers and stages the changes afresh. Blocking; raises catalog errors.

Test-only fault hook: ``INGESTER_TEST_CRASH=multi-commit:<point>`` SIGKILLs the process at
``staged`` (every table's change built, before the request / metadata pointers), ``pointers``
(SQL: every row updated, the database transaction not committed) or ``committed`` (after the
commit returned, before the tables are read back).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from pyiceberg.catalog import Catalog
from pyiceberg.catalog.sql import IcebergTables, SqlCatalog
from pyiceberg.exceptions import CommitFailedException, CommitStateUnknownException
from pyiceberg.table import CommitTableRequest, StagedTable, Table, TableIdentifier, Transaction
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.update import AssertTableUUID, TableRequirement, TableUpdate

from ingester.iceberg_layer.sql_catalog import current, stage

log = logging.getLogger(__name__)

AtomicSetting = Literal["auto", "off"]
AtomicMode = Literal["rest", "sql", "per-table"]
CRASH_ENV = "INGESTER_TEST_CRASH"
_CRASH_PREFIX = "multi-commit:"


@dataclass(frozen=True, slots=True)
class TableChange:
    """What one table's transaction commits: the table (its metadata is the base), the staged
    updates, and the requirements the catalog checks them against."""

    table: Table
    updates: tuple[TableUpdate, ...]
    requirements: tuple[TableRequirement, ...]

    @classmethod
    def of(cls, tx: Transaction) -> TableChange:
        """The change ``tx`` stages (pyiceberg's ``commit_transaction`` adds the uuid check too)."""
        requirements = tx._requirements
        if not any(isinstance(r, AssertTableUUID) for r in requirements):
            requirements = (*requirements, AssertTableUUID(uuid=tx.table_metadata.table_uuid))
        return cls(tx._table, tx._updates, requirements)

    def request(self) -> CommitTableRequest:
        *namespace, name = self.table.name()
        ident = TableIdentifier(namespace=namespace, name=name)  # type: ignore[arg-type]  # pydantic coerces the list
        return CommitTableRequest(identifier=ident, requirements=self.requirements, updates=self.updates)


def crash(point: str) -> None:
    """The test-only fault hook (module docstring)."""
    if os.environ.get(CRASH_ENV) == _CRASH_PREFIX + point:
        os.kill(os.getpid(), signal.SIGKILL)


class MultiTableCommit:
    """Commits the changes of several tables of one catalog at once where the catalog can
    (``mode``), else one after another. Thread-safe; one instance per catalog."""

    def __init__(self, catalog: Catalog, setting: AtomicSetting = "auto") -> None:
        self.catalog = catalog
        self.setting = setting
        self._mode: AtomicMode | None = None

    @property
    def mode(self) -> AtomicMode:
        """``rest`` / ``sql``: atomic across tables; ``per-table``: today's commits. A REST
        server is asked once (network errors raise, to be retried)."""
        if self._mode is None:
            self._mode = _detect(self.catalog, self.setting)
            log.info("multi-table commits on catalog %s: %s", self.catalog.name, self._mode)
        return self._mode

    def commit(self, transactions: Sequence[Transaction]) -> None:
        """Commit every transaction with staged updates (the others are skipped), atomically
        when ``mode`` allows. Raises ``CommitFailedException`` (nothing of an atomic commit
        applied; for per-table commits, the tables before the failing one stay committed),
        ``CommitStateUnknownException`` and the catalog's other errors. Not retried here."""
        staged = [tx for tx in transactions if tx._updates]
        if not staged:
            return
        mode = self.mode if len(staged) > 1 else "per-table"
        changes = [TableChange.of(tx) for tx in staged]
        tokens: set[str | None] = set()
        if mode == "rest":
            from ingester.iceberg_layer import rest_commit

            tokens = {rest_commit.table_token(c.table) for c in changes}
            if len(tokens) > 1:  # one request has one Authorization: each table with its own
                log.info("tables %s carry different table tokens: committed one after another",
                         ", ".join(".".join(c.table.name()) for c in changes))
                mode = "per-table"
        landed = 0
        try:
            if mode == "rest":
                rest_commit.commit(self.catalog, changes, next(iter(tokens)))
            elif mode == "sql":
                assert isinstance(self.catalog, SqlCatalog)
                _commit_sql(self.catalog, changes)
            else:
                for change in changes:
                    crash("staged")
                    change.table._do_commit(change.updates, change.requirements)
                    landed += 1
                crash("committed")
        except CommitFailedException:
            for tx in staged[landed:]:  # nothing of theirs landed: their manifests go
                for producer in tx._snapshot_producers:
                    producer._clean_all_uncommitted()
            raise


def _detect(catalog: Catalog, setting: AtomicSetting) -> AtomicMode:
    if setting == "off":
        return "per-table"
    if isinstance(catalog, SqlCatalog):
        return "sql"
    if _is_rest(catalog):
        from ingester.iceberg_layer import rest_commit as rest

        return "rest" if rest.supports_transactions(catalog) else "per-table"
    return "per-table"


def _is_rest(catalog: Catalog) -> bool:
    """A ``RestCatalog`` exists only once its module is imported: a process on another catalog
    never imports it (with requests, 90 ms of a cron-run dlt pipeline's start)."""
    module = sys.modules.get("pyiceberg.catalog.rest")
    return module is not None and isinstance(catalog, module.RestCatalog)


def _commit_sql(catalog: SqlCatalog, changes: Sequence[TableChange]) -> None:
    from sqlalchemy import update
    from sqlalchemy.exc import NoResultFound
    from sqlalchemy.orm import Session

    staged: list[tuple[TableMetadata, str, StagedTable]] = []
    for change in changes:
        base = current(catalog, change.table)  # the table itself while the catalog still points at its file
        new = stage(catalog, base, change.requirements, change.updates)  # checks requirements
        catalog._write_metadata(metadata=new.metadata, io=new.io, metadata_path=new.metadata_location)
        staged.append((base.metadata, base.metadata_location, new))
    crash("staged")
    with Session(catalog.engine) as session:  # one database transaction: every pointer or none
        for change, (_, base_location, new) in zip(changes, staged):
            *namespace, name = change.table.name()
            where = (IcebergTables.catalog_name == catalog.name, IcebergTables.table_namespace == ".".join(namespace),
                     IcebergTables.table_name == name, IcebergTables.metadata_location == base_location)
            stale = CommitFailedException(f"Table has been updated by another process: {'.'.join(change.table.name())}")
            if catalog.engine.dialect.supports_sane_rowcount:
                stmt = update(IcebergTables).where(*where).values(
                    metadata_location=new.metadata_location, previous_metadata_location=base_location)
                if session.execute(stmt).rowcount < 1:  # type: ignore[attr-defined]  # a CursorResult
                    raise stale
            else:
                try:
                    row = session.query(IcebergTables).with_for_update(of=IcebergTables).filter(*where).one()
                except NoResultFound as exc:
                    raise stale from exc
                row.metadata_location = new.metadata_location
                row.previous_metadata_location = base_location
        crash("pointers")
        session.commit()
    crash("committed")
    for change, (base_metadata, _, new) in zip(changes, staged):
        change.table.metadata = new.metadata
        change.table.metadata_location = new.metadata_location
        delete_old_metadata(catalog, change.table, base_metadata)


def delete_old_metadata(catalog: Catalog, table: Table, base: object) -> None:
    """As pyiceberg's ``Table._do_commit``: old metadata files go when the table says so."""
    try:
        catalog._delete_old_metadata(table.io, base, table.metadata)  # type: ignore[arg-type]
    except Exception as exc:  # noqa: BLE001 - as pyiceberg: the commit stands
        warnings.warn(f"Failed to delete old metadata after commit: {exc}", stacklevel=2)
