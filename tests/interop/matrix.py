"""The whole matrix once per session: build the tables, read each in every reader, and read the
plain-pyiceberg twins (`twins`) of the cases whose disagreements look like upstream reader bugs."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pyiceberg.catalog.sql import SqlCatalog

from .build import Built, MatrixBuilder
from .cases import Case
from .expected import Expected, expected
from .harness import read_many
from .protocol import Request
from .readers import Reader
from .twins import partition_fields, write_twin
from .verdict import Verdict, judge


@dataclass(frozen=True)
class Matrix:
    cases: dict[str, Case]
    expected: dict[str, Expected]
    built: dict[str, Built]
    answers: dict[str, dict[str, dict[str, Any]]]
    twins: dict[str, dict[str, dict[str, Any]]]

    def verdict(self, case: str, reader: str) -> Verdict:
        twin = self.twins.get(case, {}).get(reader)
        return judge(reader, self.expected[case], self.answers[case][reader], twin, self.built[case].problems)


def _not_built(reader: Reader, built: Built) -> dict[str, Any]:
    return {"reader": reader.name, "version": reader.label, "rows": None, "error": "no table to read: " + "; ".join(built.problems)}


def run_matrix(
    cases: Iterable[Case], root: Path, seaweed: Any | None, readers: tuple[Reader, ...], progress: Callable[[str], None]
) -> Matrix:
    todo = {c.name: c for c in cases}
    truths = {name: expected(c) for name, c in todo.items()}
    started = time.monotonic()
    built = MatrixBuilder(root / "tables", seaweed, progress).build(todo.values())
    progress(f"{len(todo)} tables written in {time.monotonic() - started:.0f}s; reading them in {len(readers)} readers")
    requests = {n: Request(b.metadata_location, b.s3, todo[n].filter) for n, b in built.items() if b.metadata_location}
    answers = read_many(requests, readers=readers, progress=progress)
    for name in todo.keys() - answers.keys():
        answers[name] = {r.name: _not_built(r, built[name]) for r in readers}
    need = {
        (name, r.name)
        for name in todo
        for r in readers
        if judge(r.name, truths[name], answers[name][r.name], None, built[name].problems).needs_twin
    }
    twins: dict[str, dict[str, dict[str, Any]]] = {}
    if need:
        (root / "twins").mkdir(parents=True, exist_ok=True)
        catalog = SqlCatalog("twins", uri=f"sqlite:///{root / 'twins' / 'catalog.db'}", warehouse=(root / "twins").as_uri())
        catalog.create_namespace("twins")
        names = sorted({n for n, _ in need})
        twin_requests = {
            n: Request(write_twin(catalog, todo[n], partition_fields(built[n])), None, todo[n].filter) for n in names
        }
        twin_readers = tuple(r for r in readers if any(r.name == rn for _, rn in need))
        progress(f"reading the plain-pyiceberg twins of {', '.join(names)} in {', '.join(r.name for r in twin_readers)}")
        twins = read_many(twin_requests, readers=twin_readers, progress=progress)
    return Matrix(todo, truths, built, answers, twins)
