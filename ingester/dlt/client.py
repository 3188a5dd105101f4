"""The dlt job client: one snapshot per table per load through ``SnapshotCommitter``.

The way dlt's filesystem/Iceberg client does it, restart-safe: every parquet job finishes at
once without committing (``jobs.StagedFileJob``, a no-op with follow-up jobs); when all jobs of a
table chain are done, ``create_table_chain_completed_followup_jobs`` writes one reference job per
table listing its files (kept in the load package); that follow-up job makes the single
commit. The commit carries one event id per file (load id + table + file name) in the
snapshot summary, so a load resumed after a crash at any moment never commits a file twice.

dlt's own tables are Iceberg tables too, named as dlt-iceberg names them: ``_dlt_loads``,
``_dlt_version``, ``_dlt_pipeline_state``, with ``internal_table_prefix`` in place of ``_dlt``
(``"dlt"`` for catalogs with S3 Tables naming rules, which refuse a leading ``_``: then
``dlt_loads``...); views and dlt keep the dlt names.
"""

from __future__ import annotations

import asyncio
import io
import json
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import anyio
import pyarrow as pa
import pyarrow.parquet as pq
from dlt.common.destination import DestinationCapabilitiesContext
from dlt.common.destination.client import (
    FollowupJobRequest,
    JobClientBase,
    LoadJob,
    PreparedTableSchema,
    RunnableLoadJob,
    StateInfo,
    StorageSchemaInfo,
    SupportsOpenTables,
    WithStateSync,
)
from dlt.common.destination.exceptions import (
    DestinationTerminalException,
    DestinationUndefinedEntity,
    OpenTableCatalogNotSupported,
)
from dlt.common.schema import Schema, TSchemaTables
from dlt.common.schema.exceptions import TableNotFound
from dlt.common.schema.typing import C_DLT_LOAD_ID, C_DLT_LOADS_TABLE_LOAD_ID, TTableFormat
from dlt.common.storages.load_package import LoadJobInfo, ParsedLoadJobFileName
from dlt.destinations.job_impl import ReferenceFollowupJobRequest
from dlt.destinations.sql_client import SqlClientBase, WithSqlClient
from dlt.destinations.utils import verify_schema_merge_disposition
from pyiceberg.catalog import Catalog
from pyiceberg.exceptions import BadRequestError, NamespaceAlreadyExistsError, NoSuchNamespaceError, NoSuchTableError
from pyiceberg.expressions import AlwaysTrue, BooleanExpression, EqualTo, In
from pyiceberg.table import Table

from ingester.batch import Batch, Pending, TableRef
from ingester.branches import MAIN
from ingester.commit.committer import CommitResult, LoadedBatch, SnapshotCommitter, commit_many_with_retries
from ingester.commit.options import WriteOptions
from ingester.dlt.configuration import DLT_TABLE_PREFIX, IcebergClientConfiguration
from ingester.dlt.jobs import StagedFileJob, table_followups
from ingester.dlt.package import parent_row_ids
from ingester.dlt.registration import register_tables
from ingester.errors import TerminalError, is_auth_failure
from ingester.events import BRANCH_HINT, PROPERTIES_HINT, FileEvent
from ingester.iceberg_layer import markers as mk
from ingester.iceberg_layer.deletes import equality_deletes_as_positions, has_equality_deletes
from ingester.iceberg_layer.multi_commit import MultiTableCommit
from ingester.iceberg_layer.sql_catalog import load
from ingester.publish import event_id, file_event, table_hints
from ingester.storage import FileReader

log = logging.getLogger(__name__)
T = TypeVar("T")


def _equals(column: str, value: Any) -> BooleanExpression:
    return EqualTo(column, value)  # type: ignore[call-arg,arg-type]  # pydantic model signature


def _one_of(column: str, values: list[Any]) -> BooleanExpression:
    return In(column, values)  # type: ignore[call-arg]  # pydantic model signature


def _snapshot_before(table: Table, load_id: str, branch: str = MAIN) -> int | None:
    """The snapshot ``table`` had before the commit of dlt load ``load_id`` (the head of
    ``branch``, or of ``main`` that a missing branch is made from, while no snapshot carries
    that load's marker)."""
    for snapshot in table.metadata.snapshots:
        summary = snapshot.summary.additional_properties if snapshot.summary else {}
        if load_id in json.loads(summary.get(mk.LOAD_IDS, "[]")):
            return snapshot.parent_snapshot_id
    current = table.snapshot_by_name(branch) or table.current_snapshot()
    return current.snapshot_id if current else None


def _run(main: Callable[[], Awaitable[T]]) -> T:
    """Run async ``main`` to completion from sync code. dlt calls the client from its own
    threads, or from a thread that runs an event loop already (a pipeline run inside async
    code, a notebook): then ``main`` runs on a loop of its own in a helper thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return anyio.run(main)
    with ThreadPoolExecutor(1, thread_name_prefix="ingester-retry") as helper:
        return helper.submit(anyio.run, main).result()


class IcebergCommitJob(RunnableLoadJob):
    """The follow-up job of one table: commits all files the reference lists, once."""

    def run(self) -> None:
        paths = ReferenceFollowupJobRequest.resolve_references(self._file_path)
        client = self._job_client
        assert isinstance(client, IcebergJobClient)
        package = Path(self._file_path).resolve().parent.parent  # <package>/started_jobs/<job>
        files = [Path(p) for p in paths if p]
        if client.commits_per_load:  # complete_load commits every table of the load at once
            client.check_files(self._load_table, files, self._load_id, package)
        else:
            client.commit_files(self._load_table, files, self._load_id, package)


class IcebergJobClient(JobClientBase, WithStateSync, WithSqlClient, SupportsOpenTables):
    """Job client of ``iceberg`` / ``iceberg_rest``. Holds no global state: every instance opens
    its own catalog connection lazily."""

    def __init__(
        self, schema: Schema, config: IcebergClientConfiguration, capabilities: DestinationCapabilitiesContext
    ) -> None:
        super().__init__(schema, config, capabilities)
        self.config: IcebergClientConfiguration = config
        self.namespace = config.namespace_for(schema)
        self.dataset_name = self.namespace
        self._catalog: Catalog | None = None
        self._sql_client: SqlClientBase[Any] | None = None
        self._tables_with_jobs: set[str] = set()
        self._multi: MultiTableCommit | None = None

    # ------------------------------------------------------------------ catalog
    @property
    def catalog(self) -> Catalog:
        """Opened on first use, with retries: a SQL catalog initialising its tables concurrently
        with another writer fails transiently once."""
        if self._catalog is None:
            name, props = self.config.resolved_catalog_name(), self.config.catalog_props()
            self._catalog = self._retried(lambda: load(name, props), "open catalog")
        return self._catalog

    @property
    def multi(self) -> MultiTableCommit:
        """How the tables of a load commit together (``atomic_multi_table``)."""
        if self._multi is None:
            self._multi = MultiTableCommit(self.catalog, self.config.atomic_setting())
        return self._multi

    @property
    def commits_per_load(self) -> bool:
        """The tables of a load (and ``_dlt_loads``) commit in one atomic commit, in
        ``complete_load``; else each table's follow-up job commits it (the fallback)."""
        return self._retried(lambda: self.multi.mode, "ask the catalog for multi-table commits") != "per-table"

    def table_ref(self, table_name: str) -> TableRef:
        return TableRef(self.namespace, self.config.physical_table_name(table_name))

    def load_table(self, table_name: str) -> Table:
        """The Iceberg table of dlt table ``table_name``; raises ``DestinationUndefinedEntity``,
        or ``DestinationTerminalException`` naming ``internal_table_prefix`` when the catalog
        refuses the name of one of dlt's own tables (S3 Tables rules: no leading ``_``)."""
        ref = self.table_ref(table_name)
        try:
            return self.catalog.load_table((ref.namespace, ref.name))
        except (NoSuchTableError, NoSuchNamespaceError) as exc:
            raise DestinationUndefinedEntity(str(ref)) from exc
        except BadRequestError as exc:
            if table_name.startswith(DLT_TABLE_PREFIX) and ref.name.startswith("_"):
                raise DestinationTerminalException(
                    f"the catalog refuses table name {ref.name!r} ({exc}); it takes no leading '_' "
                    f"(S3 Tables naming rules): set internal_table_prefix='dlt' to store dlt's own "
                    f"tables as dlt_loads, dlt_version and dlt_pipeline_state"
                ) from exc
            raise

    def _committer(self, package: Path | None = None) -> SnapshotCommitter:
        return SnapshotCommitter(
            self.catalog,
            FileReader([str(package)] if package else []),
            options=WriteOptions(
                strict_casting=self.config.strict_casting,
                merge_batch_size=self.config.merge_batch(),
                verify_files=False,  # dlt's normalizer just wrote these files in this load package
                table_properties=self._table_properties(),
            ),
            fail_on_reject=True,
            table_location=lambda ref: self.config.table_location(ref.namespace, ref.name),
            multi_commit=self.multi,
        )

    def _retried(self, fn: Callable[[], T], what: str) -> T:
        """Run blocking ``fn`` under the configured retry policy (transient errors only). Blocks."""
        policy = self.config.retry_policy()

        async def attempt() -> T:
            return fn()

        return _run(lambda: policy.run(attempt, what=what))

    def _table_properties(self) -> dict[str, dict[str, str]]:
        """Iceberg table properties per table from the ``PROPERTIES_HINT`` of its root table."""
        out = {}
        for name in self.schema.tables:
            props: Any = self.schema.tables[self._root(name)].get(PROPERTIES_HINT)
            if props:
                out[name] = {str(k): str(v) for k, v in props.items()}
        return out

    def branch_of(self, table_name: str) -> str:
        """The branch a table's loads commit to: its root table's ``BRANCH_HINT`` (a nested
        table goes with its parent), else ``main``."""
        if table_name not in self.schema.tables:
            return MAIN
        return str(self.schema.tables[self._root(table_name)].get(BRANCH_HINT) or MAIN)

    def _root(self, table_name: str) -> str:
        parent = self.schema.tables[table_name].get("parent")
        return self._root(parent) if parent else table_name

    def _parent_keys(self, table: PreparedTableSchema, merge_key: Sequence[str], package: Path, load_id: str) -> pa.Table | None:
        """For a nested table of a merge: the ``_dlt_id`` of every root row in this load and of
        every root row it replaces or deletes, as values of the nested table's root key, so the
        children of an updated or deleted parent go (even when the parent now has none, and
        whatever row ids the parents got: random ones, as dlt-iceberg's default strategy gives
        them, or key hashes). None for other tables."""
        if not table.get("parent") or len(merge_key) != 1:
            return None
        root = self._root(str(table["parent"]))
        if self.schema.tables[root].get("write_disposition") != "merge":
            return None
        files = sorted(package.glob(f"*/{root}.*.parquet"))
        ids = list(parent_row_ids(package, root, self._column("_dlt_id")).chunks)
        ids += self._without_equality_deletes([root], lambda: self._replaced_root_ids(root, files, load_id))
        return pa.table({merge_key[0]: pa.chunked_array(ids, pa.string())})

    def _replaced_root_ids(self, root: str, files: Sequence[Path], load_id: str) -> list[pa.Array]:
        """``_dlt_id`` of the rows of table ``root`` whose key is in ``files``, as the table was
        before this load's commit to it (the parent of the snapshot marked with ``load_id``;
        the current snapshot while it has none). Reads the key and ``_dlt_id`` columns."""
        keys = table_hints(dict(self.prepare_load_table(root)))
        names = list(keys["primary_key"] or keys["merge_key"])
        if not names or not files:
            return []
        try:
            iceberg = self.load_table(root)
        except DestinationUndefinedEntity:
            return []
        before = _snapshot_before(iceberg, load_id, self.branch_of(root))
        if before is None:
            return []
        wanted = pa.concat_tables([pq.read_table(p, columns=names) for p in files]).group_by(names).aggregate([])
        first = wanted.column(0).drop_null().unique().to_pylist()
        if not first:
            return []
        dlt_id = self._column("_dlt_id")
        found = iceberg.scan(row_filter=_one_of(names[0], first), selected_fields=(*names, dlt_id), snapshot_id=before).to_arrow()
        matched = found.cast(pa.schema([found.schema.field(n).with_type(wanted.schema.field(n).type) if n in names
                                        else found.schema.field(n) for n in found.column_names]))
        return list(matched.join(wanted, names, join_type="left semi").column(dlt_id).chunks)

    def _delete_batch(self, name: str, hints: dict[str, Any]) -> Batch:
        """A batch without files that still names the table's merge key (delete-only merge);
        its one event is never read."""
        marker = FileEvent(table=name, namespace=self.namespace, data=b"", write_disposition=hints["write_disposition"],
                           merge_key=tuple(hints["merge_key"]), branch=hints["branch"])
        return Batch(self.table_ref(name), (Pending(marker),))

    def _commit(self, committer: SnapshotCommitter, batch: Batch, extra_delete_keys: pa.Table | None = None) -> CommitResult:
        """``_commit_many`` of one batch."""
        return self._commit_many(committer, [(batch, extra_delete_keys)])[0]

    def _commit_many(self, committer: SnapshotCommitter, items: Sequence[tuple[Batch | LoadedBatch, pa.Table | None]]) -> list[CommitResult]:
        """Read, then apply together with retries (``commit_many_with_retries``). A file the
        committer sets aside (unreadable, schema conflict) fails terminally; an unreadable one
        before anything is committed."""

        def refuse_rejected(loaded: LoadedBatch) -> None:
            if loaded.rejected:
                raise TerminalError("; ".join(r.reason for r in loaded.rejected))

        policy = self.config.retry_policy()
        try:
            results = _run(lambda: commit_many_with_retries(committer, items, policy, before_apply=refuse_rejected))
            for result in results:
                if result.rejected:
                    raise TerminalError("; ".join(r.reason for r in result.rejected))
        except TerminalError as exc:
            raise DestinationTerminalException(str(exc)) from exc
        except OSError as exc:
            if self.config.table_location_layout and is_auth_failure(exc):
                refs = [item.table if isinstance(item, Batch) else item.batch.table for item, _ in items]
                where = ", ".join(f"{r}: {self.config.table_location(r.namespace, r.name)}" for r in refs)
                raise DestinationTerminalException(
                    f"the storage refuses writes at the locations table_location_layout gives ({where}): {exc}; "
                    f"catalogs that place their tables themselves (S3 Tables) take no table_location_layout"
                ) from exc
            raise
        return results

    def _load_batch(
        self, table: PreparedTableSchema, paths: Sequence[Path], load_id: str, package: Path
    ) -> tuple[Batch | LoadedBatch, pa.Table | None] | None:
        """What the load commits to ``table``: the batch of ``paths`` (parquet files in load
        package ``package``), or a delete-only batch (the nested table of a merge whose parents
        changed), with the parent keys whose children go; None: nothing."""
        name = str(table["name"])
        hints = table_hints(dict(table))
        hints["branch"] = hints["branch"] or self.branch_of(name)
        hard_delete = self.config.hard_delete_column
        if hard_delete and hard_delete in hints["columns"]:  # dlt-iceberg's: set (not null) deletes the key
            hints["columns"][hard_delete] = {**hints["columns"][hard_delete], "hard_delete": True}
        events = [file_event(p, name, load_id=load_id, namespace=self.namespace, **hints) for p in paths]
        parents = self._parent_keys(table, hints["merge_key"], package, load_id)
        if not events and parents is None:
            return None
        if not events:
            return LoadedBatch(self._delete_batch(name, hints), ()), parents
        return Batch(self.table_ref(name), tuple(Pending(e) for e in events)), parents

    def check_files(self, table: PreparedTableSchema, paths: Sequence[Path], load_id: str, package: Path) -> None:
        """Fail the job (``DestinationTerminalException``) when a file of ``table`` cannot be
        read or refused (the commit itself comes in ``complete_load``). Blocks."""
        item = self._load_batch(table, paths, load_id, package)
        if item is None or not isinstance(item[0], Batch):
            return
        batch = item[0]
        loaded = self._retried(lambda: self._committer(package).read(batch), f"read {batch.table}")
        if loaded.rejected:
            raise DestinationTerminalException("; ".join(r.reason for r in loaded.rejected))

    def commit_files(self, table: PreparedTableSchema, paths: Sequence[Path], load_id: str, package: Path) -> CommitResult:
        """One idempotent snapshot for ``paths`` (parquet files of ``table`` in load package
        ``package``). Blocks; retries transient errors; raises ``DestinationTerminalException``."""
        name = str(table["name"])
        item = self._load_batch(table, paths, load_id, package)
        if item is None:
            return CommitResult(self.table_ref(name), None)
        result = self._without_equality_deletes([name], lambda: self._commit_many(self._committer(package), [item]))[0]
        log.info("%s: load %s: %d rows from %d files (%d already committed)", result.table, load_id, result.rows, result.files,
                 result.duplicates)
        self._apply_docs(table)
        return result

    def _commit_load(self, load_id: str, loads: Batch) -> None:
        """Every table of load ``load_id`` with its files (the follow-up jobs' references in
        the load package) and the ``loads`` row, in one atomic commit (``multi_commit``):
        a reader sees all of the load or none. Idempotent (each file's event id, the loads
        row's marker), so a completion resumed after a crash commits nothing twice."""
        from dlt.common.configuration.container import Container
        from dlt.common.storages.load_package import LoadPackageStateInjectableContext

        context = Container()[LoadPackageStateInjectableContext]
        package = Path(context.storage.storage.make_full_path(context.storage.get_package_path(load_id))).resolve()
        tables, items = [], []
        for reference in sorted((package / "completed_jobs").glob("*.reference")):
            table = self.prepare_load_table(ParsedLoadJobFileName.parse(reference.name).table_name)
            paths = [Path(p) for p in ReferenceFollowupJobRequest.resolve_references(str(reference)) if p]
            item = self._load_batch(table, paths, load_id, package)
            if item is not None:
                tables.append(table)
                items.append(item)
        items.append((loads, None))
        names = [str(t["name"]) for t in tables]
        results = self._without_equality_deletes(names, lambda: self._commit_many(self._committer(package), items))
        for result in results:
            log.info("%s: load %s: %d rows from %d files (%d already committed), snapshot %s", result.table, load_id,
                     result.rows, result.files, result.duplicates, result.snapshot_id)
        for table in tables:
            self._apply_docs(table)

    def _without_equality_deletes(self, table_names: Sequence[str], fn: Callable[[], T]) -> T:
        """``fn()``; when it fails on equality delete files in one of ``table_names`` (pyiceberg
        cannot plan those; dlt-iceberg merges with them), turn them into position deletes with
        the same effect (one snapshot per table) and run ``fn`` again. Blocks."""
        try:
            return fn()
        except ValueError:
            healable = [name for name in table_names if self._has_equality_deletes(name)]
            if not healable:
                raise
        for name in healable:
            ref = self.table_ref(name)
            removed = self._retried(lambda: equality_deletes_as_positions(self.load_table(name), lambda _: {}),
                                    f"rewrite equality deletes of {ref}")
            log.info("%s: %d equality delete files (dlt-iceberg's) rewritten as position deletes", ref, removed)
        return fn()

    def _has_equality_deletes(self, table_name: str) -> bool:
        try:
            return has_equality_deletes(self.load_table(table_name))
        except DestinationUndefinedEntity:
            return False

    def _apply_docs(self, table: PreparedTableSchema) -> None:
        """Carry dlt column ``description``s to the Iceberg field docs (a changed description
        replaces the doc; a missing one keeps it), as dlt-iceberg does. Metadata only."""
        docs = {n: str(c["description"]) for n, c in table.get("columns", {}).items() if c.get("description")}
        if not docs:
            return

        def update() -> None:
            iceberg = self.load_table(str(table["name"]))
            fields = {f.name: f for f in iceberg.schema().fields}
            changed = {n: d for n, d in docs.items() if n in fields and fields[n].doc != d}
            if changed:
                with iceberg.update_schema() as schema:
                    for column, doc in changed.items():
                        schema.update_column(column, doc=doc)

        self._retried(update, f"docs of {table['name']}")

    def _rows_batch(self, table_name: str, rows: list[dict[str, Any]], arrow_schema: pa.Schema, marker: str) -> Batch:
        """A batch appending ``rows`` to a dlt system table, once per ``marker`` (its event id)."""
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pylist(rows, schema=arrow_schema), buf)
        data = buf.getvalue()
        event = FileEvent(
            table=table_name,
            namespace=self.namespace,
            data=data,
            row_count=len(rows),
            byte_size=len(data),
            event_id=event_id(None, table_name, marker, 0),
            event_time=datetime.now(timezone.utc).timestamp(),
        )
        return Batch(self.table_ref(table_name), (Pending(event),))

    def _scan(self, table_name: str, row_filter: BooleanExpression = AlwaysTrue()) -> list[dict[str, Any]]:
        table = self.load_table(table_name)
        return table.scan(row_filter=row_filter).to_arrow().to_pylist()

    def _column(self, name: str) -> str:
        return self.schema.naming.normalize_identifier(name)

    # --------------------------------------------------------------- storage
    def initialize_storage(self, truncate_tables: Iterable[str] | None = None) -> None:
        """Create the namespace; empty ``truncate_tables`` (jobless tables of replace chains,
        refreshed tables) except replace tables with jobs: their follow-up job swaps the data
        atomically, in the load's one snapshot."""
        try:
            self.catalog.create_namespace(self.namespace)
        except NamespaceAlreadyExistsError:
            pass
        folder = self.config.local_warehouse() if self.config.register_new_tables else None
        if folder is not None:  # a register_new_tables without a local warehouse fails when resolved
            register_tables(self.catalog, self.namespace, folder, self.config.physical_table_name)
        for name in truncate_tables or ():
            if not self._replaced_by_its_job(name):
                self._truncate(name)

    def _replaced_by_its_job(self, table_name: str) -> bool:
        if table_name not in self._tables_with_jobs:
            return False
        try:
            return bool(self.prepare_load_table(table_name)["write_disposition"] == "replace")
        except TableNotFound:
            return False

    def _truncate(self, table_name: str) -> None:
        try:
            table = self.load_table(table_name)
        except DestinationUndefinedEntity:
            return
        branch = self.branch_of(table_name)
        if table.snapshot_by_name(branch) is not None:
            log.info("truncating %s (replace without rows in this load)", self.table_ref(table_name))
            self._without_equality_deletes([table_name], lambda: self._retried(
                lambda: table.refresh().delete(AlwaysTrue(), branch=branch), f"truncate {table_name}"))

    def is_storage_initialized(self) -> bool:
        try:
            self.catalog.load_namespace_properties(self.namespace)
        except NoSuchNamespaceError:
            return False
        return True

    def drop_storage(self) -> None:
        if not self.is_storage_initialized():
            return
        for ident in self.catalog.list_tables(self.namespace):
            self.catalog.drop_table(ident)
        self.catalog.drop_namespace(self.namespace)

    def drop_tables(self, *tables: str, delete_schema: bool = True) -> None:
        """Drop the Iceberg tables of ``tables`` and their files (``purge_table``; a REST catalog
        purges on its side); with ``delete_schema`` also this schema's stored versions (so they
        are not restored)."""
        for name in tables:
            ref = self.table_ref(name)
            try:
                self.catalog.purge_table((ref.namespace, ref.name))
            except NoSuchTableError:
                pass
        if delete_schema:
            try:
                table = self.load_table(self.schema.version_table_name)
            except DestinationUndefinedEntity:
                return
            table.delete(_equals(self._column("schema_name"), self.schema.name))

    # ---------------------------------------------------------------- schema
    def verify_schema(
        self, only_tables: Iterable[str] | None = None, new_jobs: Iterable[ParsedLoadJobFileName] | None = None
    ) -> list[PreparedTableSchema]:
        self._tables_with_jobs = {job.table_name for job in new_jobs or ()}
        loaded = super().verify_schema(only_tables, new_jobs)  # type: ignore[arg-type]  # dlt accepts None
        if exceptions := verify_schema_merge_disposition(self.schema, loaded, self.capabilities, warnings=True):
            for exc in exceptions:
                log.error("%s", exc)
            raise exceptions[0]
        return loaded

    def update_stored_schema(
        self, only_tables: Iterable[str] | None = None, expected_update: TSchemaTables | None = None, force: bool = False
    ) -> TSchemaTables | None:
        """Iceberg tables are created and evolved by their commits; here the dlt schema is
        stored (once per version hash) so a fresh machine can restore it."""
        applied = super().update_stored_schema(only_tables, expected_update, force)  # type: ignore[arg-type]
        if self.get_stored_schema_by_hash(self.schema.stored_version_hash) is None:
            self._store_schema()
        return applied

    def _store_schema(self) -> None:
        schema = self.schema
        row = {
            self._column("version_hash"): schema.stored_version_hash,
            self._column("schema_name"): schema.name,
            self._column("version"): schema.version,
            self._column("engine_version"): schema.ENGINE_VERSION,
            self._column("inserted_at"): datetime.now(timezone.utc),
            self._column("schema"): json.dumps(schema.to_dict()),
        }
        arrow_schema = pa.schema(
            [
                (self._column("version_hash"), pa.string()),
                (self._column("schema_name"), pa.string()),
                (self._column("version"), pa.int64()),
                (self._column("engine_version"), pa.int64()),
                (self._column("inserted_at"), pa.timestamp("us", tz="UTC")),
                (self._column("schema"), pa.string()),
            ]
        )
        # no content marker: after a refresh drops a schema's rows, the same version is stored again
        self._commit(self._committer(), self._rows_batch(schema.version_table_name, [row], arrow_schema, uuid.uuid4().hex))

    def _schema_info(self, rows: list[dict[str, Any]]) -> StorageSchemaInfo | None:
        if not rows:
            return None
        inserted_at = self._column("inserted_at")
        row = max(rows, key=lambda r: r[inserted_at])
        return StorageSchemaInfo.from_normalized_mapping(row, self.schema.naming)

    def get_stored_schema(self, schema_name: str | None = None) -> StorageSchemaInfo | None:
        row_filter = _equals(self._column("schema_name"), schema_name) if schema_name else AlwaysTrue()
        try:
            return self._schema_info(self._scan(self.schema.version_table_name, row_filter))
        except DestinationUndefinedEntity:
            return None

    def get_stored_schema_by_hash(self, version_hash: str) -> StorageSchemaInfo | None:  # type: ignore[override]
        try:
            return self._schema_info(self._scan(self.schema.version_table_name, _equals(self._column("version_hash"), version_hash)))
        except DestinationUndefinedEntity:
            return None

    def get_stored_state(self, pipeline_name: str) -> StateInfo | None:
        """Newest state of ``pipeline_name`` from a completed load; raises
        ``DestinationUndefinedEntity`` when the tables do not exist yet."""
        loads = self._scan(self.schema.loads_table_name, _equals(self._column("status"), 0))
        completed = {r[self._column(C_DLT_LOADS_TABLE_LOAD_ID)] for r in loads}
        states = self._scan(self.schema.state_table_name, _equals(self._column("pipeline_name"), pipeline_name))
        c_load_id = self._column(C_DLT_LOAD_ID)
        states = [s for s in states if s[c_load_id] in completed]
        if not states:
            return None
        newest = max(states, key=lambda s: s[c_load_id])
        return StateInfo.from_normalized_mapping(newest, self.schema.naming)

    # ------------------------------------------------------------------ jobs
    def create_load_job(self, table: PreparedTableSchema, file_path: str, load_id: str, restore: bool = False) -> LoadJob:
        if ReferenceFollowupJobRequest.is_reference_job(file_path):
            return IcebergCommitJob(file_path)
        return StagedFileJob(file_path)

    def should_truncate_table_before_load(self, table_name: str) -> bool:
        return bool(self.prepare_load_table(table_name)["write_disposition"] == "replace")

    def create_table_chain_completed_followup_jobs(
        self, table_chain: Sequence[PreparedTableSchema], completed_table_chain_jobs: Sequence[LoadJobInfo] | None = None
    ) -> list[FollowupJobRequest]:
        """One commit job per table of the chain (``jobs.table_followups``)."""
        jobs = super().create_table_chain_completed_followup_jobs(table_chain, completed_table_chain_jobs)
        return [*jobs, *table_followups(table_chain, completed_table_chain_jobs)]

    def complete_load(self, load_id: str) -> None:
        """Record the load in ``_dlt_loads`` (idempotent: a resumed completion adds nothing),
        in the one atomic commit of the load's tables where the catalog can (``_commit_load``)."""
        row = {
            self._column(C_DLT_LOADS_TABLE_LOAD_ID): load_id,
            self._column("schema_name"): self.schema.name,
            self._column("status"): 0,
            self._column("inserted_at"): datetime.now(timezone.utc),
            self._column("schema_version_hash"): self.schema.version_hash,
        }
        arrow_schema = pa.schema(
            [
                (self._column(C_DLT_LOADS_TABLE_LOAD_ID), pa.string()),
                (self._column("schema_name"), pa.string()),
                (self._column("status"), pa.int64()),
                (self._column("inserted_at"), pa.timestamp("us", tz="UTC")),
                (self._column("schema_version_hash"), pa.string()),
            ]
        )
        loads = self._rows_batch(self.schema.loads_table_name, [row], arrow_schema, f"{self.schema.name}:{load_id}")
        if self.commits_per_load:
            self._commit_load(load_id, loads)
        else:
            self._commit(self._committer(), loads)

    # ------------------------------------------------------ open table access
    def get_open_table_catalog(self, table_format: TTableFormat, catalog_name: str | None = None) -> Catalog:
        if table_format != "iceberg":
            raise OpenTableCatalogNotSupported(table_format, self.config.destination_type)
        return self.catalog

    def get_open_table_location(self, table_format: TTableFormat, table_name: str) -> str:
        return str(self.load_table(table_name).location())

    def load_open_table(self, table_format: TTableFormat, table_name: str, **kwargs: Any) -> Table:
        self.get_open_table_catalog(table_format)
        return self.load_table(table_name)

    def is_open_table(self, table_format: TTableFormat, table_name: str) -> bool:
        return table_format == "iceberg"

    # ------------------------------------------------------------ sql access
    @property
    def sql_client_class(self) -> type[SqlClientBase[Any]]:
        # imported when a dataset is read, not by a load: DuckDB is 45 ms of a cron-run pipeline's imports
        from ingester.dlt.sql_client import IcebergSqlClient

        return IcebergSqlClient

    @property
    def sql_client(self) -> SqlClientBase[Any]:
        if self._sql_client is None:
            from ingester.dlt.sql_client import IcebergSqlClient

            self._sql_client = IcebergSqlClient(self, self.dataset_name)
        return self._sql_client

    @sql_client.setter
    def sql_client(self, client: SqlClientBase[Any]) -> None:
        self._sql_client = client

    def __enter__(self) -> IcebergJobClient:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc_val: BaseException | None, exc_tb: TracebackType | None) -> None:
        pass


