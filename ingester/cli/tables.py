"""What landed: one row per table of the catalog (``ingester tables``), the ingester's own
ledgers (``ingester.iceberg_layer.ledger``) left out."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from pyiceberg.catalog import Catalog

from ingester.iceberg_layer.ledger import is_ledger


@dataclass(frozen=True, slots=True)
class TableInfo:
    name: str
    rows: int
    snapshots: int
    last_commit: str | None
    metadata_location: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


def list_tables(catalog: Catalog) -> list[TableInfo]:
    out = []
    for ns in catalog.list_namespaces():
        for ident in catalog.list_tables(ns):
            if is_ledger(ident[-1]):
                continue
            table = catalog.load_table(ident)
            snap = table.current_snapshot()
            summary = snap.summary.additional_properties if snap and snap.summary else {}
            rows = int(summary.get("total-records", 0)) - int(summary.get("total-position-deletes", 0))
            last = (
                datetime.fromtimestamp(snap.timestamp_ms / 1000, tz=timezone.utc).isoformat(timespec="seconds")
                if snap
                else None
            )
            out.append(TableInfo(".".join(ident), rows, len(table.metadata.snapshots), last, table.metadata_location))
    return sorted(out, key=lambda t: t.name)
