"""One cell of the matrix (a table read by one reader) against the truth: what differs, and whether
a known reader bug explains it.

`compare` lists every difference (`Diff`). `KNOWN_BUGS` are the reader bugs of the README's
compatibility table that the matrix can meet, each recognised by the differences it causes. A
cell is an expected failure only when every difference belongs to an upstream bug (`ours=False`)
AND the same bug shows when that reader reads the case's *twin*: the same loads replayed by plain
pyiceberg (`twins`). Bugs with `ours=True` are reader bugs that only bite because of what
ingester writes (files without field ids): their cells fail.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .expected import Expected
from .typenames import canonical

SHOWN = 3


@dataclass(frozen=True)
class Diff:
    """One disagreement: `kind` is error / rows / count / filtered_rows / filtered_count /
    missing_column / extra_column / values / type."""

    kind: str
    column: str | None
    detail: str

    def __str__(self) -> str:
        where = f" {self.column!r}" if self.column else ""
        return f"{self.kind}{where}: {self.detail}"


def _dumps(value: Any) -> str:
    return json.dumps(value, sort_keys=True, ensure_ascii=False)


def _unique_ids(rows: list[dict[str, Any]]) -> dict[Any, dict[str, Any]] | None:
    ids = [r.get("id") for r in rows]
    return None if None in ids or len(set(ids)) != len(ids) else {r["id"]: r for r in rows}


def value_diffs(want_rows: list[dict[str, Any]], got_rows: list[dict[str, Any]] | None, column: str) -> str:
    """How column `column` differs, row by row when both sides have unique ids (else as multisets)."""
    if got_rows is None:
        return "content hash differs (table too big for a row sample)"
    want, got = _unique_ids(want_rows), _unique_ids(got_rows)
    if want is not None and got is not None and want.keys() == got.keys():
        bad = [(i, got[i].get(column), want[i].get(column)) for i in sorted(want) if got[i].get(column) != want[i].get(column)]
        picked = bad if len(bad) <= SHOWN else [*bad[: SHOWN - 1], bad[-1]]  # the newest rows differ most often
        shown = "; ".join(f"id={i}: got {_dumps(g)}, want {_dumps(w)}" for i, g, w in picked)
        return f"{len(bad)} of {len(want)} rows differ: {shown}"
    w = Counter(_dumps(r.get(column)) for r in want_rows)
    g = Counter(_dumps(r.get(column)) for r in got_rows)
    return f"values missing: {list((w - g).elements())[:SHOWN]}, unexpected: {list((g - w).elements())[:SHOWN]}"


def compare(expected: Expected, reader: str, answer: dict[str, Any]) -> list[Diff]:
    """Every difference between reader `reader`'s `answer` and the truth (empty: the cell agrees)."""
    if answer.get("rows") is None:
        return [Diff("error", None, str(answer.get("error")))]
    diffs = []
    for kind, got, want in (
        ("rows", answer["rows"], expected.num_rows),
        ("count", answer.get("count"), expected.num_rows),
        ("filtered_rows", answer.get("filtered_rows"), expected.filtered_rows),
        ("filtered_count", answer.get("filtered_count"), expected.filtered_rows),
    ):
        if got != want:
            diffs.append(Diff(kind, None, f"{got}, want {want}"))
    got_columns = answer["columns"]
    for name in sorted(expected.columns.keys() - got_columns.keys()):
        diffs.append(Diff("missing_column", name, "not in the scan"))
    for name in sorted(got_columns.keys() - expected.columns.keys()):
        diffs.append(Diff("extra_column", name, f"type {got_columns[name]['type']}"))
    for name in sorted(expected.columns.keys() & got_columns.keys()):
        if got_columns[name]["hash"] != expected.columns[name]["hash"]:
            diffs.append(Diff("values", name, value_diffs(expected.rows, answer.get("sample"), name)))
        seen = canonical(reader, got_columns[name]["type"])
        if seen != expected.types[name]:
            diffs.append(Diff("type", name, f"{seen} (reported as {got_columns[name]['type']}), want {expected.types[name]}"))
    return diffs


# ------------------------------------------------------------------ known bugs
Matcher = Callable[[Diff, Expected, dict[str, Any]], bool]


@dataclass(frozen=True)
class KnownBug:
    key: str
    readers: frozenset[str]
    title: str
    upstream: str
    matches: Matcher
    ours: bool = False
    """The reader bug bites only because of what ingester writes: never an expected failure."""


def _column_values(rows: list[dict[str, Any]] | None, column: str | None) -> list[Any] | None:
    return None if rows is None or column is None else sorted(_dumps(r.get(column)) for r in rows)


def _null_nested_read_as_empty(diff: Diff, expected: Expected, answer: dict[str, Any]) -> bool:
    """A list<struct> / map<_, struct> column whose values are the truth with every null as []."""
    if diff.kind != "values" or not expected.types.get(diff.column or "", "").startswith(("list<struct", "map<")):
        return False
    column = str(diff.column)
    emptied = [{**r, column: [] if r.get(column) is None else r[column]} for r in expected.rows]
    return _column_values(answer.get("sample"), column) == _column_values(emptied, column)


def _nested_read_as_null(diff: Diff, expected: Expected, answer: dict[str, Any]) -> bool:
    """A nested column that reads as null in rows where the truth has a value (and right elsewhere)."""
    if diff.kind != "values" or not expected.types.get(diff.column or "", "").startswith(("list<", "map<", "struct<")):
        return False
    got, want = _column_values(answer.get("sample"), diff.column), _column_values(expected.rows, diff.column)
    if got is None or want is None:
        return False
    null = _dumps(None)
    extra_nulls = Counter(got)[null] - Counter(want)[null]
    return extra_nulls > 0 and not (Counter(v for v in got if v != null) - Counter(want))


ALL = frozenset({"pyiceberg", "duckdb-1.4", "duckdb-1.5", "daft", "polars", "datafusion"})

KNOWN_BUGS: tuple[KnownBug, ...] = (
    KnownBug(
        "daft-count-identity-filter", frozenset({"daft"}),
        "count_rows() ignores a predicate on an identity partition column (the filtered scan is right)",
        "https://github.com/Eventual-Inc/Daft/issues/7420",
        lambda d, e, a: d.kind == "filtered_count" and a.get("filtered_rows") == e.filtered_rows,
    ),
    KnownBug(
        "pyiceberg-null-list-struct", ALL,
        "pyiceberg 0.12 turns a null list<struct> / map<_, struct> into [] (writing it, and reading it)",
        "https://github.com/apache/iceberg-python/issues/3833",
        _null_nested_read_as_empty,
    ),
    KnownBug(
        "iceberg-rust-nested-field-added", frozenset({"datafusion"}),
        "iceberg-rust cannot read files written before a struct field was added (matches nested fields by position)",
        "https://github.com/apache/iceberg-rust/issues/2617",
        lambda d, e, a: d.kind == "error" and "Incorrect number of arrays for StructArray fields" in d.detail,
    ),
    KnownBug(
        "daft-no-field-ids", frozenset({"daft"}),
        "daft refuses data files without parquet field ids (does not apply schema.name-mapping.default)",
        "https://github.com/Eventual-Inc/Daft/issues/7445",
        lambda d, e, a: d.kind == "error" and "carries no parquet field IDs" in d.detail,
        ours=True,
    ),
    KnownBug(
        "iceberg-rust-name-mapped-nested", frozenset({"datafusion"}),
        "iceberg-rust reads nested columns (list, map, struct) of files without field ids (name-mapped) as null",
        "README compatibility table (no upstream report found)",
        _nested_read_as_null,
        ours=True,
    ),
)  # fmt: skip


def explain(reader: str, diff: Diff, expected: Expected, answer: dict[str, Any]) -> KnownBug | None:
    return next((b for b in KNOWN_BUGS if reader in b.readers and b.matches(diff, expected, answer)), None)


@dataclass(frozen=True)
class Verdict:
    """`ok`, or a failure `message`; `known` names the upstream bugs when it is an expected failure."""

    diffs: tuple[Diff, ...]
    message: str = ""
    known: tuple[KnownBug, ...] = ()
    needs_twin: bool = False

    @property
    def ok(self) -> bool:
        return not self.diffs


def judge(reader: str, expected: Expected, answer: dict[str, Any], twin: dict[str, Any] | None, problems: list[str]) -> Verdict:
    """The verdict of one cell. `twin` is the reader's answer on the case's plain-pyiceberg twin
    (None when not read); `problems` are the build's (failed loads, dead letters)."""
    diffs = tuple(compare(expected, reader, answer))
    if not diffs:
        return Verdict(diffs)
    explained = [(d, explain(reader, d, expected, answer)) for d in diffs]
    lines = [f"{reader} ({answer.get('version')}) disagrees with the rows fed in:"]
    for d, bug in explained:
        note = ""
        if bug is not None:
            note = f"  [{'reader bug that ingester triggers' if bug.ours else 'known reader bug'}: {bug.title}; {bug.upstream}]"
        lines.append(f"  - {d}{note}")
    lines += [f"  build: {p}" for p in problems]
    upstream = tuple(dict.fromkeys(b for _, b in explained if b is not None and not b.ours))
    if problems or any(b is None or b.ours for _, b in explained):
        return Verdict(diffs, "\n".join(lines))
    if twin is None:
        return Verdict(diffs, "\n".join(lines), needs_twin=True)
    twin_bugs = {(b.key, d.column) for d in compare(expected, reader, twin) if (b := explain(reader, d, expected, twin))}
    missing = [(b, d) for d, b in explained if b is not None and (b.key, d.column) not in twin_bugs]
    if missing:
        lines.append("  the plain-pyiceberg twin does NOT show " + ", ".join(f"{b.key} on {d.column or d.kind}" for b, d in missing))
        return Verdict(diffs, "\n".join(lines))
    lines.append("  the plain-pyiceberg twin shows the same bug(s): " + ", ".join(b.key for b in upstream))
    return Verdict(diffs, "\n".join(lines), upstream)
