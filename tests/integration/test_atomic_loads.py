"""A dlt load is atomic across its tables (``ingester.iceberg_layer.multi_commit``), on the
embedded SQL catalog (one database transaction) and on SeaweedFS's REST catalog
(``POST /v1/{prefix}/transactions/commit``):

- a reader polling during 50 loads of a parent with a nested child never sees one table of a
  load without the others (``parent``, ``parent__items``, ``dlt_loads``: the ``_dlt_load_id``
  sets of the snapshots it saw at one moment agree); with ``atomic_multi_table="off"`` (today's
  per-table commits) the same reader does see partial loads, so the check can fail;
- a 409 on one table of the load's commit (a concurrent writer commits to the child between
  the build and the commit) applies nothing, and the retry lands every table exactly once;
- a process SIGKILLed at each point of the commit leaves all of the load or none of it, and a
  resumed load lands exact rows.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dlt
import pyarrow as pa
import pytest
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import CommitFailedException, NoSuchTableError

from ingester.iceberg_layer.multi_commit import CRASH_ENV, MultiTableCommit
from tests.integration.test_dlt_destination import Target
from tests.support import CatalogUnderTest

PARENTS_PER_LOAD = 4
ITEMS_PER_PARENT = 3
TABLES = ("parent", "parent__items", "dlt_loads")
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def target(any_catalog: CatalogUnderTest, tmp_path: Path) -> Target:
    return Target(any_catalog.kind, f"a_{uuid.uuid4().hex[:10]}", tmp_path, any_catalog.server)


@dlt.resource(name="parent", write_disposition="append")
def parents(load: int) -> Iterator[dict[str, Any]]:
    for i in range(PARENTS_PER_LOAD):
        pid = load * PARENTS_PER_LOAD + i
        yield {"id": pid, "load": load, "items": [{"k": pid * 10 + j} for j in range(ITEMS_PER_PARENT)]}


def expected_parents(loads: int) -> list[int]:
    return list(range(loads * PARENTS_PER_LOAD))


def expected_items(loads: int) -> list[int]:
    return sorted(pid * 10 + j for pid in expected_parents(loads) for j in range(ITEMS_PER_PARENT))


class Poller(threading.Thread):
    """Reads the current snapshot ids of the three tables in a loop, keeping the moments the
    parent did not move while the others were read: ``parent`` is read before and after
    ``parent__items`` and ``dlt_loads``; every load commits to all three, so when atomic, an
    unmoved parent means none moved."""

    def __init__(self, catalog: Catalog, namespace: str) -> None:
        super().__init__(daemon=True)
        self.catalog, self.namespace = catalog, namespace
        self.moments: list[tuple[int | None, ...]] = []
        self.polls = 0
        self.halt = threading.Event()

    def _current(self, name: str) -> int | None:
        snap = self.catalog.load_table((self.namespace, name)).current_snapshot()
        return snap.snapshot_id if snap else None

    def run(self) -> None:
        while not self.halt.is_set():
            try:
                first = self._current(TABLES[0])
                others = tuple(self._current(name) for name in TABLES[1:])
                again = self._current(TABLES[0])
            except NoSuchTableError:
                time.sleep(0.01)
                continue
            self.polls += 1
            if first == again:
                self.moments.append((first, *others))


class LoadIds:
    """The ``_dlt_load_id`` set of a table at a snapshot, read from the data (cached per
    snapshot): a child row's is its parent's (``_dlt_parent_id`` -> the parent's ``_dlt_id``);
    ``dlt_loads`` lists them in ``load_id``."""

    def __init__(self, catalog: Catalog, namespace: str) -> None:
        self.catalog, self.namespace = catalog, namespace
        self._cache: dict[tuple[str, int | None], frozenset[str]] = {}
        parent = self._scan("parent", None, ("_dlt_id", "_dlt_load_id"))
        self._parent_load = dict(zip(parent["_dlt_id"], parent["_dlt_load_id"]))

    def _scan(self, name: str, snapshot_id: int | None, columns: tuple[str, ...]) -> dict[str, list[Any]]:
        table = self.catalog.load_table((self.namespace, name))
        return table.scan(selected_fields=columns, snapshot_id=snapshot_id).to_arrow().to_pydict()

    def __call__(self, name: str, snapshot_id: int | None) -> frozenset[str]:
        key = (name, snapshot_id)
        if key not in self._cache:
            if snapshot_id is None:
                ids: frozenset[str] = frozenset()
            elif name == "dlt_loads":
                ids = frozenset(self._scan(name, snapshot_id, ("load_id",))["load_id"])
            elif name == "parent__items":
                ids = frozenset(self._parent_load[p] for p in self._scan(name, snapshot_id, ("_dlt_parent_id",))["_dlt_parent_id"])
            else:
                ids = frozenset(self._scan(name, snapshot_id, ("_dlt_load_id",))["_dlt_load_id"])
            self._cache[key] = ids
        return self._cache[key]


def partial_moments(target: Target, poller: Poller) -> list[tuple[frozenset[str], ...]]:
    """The polled moments whose tables disagree on the loads they hold."""
    load_ids = LoadIds(target.catalog(), target.namespace)
    partial = []
    for moment in dict.fromkeys(poller.moments):
        sets = tuple(load_ids(name, snap) for name, snap in zip(TABLES, moment))
        if len(set(sets)) > 1:
            partial.append(sets)
    return partial


def run_loads_while_polling(target: Target, loads: int, **destination: Any) -> Poller:
    """Load 0 makes the catalog and the tables; the reader polls during the ``loads`` after it."""
    pipeline = target.pipeline("atomic", **destination)
    pipeline.run(parents(0))
    poller = Poller(target.catalog(), target.namespace)
    poller.start()
    try:
        for load in range(1, loads + 1):
            pipeline.run(parents(load))
    finally:
        poller.halt.set()
        poller.join(timeout=30)
    return poller


def check_rows(target: Target, loads: int) -> None:
    assert sorted(r["id"] for r in target.rows("parent")) == expected_parents(loads)
    assert sorted(r["k"] for r in target.rows("parent__items")) == expected_items(loads)
    assert len(target.rows("dlt_loads")) == loads
    for name in TABLES:
        assert len(target.table(name).metadata.snapshots) == loads, name


@pytest.mark.timeout(900)
def test_a_reader_polling_during_50_loads_never_sees_part_of_a_load(target: Target) -> None:
    poller = run_loads_while_polling(target, 50)
    mode = MultiTableCommit(target.catalog()).mode
    assert mode == target.kind  # rest / sql: atomic on both catalogs of the test stack
    assert poller.polls >= 50 and len(set(poller.moments)) >= 10, (poller.polls, len(set(poller.moments)))
    partial = partial_moments(target, poller)
    print(f"{target.kind}: {poller.polls} polls, {len(set(poller.moments))} distinct moments, {len(partial)} partial")
    assert partial == []
    check_rows(target, 51)
    duck = target.duck_rows("parent__items")
    assert sorted(r["k"] for r in duck) == expected_items(51)


@pytest.mark.timeout(900)
def test_per_table_commits_let_the_same_reader_see_part_of_a_load(target: Target) -> None:
    """The check above can fail: with the fallback (``atomic_multi_table="off"``), the data
    tables commit in their jobs and ``dlt_loads`` after them, and the reader catches that."""
    poller = run_loads_while_polling(target, 20, atomic_multi_table="off")
    partial = partial_moments(target, poller)
    print(f"{target.kind} (off): {poller.polls} polls, {len(set(poller.moments))} distinct moments, {len(partial)} partial")
    assert partial, f"{poller.polls} polls saw no partial load"
    check_rows(target, 21)


@pytest.mark.timeout(600)
def test_a_conflict_on_one_table_applies_nothing_and_the_retry_lands_every_table_once(
    target: Target, monkeypatch: pytest.MonkeyPatch
) -> None:
    pipeline = target.pipeline("atomic")
    pipeline.run(parents(0))
    commit = MultiTableCommit.commit
    seen: list[dict[str, int]] = []

    def conflicting(self: MultiTableCommit, transactions: Any) -> None:
        if not seen:  # first attempt: another writer commits to the child between build and commit
            other = target.table("parent__items")
            row = other.scan(limit=1).to_arrow()
            other.append(row.set_column(row.schema.get_field_index("k"), "k", pa.array([-1], pa.int64())))
            try:
                commit(self, transactions)
            except CommitFailedException:
                seen.append({name: len(target.table(name).metadata.snapshots) for name in TABLES})
                raise
            raise AssertionError("a stale child commit was applied")
        commit(self, transactions)

    monkeypatch.setattr(MultiTableCommit, "commit", conflicting)
    pipeline.run(parents(1))
    assert seen == [{"parent": 1, "parent__items": 2, "dlt_loads": 1}]  # the failed commit applied nothing
    assert sorted(r["id"] for r in target.rows("parent")) == expected_parents(2)
    assert sorted(r["k"] for r in target.rows("parent__items")) == [-1, *expected_items(2)]
    assert len(target.rows("dlt_loads")) == 2
    assert [len(target.table(n).metadata.snapshots) for n in TABLES] == [2, 3, 2]


# ---------------------------------------------------------------- kill -9
def child(workdir: Path, kind: str, namespace: str, load: int) -> None:
    """The killed program: ``python test_atomic_loads.py <workdir> <kind> <namespace> <load>``."""
    from tests.integration.test_dlt_destination import Target as ChildTarget

    server = None
    if kind == "rest":
        from types import SimpleNamespace

        server = SimpleNamespace(**{k[len("SW_"):].lower(): v for k, v in os.environ.items() if k.startswith("SW_")})
    pipeline = ChildTarget(kind, namespace, workdir, server).pipeline("atomic")
    if load >= 0:
        pipeline.extract(parents(load))
        pipeline.normalize()
    pipeline.load()
    print("LOADED", flush=True)


def _spawn(target: Target, load: int, crash: str | None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != CRASH_ENV}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    if crash:
        env[CRASH_ENV] = crash
    if target.server is not None:
        s = target.server
        env |= {"SW_ICEBERG_URI": s.iceberg_uri, "SW_WAREHOUSE": s.warehouse, "SW_ACCESS_KEY": s.access_key,
                "SW_SECRET_KEY": s.secret_key, "SW_S3_ENDPOINT": s.s3_endpoint, "SW_REGION": s.region}
    return subprocess.run([sys.executable, __file__, str(target.workdir), target.kind, target.namespace, str(load)],
                          capture_output=True, text=True, env=env, timeout=300, cwd=target.workdir)


def loads_visible(target: Target) -> dict[str, int]:
    """How many loads each table holds (0 while it does not exist)."""
    visible = {}
    for name in TABLES:
        try:
            visible[name] = len(target.table(name).metadata.snapshots)
        except NoSuchTableError:
            visible[name] = 0
    return visible


@pytest.mark.timeout(900)
def test_kill_9_at_each_point_of_the_commit_leaves_all_or_nothing(target: Target) -> None:
    points = ["staged", "pointers", "committed"] if target.kind == "sql" else ["staged", "committed"]
    done = 0
    for load, point in enumerate([*points, *points]):  # each point on a fresh table set and on grown ones
        killed = _spawn(target, load, f"multi-commit:{point}")
        assert killed.returncode == -signal.SIGKILL, killed.stdout[-2000:] + killed.stderr[-4000:]
        visible = loads_visible(target)
        landed = done + 1 if point == "committed" else done
        assert visible == dict.fromkeys(TABLES, landed), (point, visible)  # all of the load, or none
        resumed = _spawn(target, -1, None)
        assert resumed.returncode == 0 and "LOADED" in resumed.stdout, resumed.stderr[-4000:]
        done += 1
        check_rows(target, done)


if __name__ == "__main__":
    child(Path(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]))


# ---------------------------------------------------------------- the daemon
@pytest.mark.timeout(600)
@pytest.mark.parametrize("setting", ["auto", "off"])
def test_the_daemon_commits_batches_of_tables_waiting_together_at_once(
    any_catalog: CatalogUnderTest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, setting: str
) -> None:
    """One worker (``commit.workers=1``), a batch per file: while it commits, batches of the
    other table queue behind it and go in one multi-table commit (``off``: one by one)."""
    from tests.integration.test_engine import Env

    staged: list[int] = []
    commit = MultiTableCommit.commit

    def counting(self: MultiTableCommit, transactions: Any) -> None:
        staged.append(sum(1 for tx in transactions if tx._updates))
        commit(self, transactions)

    monkeypatch.setattr(MultiTableCommit, "commit", counting)
    env = Env(tmp_path / "home", any_catalog.settings, any_catalog.s3,
              {"workers": 1, "atomic_multi_table": setting}, max_batch_files=1)
    for i in range(8):
        for name in ("a", "b"):
            env.publish(env.file({"id": pa.array([i * 2, i * 2 + 1], pa.int64())}), name)
    stats = env.run()
    assert stats.snapshots == 16 and sum(staged) == 16
    assert max(staged) >= 2 if setting == "auto" else set(staged) == {1}, staged
    for name in ("a", "b"):
        assert [r["id"] for r in env.rows(name)] == list(range(16))
        assert len(env.table(name).metadata.snapshots) == 8


# ---------------------------------------------------------------- per-table tokens (REST)
def test_a_table_token_is_the_bearer_of_the_multi_table_commit(seaweed: Any, tmp_path: Path,
                                                               caplog: pytest.LogCaptureFixture) -> None:
    """A REST catalog may vend a token per table (``config.token`` of loadTable): the multi-table
    commit sends it as the bearer (a wrong one is refused by SeaweedFS and nothing lands; the right
    one lands both tables); tables with different tokens commit one after another, as pyiceberg
    commits a table."""
    from ingester.batch import Batch, Pending, TableRef
    from ingester.catalog import open_catalog
    from ingester.commit import SnapshotCommitter
    from ingester.events import FileEvent
    from ingester.settings import CatalogSettings
    from ingester.storage import FileReader
    from tests.support import rest_catalog_settings, write_parquet

    ns = f"k{uuid.uuid4().hex[:8]}"
    catalog = open_catalog(CatalogSettings(**rest_catalog_settings(seaweed)), tmp_path / "home")
    committer = SnapshotCommitter(catalog, FileReader([tmp_path.as_uri()]))
    assert committer.multi.mode == "rest"

    def prepared(start: int) -> list[Any]:
        out = []
        for name in ("a", "b"):
            path = write_parquet(tmp_path / "in", {"id": pa.array([start], pa.int64())})
            event = FileEvent(name, location=str(path), byte_size=path.stat().st_size, event_id=f"{name}-{start}")
            out.append(committer.prepare(committer.read(Batch(TableRef(ns, name), (Pending(event),)))))
        return out

    def ids(name: str) -> list[int]:
        return sorted(catalog.load_table((ns, name)).scan().to_arrow().column("id").to_pylist())

    committer.multi.commit([p.transaction for p in prepared(0)])
    assert ids("a") == ids("b") == [0]

    second = prepared(1)
    for p in second:
        p.table.config["token"] = "not-a-token-of-this-catalog"
    with pytest.raises(Exception, match="(?i)unauthori|forbidden|401|403|token"):
        committer.multi.commit([p.transaction for p in second])
    assert ids("a") == ids("b") == [0]  # refused: the wrong table token was the bearer, nothing landed
    for p in second:
        p.table.config["token"] = seaweed.fetch_token()
    committer.multi.commit([p.transaction for p in second])
    assert ids("a") == ids("b") == [0, 1]

    third = prepared(2)
    third[0].table.config["token"] = seaweed.fetch_token()  # b keeps the session's auth
    with caplog.at_level("INFO", logger="ingester.iceberg_layer.multi_commit"):
        committer.multi.commit([p.transaction for p in third])
    assert "carry different table tokens: committed one after another" in caplog.text
    assert ids("a") == ids("b") == [0, 1, 2]
