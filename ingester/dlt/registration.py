"""``register_new_tables``: tables that sit in a local warehouse folder but not in the catalog
(a lost or new catalog database) are registered before a load, as dlt-iceberg does."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from pyiceberg.catalog import Catalog

log = logging.getLogger(__name__)


def metadata_version(path: Path) -> tuple[int, str]:
    """Sort key of ``00012-<uuid>.metadata.json`` / ``v12.metadata.json``: the version number."""
    digits = "".join(c for c in path.name.split("-")[0].split(".")[0] if c.isdigit())
    return (int(digits) if digits else -1, path.name)


def register_tables(catalog: Catalog, namespace: str, folder: Path, table_name: Callable[[str], str]) -> list[str]:
    """Register every ``<folder>/<namespace>/<dir>/metadata/`` the catalog does not list, as
    ``table_name(dir)`` at its newest metadata file. A folder that fails is logged and left
    (it does not stop the load). Returns the names registered."""
    listed = {ident[-1] for ident in catalog.list_tables(namespace)}
    registered = []
    for table_dir in sorted(p for p in (folder / namespace).glob("*/metadata") if p.is_dir()):
        name = table_name(table_dir.parent.name)
        files = sorted(table_dir.glob("*.metadata.json"), key=metadata_version)
        if name in listed or not files:
            continue
        try:
            catalog.register_table((namespace, name), files[-1].resolve().as_uri())
        except Exception as exc:  # noqa: BLE001 - as dlt-iceberg: one bad folder does not stop the load
            log.warning("could not register %s.%s from %s: %s", namespace, name, files[-1], exc)
            continue
        log.info("registered %s.%s from %s", namespace, name, files[-1])
        registered.append(name)
    return registered
