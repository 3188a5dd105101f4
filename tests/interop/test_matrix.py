"""Every table case (mode x disposition x zero-copy/rewrite x evolution x partition transform x
awkward types and names) read by every reader must give the rows fed in: row count, per-column
content hash, types, and the count of a (partition) filter.

``EXPECTED_FAILURES`` declares the cells that meet an upstream reader bug of the README's
compatibility table; they are strict expected failures. Such a cell xfails only when every
difference belongs to its bug AND the case's twin (its loads replayed by plain pyiceberg) shows that bug too
(``verdict.judge``); any other difference fails it, and so does the bug going away (strict).
"""

from __future__ import annotations

import pytest

from .cases import CASES
from .matrix import Matrix
from .readers import READERS
from .verdict import KNOWN_BUGS

pytestmark = pytest.mark.timeout(1800)  # the first test builds the reader venvs and the whole matrix


class KnownReaderBug(AssertionError):
    """A cell fails only in the ways of upstream reader bugs, shown on a plain-pyiceberg table too."""


EXPECTED_FAILURES: dict[str, str] = {
    "zero_copy_null_list_struct-pyiceberg": "pyiceberg-null-list-struct",
    **{f"{case}-datafusion": "iceberg-rust-nested-field-added" for case in ("dlt_evolution", "zero_copy_evolution", "rewrite_evolution")},
    **{f"rewrite_null_list_struct-{r.name}": "pyiceberg-null-list-struct" for r in READERS},
}
"""cell id -> the known bug (``verdict.KNOWN_BUGS``) it meets."""

BUGS = {b.key: b for b in KNOWN_BUGS}


def _cell(case: str, reader: str) -> object:
    cell = f"{case}-{reader}"
    if cell not in EXPECTED_FAILURES:
        return pytest.param(case, reader, id=cell)
    bug = BUGS[EXPECTED_FAILURES[cell]]
    label = next(r.label for r in READERS if r.name == reader)
    reason = f"{reader} {label}: {bug.title}, {bug.upstream} (reproduces on plain pyiceberg; see README compatibility table)"
    return pytest.param(case, reader, id=cell, marks=pytest.mark.xfail(strict=True, raises=KnownReaderBug, reason=reason))


@pytest.mark.parametrize(("case", "reader"), [_cell(case, reader.name) for case in CASES for reader in READERS])
def test_reads_the_same(case: str, reader: str, matrix: Matrix) -> None:
    verdict = matrix.verdict(case, reader)
    if verdict.ok:
        return
    declared = EXPECTED_FAILURES.get(f"{case}-{reader}")
    if verdict.known and [b.key for b in verdict.known] == [declared]:
        raise KnownReaderBug(verdict.message)
    if verdict.known:
        pytest.fail(f"{verdict.message}\n  (an upstream bug, but this cell does not declare it in EXPECTED_FAILURES)", pytrace=False)
    pytest.fail(verdict.message, pytrace=False)


@pytest.mark.parametrize("case", list(CASES))
def test_written_as_named(case: str, matrix: Matrix) -> None:
    """The table exists without failed loads or dead letters, and a `zero_copy` case holds data
    files registered as-is while a rewrite case holds only files ingester wrote; a `joined`
    case holds a file joined from several."""
    built = matrix.built[case]
    assert built.problems == [], built.problems
    if matrix.cases[case].zero_copy:
        assert built.as_is_files > 0, f"no data file registered as-is ({built.rewritten_files} rewritten)"
    else:
        assert (built.as_is_files, built.rewritten_files > 0) == (0, True), f"{built.as_is_files} as-is, {built.rewritten_files} rewritten"
    if matrix.cases[case].joined:  # so every reader reads a file of several producers' row groups
        assert built.joined_files > 0, f"no joined data file ({built.as_is_files} as-is)"
