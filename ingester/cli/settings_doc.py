"""The settings reference, generated from the ``Settings`` model: one markdown row per env var.

``ingester settings --markdown`` prints the table. README.md holds a copy between
``<!-- settings-table:start -->`` and ``<!-- settings-table:end -->`` that a test keeps equal;
``python -m ingester.cli.settings_doc --write README.md`` refreshes it after a settings change.
The environment variable names come from the model's own ``env_prefix`` and
``env_nested_delimiter``, so the table, the deploy files' checks and the code cannot drift.
"""

from __future__ import annotations

import argparse
import enum
import json
import sys
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

import annotated_types
from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from ingester.settings import CONFIG_ENV, Settings

START_MARKER = "<!-- settings-table:start -->"
END_MARKER = "<!-- settings-table:end -->"
_BOUNDS = ((annotated_types.Ge, ">="), (annotated_types.Gt, ">"), (annotated_types.Le, "<="), (annotated_types.Lt, "<"))


@dataclass(frozen=True, slots=True)
class SettingDoc:
    """One environment variable: what it holds and what it defaults to."""

    env: str
    type: str
    default: str
    description: str
    secret: bool
    mapping: bool
    """A JSON object; its keys may also be set one by one as ``<env><delimiter><KEY>``."""


def _prefix_and_delimiter(model: type[Settings]) -> tuple[str, str]:
    return str(model.model_config.get("env_prefix", "")), str(model.model_config.get("env_nested_delimiter") or "__")


def _strip_optional(annotation: Any) -> Any:
    if get_origin(annotation) in (Union, types.UnionType):
        args = [a for a in get_args(annotation) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return annotation


def _is_secret(annotation: Any) -> bool:
    annotation = _strip_optional(annotation)
    return annotation is SecretStr or any(_is_secret(a) for a in get_args(annotation))


def _type_name(annotation: Any) -> str:
    annotation = _strip_optional(annotation)
    origin = get_origin(annotation)
    if origin is Literal:
        return " or ".join(f"`{value}`" for value in get_args(annotation))
    if origin in (list, tuple, set, frozenset):
        return f"JSON list of {_type_name(get_args(annotation)[0])}"
    if origin is dict:
        return "JSON object"
    names = {str: "string", SecretStr: "string", int: "integer", float: "number", bool: "boolean", Path: "path"}
    if annotation in names:
        return names[annotation]
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return " or ".join(f"`{member.value}`" for member in annotation)
    return getattr(annotation, "__name__", str(annotation))


def _bounds(field: FieldInfo) -> str:
    found = [f"{sign} {getattr(meta, kind.__name__.lower())}"
             for meta in field.metadata for kind, sign in _BOUNDS if isinstance(meta, kind)]
    return f" ({', '.join(found)})" if found else ""


def _default(name: str, field: FieldInfo) -> str:
    if field.default_factory is not None:
        value = field.default_factory()  # type: ignore[call-arg]
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return ""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, enum.Enum):
        value = value.value
    if isinstance(value, (list, tuple, dict)):
        return f"`{json.dumps(value)}`"
    if isinstance(value, int) and name.endswith("_bytes") and value >= 1024:
        return f"`{value}` ({_binary_size(value)})"
    return f"`{value}`" if str(value) else '`""`'


def _binary_size(value: int) -> str:
    scaled, unit = float(value), "B"
    for larger in ("KiB", "MiB", "GiB", "TiB"):
        if scaled < 1024:
            break
        scaled, unit = scaled / 1024, larger
    return f"{scaled:g} {unit}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "\\<").replace(">", "\\>")


def _leaves(model: type[BaseModel], env: str, delimiter: str) -> Iterator[SettingDoc]:
    for name, field in model.model_fields.items():
        annotation = field.annotation
        key = f"{env}{name.upper()}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            yield from _leaves(annotation, key + delimiter, delimiter)
            continue
        secret = _is_secret(annotation)
        yield SettingDoc(
            env=key,
            type=_type_name(annotation) + _bounds(field),
            default=_default(name, field),
            description=_escape(field.description or ""),
            secret=secret,
            mapping=get_origin(_strip_optional(annotation)) is dict,
        )


def setting_docs(model: type[Settings] = Settings) -> list[SettingDoc]:
    """Every environment variable the model reads, in declaration order, ``INGESTER_CONFIG`` first."""
    prefix, delimiter = _prefix_and_delimiter(model)
    config = SettingDoc(CONFIG_ENV, "path", "`ingester.toml` if present", "TOML settings file (same keys, nested tables)",
                        secret=False, mapping=False)
    return [config, *_leaves(model, prefix.upper(), delimiter)]


def is_setting_env(name: str, model: type[Settings] = Settings) -> bool:
    """True if ``name`` is an environment variable the settings read (case-insensitive, like the model).

    Keys under a JSON-object setting count too: ``INGESTER_SOURCE__KAFKA_OPTIONS__ACKS``.
    """
    _, delimiter = _prefix_and_delimiter(model)
    upper = name.upper()
    for doc in setting_docs(model):
        if upper == doc.env or (doc.mapping and upper.startswith(doc.env + delimiter) and len(upper) > len(doc.env) + len(delimiter)):
            return True
    return False


def secret_envs(model: type[Settings] = Settings) -> set[str]:
    """Names of the variables that hold secrets (they belong in a Secret, never a ConfigMap)."""
    return {doc.env for doc in setting_docs(model) if doc.secret}


def markdown_table(model: type[Settings] = Settings) -> str:
    """The settings table in GitHub markdown, ending with a newline."""
    lines = ["| env var | type | default | description |", "|---|---|---|---|"]
    for doc in setting_docs(model):
        kind = f"{doc.type}, **secret**" if doc.secret else doc.type
        lines.append(f"| `{doc.env}` | {kind} | {doc.default} | {doc.description} |")
    return "\n".join(lines) + "\n"


def table_in(text: str) -> str:
    """The text between the markers (raises ValueError when they are missing)."""
    try:
        start = text.index(START_MARKER) + len(START_MARKER)
        end = text.index(END_MARKER, start)
    except ValueError:
        raise ValueError(f"markers {START_MARKER} ... {END_MARKER} not found") from None
    return text[start:end].strip("\n") + "\n"


def with_table(text: str, table: str) -> str:
    """``text`` with the part between the markers replaced by ``table``."""
    table_in(text)
    head, rest = text.split(START_MARKER, 1)
    _, tail = rest.split(END_MARKER, 1)
    return f"{head}{START_MARKER}\n{table}{END_MARKER}{tail}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Print, check or rewrite the generated settings table.")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", type=Path, metavar="FILE", help="replace the table between the markers in FILE")
    group.add_argument("--check", type=Path, metavar="FILE", help="exit 1 if the table in FILE is stale")
    args = parser.parse_args(argv)
    table = markdown_table()
    if args.write:
        args.write.write_text(with_table(args.write.read_text(encoding="utf-8"), table), encoding="utf-8")
    elif args.check:
        if table_in(args.check.read_text(encoding="utf-8")) != table:
            print(f"{args.check}: settings table is stale; run python -m ingester.cli.settings_doc --write {args.check}",
                  file=sys.stderr)
            return 1
    else:
        sys.stdout.write(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
