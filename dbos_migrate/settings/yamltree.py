"""Parse YAML into plain values while keeping where each key and value stood.

PyYAML's own constructors drop positions and silently let a later duplicate key win.
Config errors must name `file:line:col`, and a duplicate key is an error, so the
document is composed into nodes and built here by hand. Only safe tags are honoured.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

Path = tuple[str | int, ...]


@dataclass
class YamlTree:
    """The built document plus positions (1-based line, column) by path."""

    value: Any
    positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    key_positions: dict[Path, tuple[int, int]] = field(default_factory=dict)
    errors: list[tuple[int, int, Path, str]] = field(default_factory=list)

    def where(self, path: Path, *, key: bool = False) -> tuple[int, int]:
        """Position of `path`, or of its nearest located ancestor."""
        p = path
        while True:
            if key and p in self.key_positions:
                return self.key_positions[p]
            if p in self.positions:
                return self.positions[p]
            if not p:
                return (1, 1)
            p = p[:-1]


# Guards against hostile documents: alias bombs and absurd nesting.
MAX_NODES = 100_000
MAX_DEPTH = 64

_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
# Collections are built by hand below, so their tags must be checked by hand too: a
# `!!python/object` (or any other non-standard) tag on a mapping or list is refused, not ignored.
_COLLECTION_TAGS: dict[type[yaml.Node], tuple[str, ...]] = {
    yaml.MappingNode: ("tag:yaml.org,2002:map", "tag:yaml.org,2002:set"),
    yaml.SequenceNode: ("tag:yaml.org,2002:seq", "tag:yaml.org,2002:omap", "tag:yaml.org,2002:pairs"),
}


def _mark(node: yaml.Node) -> tuple[int, int]:
    return (node.start_mark.line + 1, node.start_mark.column + 1)


class _Builder:
    def __init__(self, loader: Any, tree: YamlTree) -> None:
        self.loader = loader
        self.tree = tree
        self.count = 0
        self.active: set[int] = set()

    def fail(self, node: yaml.Node, path: Path, message: str) -> None:
        line, col = _mark(node)
        self.tree.errors.append((line, col, path, message))

    def build(self, node: yaml.Node, path: Path, depth: int) -> Any:
        self.count += 1
        if self.count > MAX_NODES:
            raise _TooBig(node)
        if depth > MAX_DEPTH:
            self.fail(node, path, f"nesting deeper than {MAX_DEPTH} levels")
            return None
        self.tree.positions.setdefault(path, _mark(node))
        safe_tags = _COLLECTION_TAGS.get(type(node))
        if safe_tags is not None and node.tag not in safe_tags:
            self.fail(node, path, f"the tag {node.tag!r} is not supported: use a plain mapping or list")
            return None
        if isinstance(node, yaml.MappingNode):
            return self._mapping(node, path, depth)
        if isinstance(node, yaml.SequenceNode):
            if id(node) in self.active:
                self.fail(node, path, "an alias refers to itself")
                return None
            self.active.add(id(node))
            items = [self.build(child, (*path, i), depth + 1) for i, child in enumerate(node.value)]
            self.active.discard(id(node))
            return items
        try:
            return self.loader.construct_object(node, deep=True)
        except yaml.YAMLError as exc:
            self.fail(node, path, _yaml_reason(exc))
            return None

    def _mapping(self, node: yaml.MappingNode, path: Path, depth: int) -> dict[str, Any] | None:
        if id(node) in self.active:
            self.fail(node, path, "an alias refers to itself")
            return None
        self.active.add(id(node))
        try:
            self.loader.flatten_mapping(node)
        except (yaml.YAMLError, RecursionError) as exc:
            self.fail(node, path, _yaml_reason(exc))
            self.active.discard(id(node))
            return None
        result: dict[str, Any] = {}
        first_seen: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                self.fail(key_node, path, "a key must be a plain string, not a list or mapping")
                continue
            try:
                key = self.loader.construct_object(key_node, deep=True)
            except yaml.YAMLError as exc:
                self.fail(key_node, path, _yaml_reason(exc))
                continue
            if not isinstance(key, str):
                self.fail(key_node, (*path, str(key_node.value)), "a key must be a string")
                continue
            line = key_node.start_mark.line + 1
            if key in first_seen:
                self.fail(key_node, (*path, key), f"duplicate key (first defined on line {first_seen[key]})")
                continue
            first_seen[key] = line
            key_path = (*path, key)
            self.tree.key_positions[key_path] = _mark(key_node)
            result[key] = self.build(value_node, key_path, depth + 1)
        self.active.discard(id(node))
        return result


class _TooBig(Exception):
    def __init__(self, node: yaml.Node) -> None:
        super().__init__("too big")
        self.node = node


def _yaml_reason(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nesting is too deep"
    if isinstance(exc, yaml.MarkedYAMLError):
        parts = [p for p in (exc.context, exc.problem) if p]
        return "; ".join(parts) or "invalid YAML"
    return str(exc).splitlines()[0] if str(exc) else "invalid YAML"


def parse(text: str) -> YamlTree:
    """Parse one YAML document. Problems land in `tree.errors`; this never raises for bad input."""
    tree = YamlTree(value=None)
    loader = _Loader(text)
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as exc:
            tree.errors.append(_syntax_error(exc, text))
            return tree
        except RecursionError:
            tree.errors.append((1, 1, (), "invalid YAML: nesting is too deep"))
            return tree
        except yaml.YAMLError as exc:
            line, col = 1, 1
            mark = getattr(exc, "position", None)
            if isinstance(mark, int):
                line, col = _line_col(text, mark)
            tree.errors.append((line, col, (), f"invalid YAML: {_yaml_reason(exc)}"))
            return tree
        if node is None or (
            isinstance(node, yaml.ScalarNode) and node.tag == "tag:yaml.org,2002:null" and node.value == ""
        ):
            tree.errors.append((1, 1, (), "the file is empty: the top level must be a mapping"))
            return tree
        if not isinstance(node, yaml.MappingNode):
            line, col = _mark(node)
            kind = "a list" if isinstance(node, yaml.SequenceNode) else "a single value"
            tree.errors.append((line, col, (), f"the top level must be a mapping of keys, not {kind}"))
            return tree
        builder = _Builder(loader, tree)
        try:
            tree.value = builder.build(node, (), 0)
        except _TooBig as big:
            line, col = _mark(big.node)
            tree.errors.append((line, col, (), f"the document expands to more than {MAX_NODES} nodes (alias bomb?)"))
            tree.value = None
        except RecursionError:
            tree.errors.append((1, 1, (), "nesting is too deep"))
            tree.value = None
        return tree
    finally:
        loader.dispose()


def _syntax_error(exc: yaml.MarkedYAMLError, text: str) -> tuple[int, int, Path, str]:
    """A syntax error where a person will look for it, in words that say what to fix.

    An unterminated quote or bracket is reported where it opened (the parser only notices
    at the end of the file); a tab in indentation is named as such.
    """
    mark = exc.problem_mark or exc.context_mark
    reason = _yaml_reason(exc)
    at_end = exc.problem_mark is not None and exc.problem_mark.index >= len(text.rstrip())
    if ("end of stream" in (exc.problem or "") or at_end) and exc.context_mark is not None:
        mark = exc.context_mark
        what = (exc.context or "").replace("while scanning ", "").replace("while parsing ", "") or "a construct"
        reason = f"{what} that starts here is never closed (a missing quote or bracket?)"
    elif exc.problem_mark is not None and "cannot start any token" in (exc.problem or ""):
        lines = text.splitlines()
        row = lines[exc.problem_mark.line] if exc.problem_mark.line < len(lines) else ""
        if row[: exc.problem_mark.column + 1].strip(" ") in ("\t", "") and "\t" in row[: exc.problem_mark.column + 1]:
            reason = "a tab in the indentation: YAML indents with spaces only"
    line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
    return line, col, (), f"invalid YAML: {reason}"


def _line_col(text: str, offset: int) -> tuple[int, int]:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1
