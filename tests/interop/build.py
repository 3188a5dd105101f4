"""Write the matrix's tables the way users do: dlt pipelines, `ingester publish` + `ingester run`,
`ingester_queue()` + `ingester run`.

Loads go in rounds: round k feeds every case's k-th load (one dlt run per destination, one
`publish` per table, one queue pipeline run per daemon home), then each daemon home runs
`ingester run --exit-when-idle` once, so a load is committed before the next one arrives.
Daemon homes are one per (catalog, zero-copy setting); maintenance is off (compaction would
rewrite the as-is files the cases are about).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dlt
import pyarrow.parquet as pq
from pyiceberg.catalog import Catalog
from pyiceberg.table import Table

from ingester import iceberg, iceberg_rest
from ingester.catalog import open_catalog
from ingester.dlt.queue import ingester_queue
from ingester.settings import CatalogSettings, RoutingSettings, Settings
from tests.support import catalog_env, rest_catalog_settings

from .cases import DAEMON, DLT, MERGE, QUEUE, REST, UPSERT, Case
from .protocol import S3

INGESTER = str(Path(sys.executable).parent / "ingester")
NAMESPACE = "interop"
CLI_TIMEOUT_S = 300
PARALLEL = 2


@dataclass
class Built:
    """One case's table after its loads: where its metadata is, or why it is not there."""

    case: str
    metadata_location: str | None = None
    s3: S3 | None = None
    problems: list[str] = field(default_factory=list)
    """Build failures and dead letters of this table (a table with problems may still exist)."""
    as_is_files: int = 0
    rewritten_files: int = 0
    joined_files: int = 0
    """As-is files holding the row groups of several source files (``ingester.commit.joining``)."""


def _dlt_disposition(case: Case) -> Any:
    if case.disposition == MERGE:
        return {"disposition": "merge", "strategy": case.strategy}
    return case.disposition


def _dlt_keys(case: Case) -> dict[str, str]:
    if case.disposition != MERGE or case.key is None:
        return {}
    return {"primary_key": case.key} if case.strategy == UPSERT else {"merge_key": case.key}


def dlt_resource(case: Case, k: int) -> Any:
    """The k-th load of `case` as a dlt resource (its files as the items, the case's hints)."""
    hints: dict[str, Any] = {"write_disposition": _dlt_disposition(case), "columns": case.dlt_columns(), **_dlt_keys(case)}
    return dlt.resource(list(case.loads[k].files), name=case.table, **hints)


class MatrixBuilder:
    """Builds cases under `root`; `seaweed` (a `SeaweedServer`, None without REST cases) for the REST ones."""

    def __init__(self, root: Path, seaweed: Any, progress: Callable[[str], None]) -> None:
        self.root = root
        self.seaweed = seaweed
        self.progress = progress
        self.built: dict[str, Built] = {}

    # ------------------------------------------------------------------ places
    def _s3(self) -> S3 | None:
        s = self.seaweed
        return S3(s.s3_endpoint, s.access_key, s.secret_key, s.region) if s else None

    def _catalog_settings(self, catalog: str) -> CatalogSettings:
        if catalog == REST:
            return CatalogSettings.model_validate(rest_catalog_settings(self.seaweed))
        return CatalogSettings()

    def home(self, case: Case) -> Path:
        if case.mode == DLT:
            return self.root / f"dlt-{case.catalog}"
        return self.root / f"daemon-{case.catalog}-{'zero-copy' if case.zero_copy else 'rewrite'}"

    def settings(self, case: Case) -> Settings:
        """The daemon's settings of the case's home (also what `ingester_queue` publishes with)."""
        return Settings(home=self.home(case), catalog=self._catalog_settings(case.catalog), routing=RoutingSettings(namespace=NAMESPACE))

    def daemon_env(self, case: Case) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("INGESTER_")}
        env |= {
            "INGESTER_HOME": str(self.home(case)),
            "INGESTER_ROUTING__NAMESPACE": NAMESPACE,
            "INGESTER_COMMIT__ZERO_COPY": "true" if case.zero_copy else "false",
            "INGESTER_MAINTENANCE__ENABLED": "false",
        }  # fmt: skip
        if case.catalog == REST:
            env |= catalog_env(rest_catalog_settings(self.seaweed))
        return env

    def destination(self, case: Case) -> Any:
        if case.catalog == REST:
            s = self.seaweed
            return iceberg_rest(
                catalog_uri=s.iceberg_uri, warehouse=s.warehouse, credential=f"{s.access_key}:{s.secret_key}",
                s3_endpoint=s.s3_endpoint, s3_access_key_id=s.access_key, s3_secret_access_key=s.secret_key,
                s3_region=s.region, namespace=NAMESPACE, internal_table_prefix="dlt",  # S3 Tables naming: no leading "_"
            )  # fmt: skip
        return iceberg(ingester_home=str(self.home(case)), namespace=NAMESPACE)

    # ------------------------------------------------------------------ rounds
    def build(self, cases: Iterable[Case]) -> dict[str, Built]:
        """Feed and commit every load of `cases`, then locate each table. Never raises: a
        failure is recorded in the `problems` of the tables it concerns."""
        todo = list(cases)
        self.built = {c.name: Built(c.name) for c in todo}
        for k in range(max(len(c.loads) for c in todo)):
            started = time.monotonic()
            round_ = [c for c in todo if k < len(c.loads)]
            with ThreadPoolExecutor(PARALLEL) as pool:  # publish processes beside the in-process dlt runs
                published = [pool.submit(self._publish, c, k) for c in round_ if c.mode == DAEMON]
                self._dlt_runs([c for c in round_ if c.mode == DLT], k, self.destination, "dlt")
                self._dlt_runs([c for c in round_ if c.mode == QUEUE], k, lambda c: ingester_queue(self.settings(c)), "queue")
                for future in published:
                    future.result()
            homes: dict[Path, list[Case]] = {}
            for case in (c for c in round_ if c.mode in (DAEMON, QUEUE)):
                homes.setdefault(self.home(case), []).append(case)
            with ThreadPoolExecutor(PARALLEL) as pool:
                list(pool.map(self._run_daemon, sorted(homes), [homes[h] for h in sorted(homes)]))
            self.progress(f"load {k + 1}: {len(round_)} tables in {time.monotonic() - started:.1f}s")
        for case in todo:
            self._locate(case)
        return self.built

    def _fail(self, cases: Iterable[Case], what: str) -> None:
        for case in cases:
            self.built[case.name].problems.append(what)

    def _dlt_runs(self, cases: list[Case], k: int, destination: Callable[[Case], Any], kind: str) -> None:
        """One dlt run per destination (catalog, home) holding the k-th load of its cases."""
        groups: dict[Path, list[Case]] = {}
        for case in cases:
            groups.setdefault(self.home(case), []).append(case)
        for home, group in sorted(groups.items()):
            pipeline = dlt.pipeline(
                f"interop_{kind}_{home.name}".replace("-", "_"), destination=destination(group[0]),
                pipelines_dir=str(self.root / "pipelines"), dataset_name=NAMESPACE,
            )  # fmt: skip
            try:
                info = pipeline.run([dlt_resource(c, k) for c in group])
                info.raise_on_failed_jobs()
            except Exception as exc:  # noqa: BLE001 - a failed load is a finding about these tables
                self._fail(group, f"{kind} load {k + 1} failed: {type(exc).__name__}: {exc}"[:3000])
                traceback.print_exc()

    def _cli(self, case: Case, *args: str) -> subprocess.CompletedProcess[str]:
        """`ingester <args>` in the case's home; a timeout comes back as exit code 124."""
        cmd = [INGESTER, *args]
        try:
            return subprocess.run(cmd, env=self.daemon_env(case), capture_output=True, text=True, timeout=CLI_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return subprocess.CompletedProcess(cmd, 124, "", f"timed out after {CLI_TIMEOUT_S}s")

    def _publish(self, case: Case, k: int) -> None:
        folder = self.root / "src" / case.name / str(k)
        folder.mkdir(parents=True, exist_ok=True)
        paths = []
        for i, table in enumerate(case.loads[k].files):
            path = folder / f"part-{i}.parquet"
            pq.write_table(table, path)
            paths.append(str(path))
        args = ["publish", *paths, "--table", case.table, "--write-disposition", case.disposition]
        if case.disposition == MERGE and case.key:
            args += ["--primary-key", case.key]
        done = self._cli(case, *args)
        if done.returncode:
            self._fail([case], f"ingester publish (load {k + 1}) failed: {done.stderr[-2000:]}")

    def _run_daemon(self, home: Path, cases: list[Case]) -> None:
        done = self._cli(cases[0], "run", "--exit-when-idle")
        if done.returncode:
            self._fail(cases, f"ingester run in {home.name} failed ({done.returncode}): {done.stderr[-2000:]}")

    # ------------------------------------------------------------------ results
    def _catalog(self, case: Case) -> Catalog:
        settings = self.settings(case)
        return open_catalog(settings.catalog, settings.home_dir)

    def _locate(self, case: Case) -> None:
        built = self.built[case.name]
        built.s3 = self._s3() if case.catalog == REST else None
        built.problems.extend(self._dead_letters(case))
        try:
            table = self._catalog(case).load_table((NAMESPACE, case.table))
            built.as_is_files, built.rewritten_files, built.joined_files = _registration(table)
        except Exception as exc:  # noqa: BLE001 - a missing table is a finding
            built.problems.append(f"no table: {type(exc).__name__}: {exc}")
            return
        built.metadata_location = table.metadata_location

    def _dead_letters(self, case: Case) -> list[str]:
        if case.mode == DLT:
            return []
        path = self.home(case) / "deadletter" / "deadletters.jsonl"
        if not path.exists():
            return []
        letters = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        return [f"dead letter: {d['reason']}" for d in letters if d.get("table") == f"{NAMESPACE}.{case.table}"]


def _registration(table: Table) -> tuple[int, int, int]:
    """(data files registered as-is, data files ingester wrote, as-is files of several row
    groups: joined) of the current snapshot. As-is copies are named
    `ingester-<batch id>-<n>.parquet` (`ingester.commit.as_is`); rewritten files get pyiceberg's
    data file names. The matrix's producers write one row group per file."""
    files = table.inspect.files().to_pylist()
    data = [(f["file_path"].rsplit("/", 1)[-1], len(f["split_offsets"] or [])) for f in files if f["content"] == 0]
    as_is = [groups for name, groups in data if name.startswith("ingester-")]
    return len(as_is), len(data) - len(as_is), sum(groups > 1 for groups in as_is)
