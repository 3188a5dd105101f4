"""A dlt-iceberg user switches: two loads with dlt-iceberg 0.6.4, then the import line changes
and two more loads run from a fresh pipelines folder (state restored from the destination),
on one catalog. Same pipeline code (``pipelines.py``, case ``migration``) on both sides."""

from __future__ import annotations

import pytest

from tests.parity.compare import rows
from tests.parity.conftest import ParityRuns
from tests.parity.test_parity import duck_rows, findings


@pytest.mark.parametrize("kind", ["sql", "rest"])
def test_switching_the_import_line_continues_every_table(parity: ParityRuns, kind: str) -> None:
    before, after = (findings(parity.migration[kind][side]) for side in ("dlt_iceberg", "ingester"))
    tables = after["tables"]
    prefix = "_dlt" if kind == "sql" else "dlt"
    # one table per resource, dlt's own tables continued (no second set beside them)
    assert sorted(tables) == sorted(["customers", "snapshot", "ticks", f"{prefix}_loads", f"{prefix}_version", f"{prefix}_pipeline_state"])
    if kind == "sql":
        assert {tuple(e)[0] for e in after["sql_catalog_entries"]} == {"dlt_catalog"}
        assert len(after["sql_catalog_entries"]) == len(tables)
    # the incremental cursor went on from where dlt-iceberg left it: no reload
    assert [after.get(f"run{r}", before.get(f"run{r}"))["start_value"] for r in (1, 2, 3, 4)] == [None, 9, 19, 29]
    # rows add up exactly, read by pyiceberg and by DuckDB
    expected = {
        "ticks": sorted(range(40)),
        "customers": [(i, min(i, 4)) for i in range(1, 8)],  # the last run that wrote each key
        "snapshot": [(k, 4) for k in range(4)],
    }

    def got(name: str, source: list[dict[str, object]] | None = None) -> list[object]:
        data = rows(tables, name, source)
        if name == "ticks":
            return sorted(r["t"] for r in data)  # type: ignore[index]
        key = "id" if name == "customers" else "k"
        return sorted((r[key], r["run"]) for r in data)  # type: ignore[index]

    for name, want in expected.items():
        assert got(name) == want, f"pyiceberg {name}"
        assert got(name, duck_rows(parity, kind, "dlt_iceberg", tables[name])) == want, f"duckdb {name}"
    assert sorted(r["t"] for r in after["run4"]["dataset"]["ticks"]) == expected["ticks"]
    assert sorted((r["id"], r["run"]) for r in after["run4"]["dataset"]["customers"]) == expected["customers"]
    assert len(tables[f"{prefix}_loads"]["rows"]) == 4
    # dlt-iceberg merged with equality deletes (upstream pyiceberg cannot read them); ingester's
    # first merge turned them into position deletes: the table reads everywhere again
    assert before["tables"]["customers"]["files"]["equality_deletes"] > 0
    assert tables["customers"]["files"]["equality_deletes"] == 0 and tables["customers"]["rows"] is not None
    assert before["run2"]["dataset"].startswith("TypeError")  # dlt-iceberg's dataset() on dlt >= 1.25
