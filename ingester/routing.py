"""Event table -> Iceberg table (namespace, name), with static map and namespace prefix, and the
branch its commits go to."""

from __future__ import annotations

import re
from dataclasses import replace

from pyiceberg.table.refs import MAIN_BRANCH

from ingester.batch import TableRef
from ingester.events import IDENTIFIER_PATTERN, FileEvent, InvalidEvent
from ingester.settings import RoutingSettings

_IDENT = re.compile(IDENTIFIER_PATTERN)


class Router:
    def __init__(self, cfg: RoutingSettings) -> None:
        self._cfg = cfg

    def route(self, event: FileEvent) -> TableRef:
        """Raises ``InvalidEvent`` when the mapped name is not a plain identifier."""
        mapped = self._cfg.table_map.get(event.table)
        if mapped:
            namespace, _, name = mapped.rpartition(".")
        else:
            namespace, name = event.namespace or self._cfg.namespace, event.table
        namespace = self._cfg.namespace_prefix + (namespace or self._cfg.namespace)
        for what, value in (("namespace", namespace), ("table", name)):
            if not _IDENT.match(value):
                raise InvalidEvent(f"field '{what}': {value!r} is not a valid identifier")
        return TableRef(namespace, name)

    def branched(self, event: FileEvent, table: TableRef) -> FileEvent:
        """``event`` with its branch set: its own, else the route's (``routing.branches`` by
        event table, then by ``ns.table``), else ``main``."""
        branch = event.branch or self._cfg.branches.get(event.table) or self._cfg.branches.get(str(table)) or MAIN_BRANCH
        return event if branch == event.branch else replace(event, branch=branch)
