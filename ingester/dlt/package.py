"""A dlt load package as file events, for the queue-fed loads (``ingester_queue``, and
``ingester publish <package>``).

A nested table of a merge (the child rows of a root row, linked by dlt's root key) is
published the way it must land: first one keys-only event holding the row keys of every
root row of the load (the parents: their old nested rows go, even for a parent that now has
none), then the load's nested files as plain appends. ``publish`` delivers keys-only events
before the files, and the keys file has the schema of the load's nested files, so it makes
the table when it is missing and its commit is recorded: a replay never deletes the load's
own rows. The result equals the direct destination's (which deletes by the same keys).
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from dlt.common.schema.utils import fill_hints_from_parent_and_clone_table

from ingester.events import BRANCH_HINT, FileEvent, WriteDisposition
from ingester.publish import file_event, table_hints

KEYS_FOLDER = "ingester_keys"
JOB_FOLDERS = ("new_jobs", "started_jobs", "completed_jobs")


def parent_row_ids(package: Path, root: str, row_key: str) -> pa.ChunkedArray:
    """Column ``row_key`` (dlt's ``_dlt_id``) of every file of table ``root`` in load package
    ``package``, whichever job folder holds it: the parents of this load's nested rows."""
    columns = [pq.read_table(p, columns=[row_key]).column(0) for p in sorted(package.glob(f"*/{root}.*.parquet"))]
    return pa.chunked_array([c for col in columns for c in col.chunks], pa.string())


def _column_with(table: Mapping[str, Any], hint: str) -> str | None:
    return next((name for name, col in table.get("columns", {}).items() if col.get(hint)), None)


def _nested_merge(tables: Mapping[str, Any], name: str) -> tuple[str, str, str] | None:
    """(root table, its row key, this table's root key) for a nested table of a merge whose
    rows carry their root's key; None for any other table."""
    if not tables[name].get("parent"):
        return None
    root = name
    while parent := tables[root].get("parent"):
        root = parent
    row_key, root_key = _column_with(tables[root], "row_key"), _column_with(tables[name], "root_key")
    if tables[root].get("write_disposition") != "merge" or row_key is None or root_key is None:
        return None
    return root, row_key, root_key


def _keys_file(package: Path, name: str, root: str, row_key: str, root_key: str, paths: Sequence[Path]) -> Path:
    """The parents' keys as values of ``root_key``, in a parquet file (under the package)
    with the schema of the table's first file of the load (other columns null)."""
    ids = parent_row_ids(package, root, row_key)
    template = pq.read_schema(sorted(paths)[0]) if paths else pa.schema([(root_key, pa.string())])
    schema = pa.schema([f.with_nullable(True) for f in template]).remove_metadata()
    data = pa.table([ids.cast(f.type) if f.name == root_key else pa.nulls(len(ids), f.type) for f in schema], schema=schema)
    path = package / KEYS_FOLDER / f"{name}.parent_keys.parquet"
    path.parent.mkdir(exist_ok=True)
    part = path.with_suffix(".part")
    pq.write_table(data, part)
    part.replace(path)
    return path


def _root_of(tables: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    parent = tables[name].get("parent")
    return _root_of(tables, parent) if parent else tables[name]


def load_events(
    package: Path, table: Mapping[str, Any], paths: Sequence[Path], load_id: str, namespace: str | None = None
) -> list[FileEvent]:
    """Events for the files ``paths`` of dlt table ``table`` (its hints filled from its
    parents) in load package ``package``; a nested table of a merge gets its keys-only
    event first and its files as appends (see the module docstring)."""
    name = str(table["name"])
    hints = table_hints(dict(table))
    tables = json.loads((package / "schema.json").read_text())["tables"]
    nested = _nested_merge(tables, name)
    if nested is None:
        return [file_event(p, name, load_id=load_id, namespace=namespace, written_here=True, **hints) for p in paths]
    keys = _keys_file(package, name, *nested, paths)
    key_columns = {k: v for k, v in hints["columns"].items() if k in pq.read_schema(keys).names}
    first = file_event(keys, name, load_id=load_id, namespace=namespace, write_disposition=WriteDisposition.MERGE,
                       merge_key=[nested[2]], columns=key_columns, keys_only=True, written_here=True, branch=hints["branch"])
    return [first, *(file_event(p, name, load_id=load_id, namespace=namespace, columns=hints["columns"], written_here=True,
                                branch=hints["branch"]) for p in paths)]


def load_package_events(package: Path, namespace: str | None = None) -> Iterator[FileEvent]:
    """Events for a dlt load package folder (``<load_id>/`` with ``schema.json`` and jobs), as
    ``ingester_queue`` publishes them. dlt's own tables (``_dlt_*``) are skipped."""
    tables = json.loads((package / "schema.json").read_text()).get("tables", {})
    files: dict[str, list[Path]] = {}
    for sub in JOB_FOLDERS:
        for path in sorted((package / sub).glob("*.parquet")):
            name = path.name.split(".")[0]
            if not name.startswith("_dlt") and name in tables:
                files.setdefault(name, []).append(path)
    for name in tables:  # a nested table of a merge without files still loses its parents' old rows
        link = _nested_merge(tables, name)
        if link is not None and link[0] in files:
            files.setdefault(name, [])
    for name, paths in files.items():
        filled = fill_hints_from_parent_and_clone_table(tables, {**tables[name], "name": name})
        table = {**filled, BRANCH_HINT: _root_of(tables, name).get(BRANCH_HINT)}  # a nested table goes with its root
        yield from load_events(package, table, paths, package.name, namespace)
