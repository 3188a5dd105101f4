"""The parity run: ``pipelines.py`` once per side and catalog, started once per session.

dlt-iceberg 0.6.4 runs in its own venv (``reference_venv``, cached under ``~/.cache/ingester``);
ingester in this one. Each side gets a SeaweedFS of its own for the REST catalog (so both can
load into the namespace ``default`` at once) and its own SQLite catalogs. The runs go three at
a time; the migration (dlt-iceberg, then ingester, on one catalog) is one of them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.parity.reference_venv import clean_env, dlt_iceberg_python

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
SIDES = ("ingester", "dlt_iceberg")
KINDS = ("sql", "rest")
RUN_TIMEOUT_S = 420
PARALLEL = 3


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HERE in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.parity)


def rest_request(server: Any) -> dict[str, Any]:
    return {"uri": server.iceberg_uri, "warehouse": server.warehouse, "token_endpoint": server.token_endpoint,
            "s3_endpoint": server.s3_endpoint, "key": server.access_key, "secret": server.secret_key, "region": server.region}


@dataclass(frozen=True)
class Side:
    """How to run ``pipelines.py`` as one side."""

    name: str
    python: str
    env: dict[str, str]

    def run(self, request: dict[str, Any], folder: Path, *cases: str) -> dict[str, Any]:
        """Run ``cases`` (default: all) with ``request``; returns the results by case.
        Raises AssertionError with the output tail when the script itself fails."""
        folder.mkdir(parents=True, exist_ok=True)
        stem = f"{self.name}-{request['kind']}-{'-'.join(cases) or 'all'}-{'-'.join(map(str, request.get('runs', [])))}"
        request_file, out_file = folder / f"{stem}.request.json", folder / f"{stem}.out.json"
        request_file.write_text(json.dumps(request))
        proc = subprocess.run([self.python, str(HERE / "pipelines.py"), self.name, str(request_file), str(out_file), *cases],
                              capture_output=True, text=True, env=self.env, cwd=folder, timeout=RUN_TIMEOUT_S)
        assert proc.returncode == 0 and out_file.exists(), f"{self.name} {stem}: exit {proc.returncode}\n{proc.stderr[-4000:]}"
        results: dict[str, Any] = json.loads(out_file.read_text())
        return results


@dataclass(frozen=True)
class ParityRuns:
    """Results by (kind, side) and case; the migration by kind; where each side's REST catalog is."""

    results: dict[tuple[str, str], dict[str, Any]]
    migration: dict[str, dict[str, Any]]
    rest: dict[str, dict[str, Any]]

    def pair(self, kind: str, case: str) -> tuple[dict[str, Any], dict[str, Any]]:
        """(ingester's, dlt-iceberg's) result of ``case`` on ``kind``."""
        return self.results[(kind, "ingester")][case], self.results[(kind, "dlt_iceberg")][case]


@pytest.fixture(scope="session")
def sides() -> dict[str, Side]:
    """ingester's python (this one, the worktree first on the path) and dlt-iceberg's venv."""
    try:
        reference = str(dlt_iceberg_python())
    except RuntimeError as exc:
        pytest.fail(f"cannot build the dlt-iceberg venv: {exc}")
    base = {**clean_env(), "RUNTIME__LOG_LEVEL": "ERROR", "RUNTIME__DLTHUB_TELEMETRY": "false", "PYTHONDONTWRITEBYTECODE": "1"}
    ours = {**base, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
    return {"ingester": Side("ingester", sys.executable, ours), "dlt_iceberg": Side("dlt_iceberg", reference, base)}


@pytest.fixture(scope="session")
def parity_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """A SeaweedFS (S3 + Iceberg REST catalog) per side."""
    from ingester.testing.localstack import SeaweedServer

    started = []
    try:
        for side in SIDES:
            started.append(SeaweedServer.start(tmp_path_factory.mktemp(f"seaweed-{side}")))
        yield dict(zip(SIDES, started))
    finally:
        for server in started:
            server.stop()


@pytest.fixture(scope="session")
def parity(sides: dict[str, Side], parity_servers: dict[str, Any], tmp_path_factory: pytest.TempPathFactory) -> ParityRuns:
    work = tmp_path_factory.mktemp("parity")
    rest = {side: rest_request(server) for side, server in parity_servers.items()}

    def request(kind: str, server_side: str, folder: str, **extra: Any) -> dict[str, Any]:
        return {"kind": kind, "workdir": str(work / folder), **({"rest": rest[server_side]} if kind == "rest" else {}), **extra}

    def cases(kind: str, side: str) -> dict[str, Any]:
        return sides[side].run(request(kind, side, f"{side}-{kind}"), work / "runs")

    def migration(kind: str) -> dict[str, Any]:
        """dlt-iceberg loads twice, then ingester twice, into one catalog (dlt-iceberg's server)."""
        common = {"keep": True}
        first = sides["dlt_iceberg"].run(request(kind, "dlt_iceberg", f"migration-{kind}", runs=[1, 2], **common), work / "runs", "migration")
        second = sides["ingester"].run(request(kind, "dlt_iceberg", f"migration-{kind}", runs=[3, 4], **common), work / "runs", "migration")
        return {"dlt_iceberg": first["migration"], "ingester": second["migration"]}

    with ThreadPoolExecutor(PARALLEL) as pool:
        migrations = {kind: pool.submit(migration, kind) for kind in KINDS}
        runs = {(kind, side): pool.submit(cases, kind, side) for kind in reversed(KINDS) for side in SIDES}
        return ParityRuns({k: f.result() for k, f in runs.items()}, {k: f.result() for k, f in migrations.items()}, rest)
