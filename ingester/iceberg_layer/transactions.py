"""``transaction``: a pyiceberg transaction whose metadata view is built once per change.

pyiceberg's ``Transaction.table_metadata`` applies every staged update to the table's metadata
and deep-copies the result on each access, and one commit reads it a dozen times or more (the
snapshot producer, ``add_files``, manifest writing): a commit then costs the table's whole
metadata (every snapshot with its summary) times the accesses. Here the view is kept until an
update is staged or the table's metadata changes (a retry refreshes it), so a commit copies it
a few times. The view is read-only for every caller (pyiceberg never mutates it in place).
"""

from __future__ import annotations

from pyiceberg.table import Table, Transaction
from pyiceberg.table.metadata import TableMetadata

from ingester.iceberg_layer.sql_catalog import updated_metadata


class _MemoTransaction(Transaction):
    _memo: tuple[TableMetadata, tuple[object, ...], TableMetadata] | None = None

    @property
    def table_metadata(self) -> TableMetadata:
        base, updates = self._table.metadata, self._updates
        memo = self._memo
        if memo is None or memo[0] is not base or memo[1] is not updates:
            memo = self._memo = (base, updates, updated_metadata(base, updates))
        return memo[2]


def transaction(table: Table, autocommit: bool = False) -> Transaction:
    """``table.transaction()``, with the metadata view built once per staged update (and not
    deep-copied: ``sql_catalog.updated_metadata``)."""
    return _MemoTransaction(table, autocommit=autocommit)


def expire_snapshots(table: Table, ids: list[int]) -> None:
    """``table.maintenance.expire_snapshots().by_ids(ids).commit()`` on a memo transaction:
    pyiceberg's builder reads the transaction's metadata a few times per snapshot id, which on a
    plain transaction deep-copies the whole history each time (quadratic in the snapshots)."""
    from pyiceberg.table.update.snapshot import ExpireSnapshots

    ExpireSnapshots(transaction=transaction(table, autocommit=True)).by_ids(ids).commit()
