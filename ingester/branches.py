"""Table branches for write-audit-publish: the head a commit builds on, a branch made from
``main`` when missing, and publishing (fast-forward ``main``), listing and dropping branches.

A commit to a branch (``FileEvent.branch``, ``routing.branches``, the dlt adapter's ``branch``)
builds on the branch's head and moves only the branch; readers of ``main`` see nothing until
``publish`` moves ``main`` to the branch's head, which it does only when ``main``'s head is
an ancestor of it (a fast-forward: nothing committed to ``main`` meanwhile is lost). Public
pyiceberg API only (``ManageSnapshots``); each change is one catalog commit that asserts the
refs it read, so a concurrent writer makes it fail instead of being overwritten.
"""

from __future__ import annotations

from dataclasses import dataclass

from pyiceberg.exceptions import CommitFailedException
from pyiceberg.table import Table
from pyiceberg.table.metadata import TableMetadata
from pyiceberg.table.refs import MAIN_BRANCH, SnapshotRefType
from pyiceberg.table.snapshots import Snapshot, ancestors_of

from ingester.errors import TerminalError

MAIN = MAIN_BRANCH
BRANCH_BASE = "ingester.branch-base"
"""Summary property of the empty snapshot made on ``main`` of a new table for a branch to start from."""


class BranchError(TerminalError):
    """A branch operation refused: the text says which table, which branch and why."""


@dataclass(frozen=True, slots=True)
class BranchInfo:
    """One branch of a table: its head snapshot, and how many snapshots it is ahead of ``main``
    (None: ``main`` is not an ancestor of it, publishing it is refused)."""

    name: str
    snapshot_id: int
    ahead_of_main: int | None

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "snapshot_id": self.snapshot_id, "ahead_of_main": self.ahead_of_main}


def head(table: Table, branch: str = MAIN) -> Snapshot | None:
    """The head snapshot of ``branch`` (None: no such branch, or ``main`` without a snapshot)."""
    return table.snapshot_by_name(branch)


def ensure_branch(table: Table, branch: str) -> None:
    """Make ``branch`` at ``main``'s head when missing (``table`` is updated). Nothing to do
    for ``main`` or an existing branch. A table without a snapshot gets an empty one on
    ``main`` first (no file: ``main`` still reads no rows), as a branch needs a snapshot to
    start from (the catalogs refuse a first commit to another branch). Raises ``BranchError``
    when ``branch`` is a tag; ``CommitFailedException`` when another writer changed the table
    meanwhile (retry: this is idempotent)."""
    if branch == MAIN:
        return
    ref = table.metadata.refs.get(branch)
    if ref is not None:
        if ref.snapshot_ref_type != SnapshotRefType.BRANCH:
            raise BranchError(f"{_name(table)}: {branch!r} is a tag, not a branch: commits cannot go to it")
        return
    main = head(table)
    if main is None:
        with table.transaction() as tx, tx.update_snapshot(snapshot_properties={BRANCH_BASE: branch}).fast_append():
            pass
        main = head(table)
        assert main is not None
    table.manage_snapshots().create_branch(main.snapshot_id, branch).commit()


def _ahead(table: Table, tip: Snapshot, base: Snapshot | None) -> int | None:
    """How many snapshots ``tip``'s lineage has over ``base`` (None: ``base`` is not in it)."""
    if base is None:
        return len(list(ancestors_of(tip, table.metadata)))
    for n, snap in enumerate(ancestors_of(tip, table.metadata)):
        if snap.snapshot_id == base.snapshot_id:
            return n
    return None


def list_branches(table: Table) -> list[BranchInfo]:
    """Every branch of ``table`` (tags left out), ``main`` first, then by name."""
    main = head(table)
    out = []
    for name, ref in table.metadata.refs.items():
        if ref.snapshot_ref_type != SnapshotRefType.BRANCH:
            continue
        tip = table.metadata.snapshot_by_id(ref.snapshot_id)
        ahead = 0 if name == MAIN else (_ahead(table, tip, main) if tip is not None else None)
        out.append(BranchInfo(name, ref.snapshot_id, ahead))
    return sorted(out, key=lambda b: (b.name != MAIN, b.name))


def publish(table: Table, source: str, target: str = MAIN) -> BranchInfo:
    """Fast-forward ``target`` to the head of ``source``; returns ``target`` as it is now.

    Refused (``BranchError``, nothing changed) when ``source`` is missing or not a branch, or
    when ``target``'s head is not an ancestor of ``source``'s head (``target`` moved on since
    the branch was made: publishing would drop those commits). The commit asserts ``target``'s
    head, so a commit to ``target`` racing the check also makes it fail (``BranchError``).
    ``source`` is kept (``drop_branch`` removes it)."""
    ref = table.metadata.refs.get(source)
    if ref is None or ref.snapshot_ref_type != SnapshotRefType.BRANCH:
        raise BranchError(f"{_name(table)}: no branch {source!r} to publish")
    tip = table.metadata.snapshot_by_id(ref.snapshot_id)
    base = head(table, target)
    if tip is None:
        raise BranchError(f"{_name(table)}: the head of branch {source!r} ({ref.snapshot_id}) is not in the table")
    ahead = _ahead(table, tip, base)
    if ahead is None:
        assert base is not None
        raise BranchError(
            f"{_name(table)}: cannot publish {source!r} to {target!r}: {target!r} moved on (its head {base.snapshot_id} "
            f"is not an ancestor of {source!r}'s head {tip.snapshot_id}); write the branch again from {target!r}"
        )
    if ahead == 0:
        return BranchInfo(target, tip.snapshot_id, 0)
    try:
        manage = table.manage_snapshots()
        if target == MAIN:
            manage.set_current_snapshot(tip.snapshot_id)
        else:
            manage.create_branch(tip.snapshot_id, target)
        manage.commit()
    except CommitFailedException as exc:
        raise BranchError(f"{_name(table)}: {target!r} changed while publishing {source!r}; nothing published: {exc}") from None
    return BranchInfo(target, tip.snapshot_id, 0)


def drop_branch(table: Table, name: str) -> None:
    """Remove branch ``name`` (its snapshots go with the next expiry once no ref keeps them).
    Refuses ``main`` and names that are not branches (``BranchError``)."""
    if name == MAIN:
        raise BranchError(f"{_name(table)}: the main branch cannot be dropped")
    ref = table.metadata.refs.get(name)
    if ref is None or ref.snapshot_ref_type != SnapshotRefType.BRANCH:
        raise BranchError(f"{_name(table)}: no branch {name!r}")
    table.manage_snapshots().remove_branch(name).commit()


def unpublished(metadata: TableMetadata) -> set[int]:
    """Ids of the snapshots of every other branch's lineage that ``main``'s lineage lacks:
    commits not published yet (maintenance keeps them: their markers are the branch's dedupe)."""
    main = {s.snapshot_id for s in ancestors_of(metadata.current_snapshot(), metadata)}
    out: set[int] = set()
    for name, ref in metadata.refs.items():
        if name == MAIN or ref.snapshot_ref_type != SnapshotRefType.BRANCH:
            continue
        for snap in ancestors_of(metadata.snapshot_by_id(ref.snapshot_id), metadata):
            if snap.snapshot_id in main:
                break
            out.add(snap.snapshot_id)
    return out


def _name(table: Table) -> str:
    return ".".join(table.name())
