"""`init`: find the app's migration tool and complete the `database:` section of
dbos-config.yaml as text, so that comments and layout survive (docs/behaviour.md, "init").

Pure functions of a directory listing and the file's text; verbs/init.py asks and writes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml


@dataclass(frozen=True)
class Tool:
    """A migration tool init recognises: what marks it, and its commands."""

    name: str
    found: str  # the file that showed it
    migrate: tuple[str, ...]
    rollback: tuple[str, ...]


_TOOLS = (
    ("alembic", ("alembic.ini",), ("alembic upgrade head",), ("alembic downgrade -1",)),
    (
        "knex",
        tuple(f"knexfile.{e}" for e in ("js", "ts", "cjs", "mjs")),
        ("npx knex migrate:latest",),
        ("npx knex migrate:rollback",),
    ),
    ("prisma", ("prisma/schema.prisma",), ("npx prisma migrate deploy",), ()),
    (
        "drizzle",
        tuple(f"drizzle.config.{e}" for e in ("ts", "js", "mjs", "cjs", "json")),
        ("npx drizzle-kit migrate",),
        (),
    ),
)


def detect(directory: Path) -> list[Tool]:
    """Every tool whose marker file is in `directory`, in the order alembic, knex, prisma, drizzle."""
    found = []
    for name, markers, migrate, rollback in _TOOLS:
        marker = next((m for m in markers if (directory / m).is_file()), None)
        if marker is not None:
            found.append(Tool(name, marker, migrate, rollback))
    return found


class CannotEdit(ValueError):
    """The file's shape does not allow a safe textual edit; the message says why."""


def _last_line(node: yaml.Node) -> int:
    """The 0-based index of the last line holding `node`'s content."""
    while isinstance(node, (yaml.MappingNode, yaml.SequenceNode)) and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(last, tuple) else last
    mark = node.end_mark
    return mark.line if mark.column > 0 else mark.line - 1


def _quoted(command: str) -> str:
    return yaml.safe_dump(command, default_style=None, width=10**6).strip().removesuffix("...").strip()


def _block(key: str, commands: tuple[str, ...], indent: str, eol: str = "\n") -> list[str]:
    return [f"{indent}{key}:{eol}", *(f"{indent}  - {_quoted(c)}{eol}" for c in commands)]


def complete(text: str, tool: Tool) -> tuple[str, list[str]]:
    """`text` with `database.migrate` and `database.rollback` added where missing (never
    replaced), and the keys added. Raises CannotEdit when the file cannot be edited safely."""
    try:
        root = yaml.compose(text) if text.strip() else None
    except yaml.YAMLError as exc:
        raise CannotEdit(f"the file is not valid YAML: {exc}") from None
    if root is not None and not isinstance(root, yaml.MappingNode):
        raise CannotEdit("the file's top level is not a mapping")
    eol = "\r\n" if "\r\n" in text else "\n"  # the file's own line ends
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines[-1] += eol
    database = None
    key_node = None
    if root is not None:
        for k, v in root.value:
            if isinstance(k, yaml.ScalarNode) and k.value == "database":
                key_node, database = k, v
    wanted = [("migrate", tool.migrate), ("rollback", tool.rollback)]
    if database is None:
        added = [key for key, commands in wanted if commands]
        new = [f"database:{eol}"] + [line for key, cmds in wanted if cmds for line in _block(key, cmds, "  ", eol)]
        return "".join(lines) + "".join(new), added
    assert key_node is not None
    if isinstance(database, yaml.ScalarNode) and database.tag.endswith(":null") and database.value in ("", "~", "null"):
        # `database:` with nothing under it: the keys go on the lines after it
        at = key_node.start_mark.line + 1
        indent = " " * (key_node.start_mark.column + 2)
        existing: set[str] = set()
        if database.value:
            raise CannotEdit("database is written as null; replace it by the keys by hand")
    elif isinstance(database, yaml.MappingNode) and database.flow_style is False and database.value:
        at = _last_line(database) + 1
        indent = " " * database.value[0][0].start_mark.column
        existing = {k.value for k, _ in database.value if isinstance(k, yaml.ScalarNode)}
    else:
        raise CannotEdit("database is not a block mapping (e.g. `database: {}`); add the keys by hand")
    added = [key for key, commands in wanted if commands and key not in existing]
    new = [line for key, cmds in wanted if cmds and key not in existing for line in _block(key, cmds, indent, eol)]
    return "".join(lines[:at] + new + lines[at:]), added
