"""Each reader's own type names -> one canonical spelling (Iceberg's), so types compare across readers.

Canonical: `boolean int long float double date time timestamp timestamptz string binary uuid`,
`decimal(P, S)`, `fixed[N]`, `list<T>`, `map<K, V>`, `struct<name: T, ...>`. The readers spell them:

| reader | examples |
| --- | --- |
| pyiceberg | `long`, `decimal(38, 9)`, `list<struct<23: a: optional int>>`, `map<string, int>` |
| duckdb | `BIGINT`, `DECIMAL(38,9)`, `TIMESTAMP WITH TIME ZONE`, `STRUCT(a INTEGER)[]`, `MAP(VARCHAR, INTEGER)` |
| daft | `Int64`, `Decimal[precision: 38, scale: 9]`, `Timestamp[us; UTC]`, `List[Struct[a: Int32]]`, `Map[String: Int32]` |
| polars | `Int64`, `Decimal(precision=38, scale=9)`, `Datetime(time_unit='us', time_zone='UTC')`, `List(Struct({'a': Int32}))` |
| datafusion | Arrow's: `int64`, `decimal128(38, 9)`, `timestamp[us, tz=+00:00]`, `list<element: struct<a: int32>>` |

A name this module does not know comes back as `?<the reader's spelling>`, which never equals an
expected type, so an unknown spelling fails loudly instead of passing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .readers import READERS

_TOKEN = re.compile(r"'[^']*'|\"[^\"]*\"|[+-]\d[\d:]*|\d+|[^\W\d][\w.]*|[()\[\]<>{},:;=]")
_NAMED_ENTRIES = re.compile(r" \('[^']*'\)")  # Arrow's `map<string, int32 ('entries name')>`
_CLOSE = {"(": ")", "[": "]", "<": ">", "{": "}"}


@dataclass
class Node:
    """`words` (a name, maybe several words, quoted ones unquoted) then bracketed groups of items;
    an item is a list of nodes with the separators between them (`:`, `;`, `=`)."""

    words: list[str] = field(default_factory=list)
    groups: list[tuple[str, list[list[Node | str]]]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return " ".join(self.words).lower()

    def items(self, i: int = 0) -> list[list[Node | str]]:
        return self.groups[i][1] if len(self.groups) > i else []


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _TOKEN.findall(text)
        self.i = 0

    def peek(self) -> str | None:
        return self.tokens[self.i] if self.i < len(self.tokens) else None

    def node(self) -> Node:
        node = Node()
        while (tok := self.peek()) is not None and tok not in "()[]<>{},:;=":
            node.words.append(tok[1:-1] if tok[0] in "'\"" else tok)
            self.i += 1
        while (tok := self.peek()) is not None and tok in _CLOSE:
            self.i += 1
            node.groups.append((tok, self.items(_CLOSE[tok])))
        return node

    def items(self, close: str) -> list[list[Node | str]]:
        items: list[list[Node | str]] = []
        current: list[Node | str] = []
        while (tok := self.peek()) is not None:
            if tok == close:
                self.i += 1
                break
            if tok == ",":
                self.i += 1
                items.append(current)
                current = []
            elif tok in ":;=":
                self.i += 1
                current.append(tok)
            else:
                current.append(self.node())
        if current:
            items.append(current)
        return items


def parse(text: str) -> Node:
    return _Parser(text).node()


def _nodes(item: list[Node | str]) -> list[Node]:
    return [n for n in item if isinstance(n, Node)]


def _labelled(item: list[Node | str]) -> tuple[str, Node]:
    """`label: type` / `label = value` -> (label, the last node)."""
    nodes = _nodes(item)
    return nodes[0].name, nodes[-1]


def _struct(fields: list[tuple[str, str]]) -> str:
    return "struct<" + ", ".join(f"{n}: {t}" for n, t in fields) + ">"


def _unknown(node: Node) -> str:
    return "?" + node.name


# --------------------------------------------------------------------- pyiceberg
_PYICEBERG = {"boolean", "int", "long", "float", "double", "date", "time", "timestamp", "timestamptz", "string", "binary", "uuid"}


def _pyiceberg(node: Node) -> str:
    name = node.name.removeprefix("optional ").removeprefix("required ")
    if name in _PYICEBERG or name in ("timestamp_ns", "timestamptz_ns"):
        return name
    args = node.items()
    if name == "decimal":
        return f"decimal({args[0][0].name}, {args[1][0].name})"  # type: ignore[union-attr]
    if name == "fixed":
        return f"fixed[{args[0][0].name}]"  # type: ignore[union-attr]
    if name == "list":
        return f"list<{_pyiceberg(_nodes(args[0])[-1])}>"
    if name == "map":
        return f"map<{_pyiceberg(_nodes(args[0])[-1])}, {_pyiceberg(_nodes(args[1])[-1])}>"
    if name == "struct":  # `id: name: optional type`
        return _struct([(_nodes(a)[1].name, _pyiceberg(_nodes(a)[-1])) for a in args])
    return _unknown(node)


# ------------------------------------------------------------------------ duckdb
_DUCKDB = {
    "boolean": "boolean", "integer": "int", "bigint": "long", "float": "float", "double": "double",
    "date": "date", "time": "time", "timestamp": "timestamp", "timestamp with time zone": "timestamptz",
    "timestamp_ns": "timestamp_ns", "varchar": "string", "blob": "binary", "uuid": "uuid",
}  # fmt: skip


def _duckdb(node: Node) -> str:
    groups = list(node.groups)
    lists = 0
    while groups and groups[-1][0] == "[" and not groups[-1][1]:  # `T[]`
        groups.pop()
        lists += 1
    inner = _duckdb_base(Node(node.words, groups))
    for _ in range(lists):
        inner = f"list<{inner}>"
    return inner


def _duckdb_base(node: Node) -> str:
    name, args = node.name, node.items()
    if name in _DUCKDB and not node.groups:
        return _DUCKDB[name]
    if name == "decimal":
        return f"decimal({args[0][0].name}, {args[1][0].name})"  # type: ignore[union-attr]
    if name == "map":
        return f"map<{_duckdb(_nodes(args[0])[0])}, {_duckdb(_nodes(args[1])[0])}>"
    if name == "struct":  # `name TYPE`: the first word names the field, the rest is its type
        fields = []
        for a in args:
            n = _nodes(a)[0]
            fields.append((n.words[0].lower(), _duckdb(Node(n.words[1:], n.groups))))
        return _struct(fields)
    return _unknown(node)


# -------------------------------------------------------------------------- daft
_DAFT = {
    "bool": "boolean", "int32": "int", "int64": "long", "float32": "float", "float64": "double",
    "date": "date", "string": "string", "utf8": "string", "binary": "binary",
}  # fmt: skip


def _daft(node: Node) -> str:
    name, args = node.name, node.items()
    if name in _DAFT and not node.groups:
        return _DAFT[name]
    if name == "time" and args and args[0][0].name == "us":  # type: ignore[union-attr]
        return "time"
    if name == "timestamp" and args and _nodes(args[0])[0].name == "us":
        return "timestamptz" if len(_nodes(args[0])) > 1 else "timestamp"  # `Timestamp[us; UTC]`
    if name == "decimal":
        labelled = dict(_labelled(a) for a in args)
        return f"decimal({labelled['precision'].name}, {labelled['scale'].name})"
    if name == "fixedsizebinary":
        return f"fixed[{args[0][0].name}]"  # type: ignore[union-attr]
    if name == "list":
        return f"list<{_daft(_nodes(args[0])[0])}>"
    if name == "map":  # `Map[K: V]`
        key, value = _nodes(args[0])
        return f"map<{_daft(key)}, {_daft(value)}>"
    if name == "struct":
        return _struct([(label, _daft(t)) for label, t in map(_labelled, args)])
    return _unknown(node)


# ------------------------------------------------------------------------ polars
_POLARS = {
    "boolean": "boolean", "int32": "int", "int64": "long", "float32": "float", "float64": "double",
    "date": "date", "time": "time", "string": "string", "binary": "binary",
}  # fmt: skip


def _polars(node: Node) -> str:
    name, args = node.name, node.items()
    if name in _POLARS and not node.groups:
        return _POLARS[name]
    if name == "datetime":
        labelled = {label: n.name for label, n in map(_labelled, args)}
        if labelled.get("time_unit") == "us":
            return "timestamp" if labelled.get("time_zone") in (None, "none") else "timestamptz"
    if name == "decimal":
        labelled = {label: n.name for label, n in map(_labelled, args)}
        return f"decimal({labelled['precision']}, {labelled['scale']})"
    if name == "list":
        return f"list<{_polars(_nodes(args[0])[0])}>"
    if name == "map":
        return f"map<{_polars(_nodes(args[0])[0])}, {_polars(_nodes(args[1])[0])}>"
    if name == "struct":  # `Struct({'a': Int32, ...})`
        fields = _nodes(args[0])[0].items() if args else []
        return _struct([(label, _polars(t)) for label, t in map(_labelled, fields)])
    return _unknown(node)


# ------------------------------------------------------------- datafusion (arrow)
_ARROW = {
    "bool": "boolean", "int32": "int", "int64": "long", "float": "float", "double": "double",
    "string": "string", "large_string": "string", "string_view": "string",
    "binary": "binary", "large_binary": "binary", "binary_view": "binary",
}  # fmt: skip
_UTC = {"utc", "+00:00", "etc/utc"}


def _arrow(node: Node) -> str:
    name, args = node.name, node.items()
    if name in _ARROW and not node.groups:
        return _ARROW[name]
    if name == "date32" and args and args[0][0].name == "day":  # type: ignore[union-attr]
        return "date"
    if name == "time64" and args and args[0][0].name == "us":  # type: ignore[union-attr]
        return "time"
    if name == "timestamp" and args and _nodes(args[0])[0].name == "us":
        if len(args) == 1:
            return "timestamp"
        label, zone = _labelled(args[1])
        return "timestamptz" if label == "tz" and zone.name in _UTC else _unknown(node)
    if name in ("decimal128", "decimal256"):
        return f"decimal({args[0][0].name}, {args[1][0].name})"  # type: ignore[union-attr]
    if name == "fixed_size_binary":
        return f"fixed[{args[0][0].name}]"  # type: ignore[union-attr]
    if name in ("list", "large_list", "list_view", "large_list_view"):
        return f"list<{_arrow(_nodes(args[0])[-1])}>"
    if name == "map":
        return f"map<{_arrow(_nodes(args[0])[-1])}, {_arrow(_nodes(args[1])[-1])}>"
    if name == "struct":
        return _struct([(label, _arrow(t)) for label, t in map(_labelled, args)])
    return _unknown(node)


_DIALECTS = {"pyiceberg": _pyiceberg, "duckdb": _duckdb, "daft": _daft, "polars": _polars, "datafusion": _arrow}
DIALECT = {r.name: _DIALECTS[r.script.removeprefix("read_").removesuffix(".py")] for r in READERS}


def canonical(reader: str, spelling: str) -> str:
    """The canonical type of `spelling`, a type name as reader `reader` reported it."""
    try:
        return DIALECT[reader](parse(_NAMED_ENTRIES.sub("", spelling)))
    except (IndexError, KeyError, ValueError):
        return "?" + spelling
