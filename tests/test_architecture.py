"""The floors of docs/architecture.md, checked on the source: every import, function-local and
type-only ones included, points to a lower floor (or stays in its own room), and no module
imports itself back through others."""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "dbos_migrate"

#: docs/architecture.md, "The floors": a room may import only rooms on lower floors. The
#: vocabulary modules at the package root share floor 0 (they may import one another; the
#: module check below keeps them acyclic). Rooms on one floor never import each other.
FLOORS: dict[str, int] = {
    "dbos_migrate": 0,  # the package itself (__version__)
    "context": 0,
    "errors": 0,
    "model": 0,
    "events": 0,
    "settings": 1,
    "localpg": 2,
    "engine": 3,
    "rehearse": 4,
    "verbs": 5,
    "report": 5,
    "cli": 6,
    "__main__": 7,
}


def _modules() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        found[".".join(parts)] = path
    return found


def _imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """Every module of ours that `name` imports, anywhere in its body."""
    out: set[str] = set()
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            subs = [f"{base}.{alias.name}" for alias in node.names]
            # `from pkg import submodule` imports the submodule; the package counts only when
            # a name that is not a submodule is taken from it.
            targets = [s for s in subs if s in modules] + ([base] if any(s not in modules for s in subs) else [])
        for target in targets:
            while target and target not in modules:
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else parts[0]


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: _imports(name, path, modules) for name, path in modules.items()}


def test_every_room_has_a_floor() -> None:
    rooms = {_room(m) for m in _modules()}
    assert rooms <= set(FLOORS), f"rooms without a floor in docs/architecture.md: {rooms - set(FLOORS)}"


def test_imports_point_down() -> None:
    wrong = []
    for module, targets in _graph().items():
        here = _room(module)
        for target in targets:
            there = _room(target)
            if there != here and not FLOORS[there] < FLOORS[here] and not (FLOORS[here] == FLOORS[there] == 0):
                wrong.append(f"{module} -> {target} ({here} is floor {FLOORS[here]}, {there} is {FLOORS[there]})")
    assert not wrong, "imports against the floors:\n" + "\n".join(sorted(wrong))


def test_no_import_cycle() -> None:
    graph = _graph()
    cycles: list[list[str]] = []
    state: dict[str, int] = {}  # 1 on the stack, 2 done

    def visit(node: str, stack: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph[node]):
            if state.get(nxt) == 1:
                cycles.append([*stack[stack.index(nxt) :], nxt])
            elif nxt not in state:
                visit(nxt, [*stack, nxt])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_check_sees_function_local_and_type_only_imports(tmp_path: Path) -> None:
    """The walker must count imports inside functions and under TYPE_CHECKING."""
    source = tmp_path / "m.py"
    source.write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from dbos_migrate.rehearse.result import Rehearsal\n"
        "def f():\n    from dbos_migrate.engine import database as db\n"
    )
    found = _imports("dbos_migrate.events", source, _modules())
    assert found == {"dbos_migrate.rehearse.result", "dbos_migrate.engine.database"}


#: docs/architecture.md, "Sizes": the most lines a module, and a function, may have.
MAX_MODULE_LINES = 800
MAX_FUNCTION_LINES = 80


def _oversized(path: Path) -> list[str]:
    """The module at `path` if it is over MAX_MODULE_LINES lines, and each of its functions
    (methods and nested functions too) over MAX_FUNCTION_LINES, counted from the `def` line to
    the body's last line."""
    text = path.read_text("utf-8")
    found = []
    if len(text.splitlines()) > MAX_MODULE_LINES:
        found.append(f"{path.name}: {len(text.splitlines())} lines")
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            length = (node.end_lineno or node.lineno) - node.lineno + 1
            if length > MAX_FUNCTION_LINES:
                found.append(f"{path.name}:{node.lineno} {node.name}: {length} lines")
    return found


def test_no_module_or_function_too_long() -> None:
    wrong = [f"{path.parent.name}/{o}" for path in sorted(PACKAGE.rglob("*.py")) for o in _oversized(path)]
    assert not wrong, (
        f"over {MAX_MODULE_LINES} lines a module or {MAX_FUNCTION_LINES} a function "
        "(split it; docs/architecture.md, Sizes):\n" + "\n".join(wrong)
    )


def test_the_size_check_sees_long_functions_and_modules(tmp_path: Path) -> None:
    """At the limits passes; one line over fails, for a method too."""
    body = [f"    x{i} = {i}" for i in range(MAX_FUNCTION_LINES - 1)]
    at_limit = ["def f():", *body]
    at_limit += ["# pad"] * (MAX_MODULE_LINES - len(at_limit))
    (tmp_path / "ok.py").write_text("\n".join(at_limit) + "\n")
    assert _oversized(tmp_path / "ok.py") == []
    over = ["class C:", *(f"    {line}" for line in ["def g(self):", *body, "    return 0"])]
    over += ["# pad"] * (MAX_MODULE_LINES + 1 - len(over))
    (tmp_path / "long.py").write_text("\n".join(over) + "\n")
    assert _oversized(tmp_path / "long.py") == [
        f"long.py: {MAX_MODULE_LINES + 1} lines",
        f"long.py:2 g: {MAX_FUNCTION_LINES + 1} lines",
    ]


def _json_methods(path: Path) -> list[str]:
    """Methods of the classes in `path` that turn their object into JSON: `as_dict`, `to_dict`,
    `to_json` and any other method named `..._dict` or `..._json`."""
    found = []
    for node in ast.walk(ast.parse(path.read_text("utf-8"))):
        if isinstance(node, ast.ClassDef):
            found += [
                f"{node.name}.{item.name}"
                for item in node.body
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name.endswith(("_dict", "_json"))
            ]
    return found


def test_only_report_renders_json() -> None:
    """The JSON contract lives in report/ (docs/architecture.md): the records below it are plain
    values, and no class outside report/ says how it looks as JSON."""
    wrong = [
        f"{module}: {method}"
        for module, path in sorted(_modules().items())
        if _room(module) != "report"
        for method in _json_methods(path)
    ]
    assert not wrong, "JSON rendering outside report/:\n" + "\n".join(wrong)


def test_the_json_check_sees_methods_in_nested_classes(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text(
        "class A:\n    def as_dict(self): ...\n    class B:\n        def to_json(self): ...\n"
        "    def describe(self): ...\ndef as_dict(x): ...\n"
    )
    assert sorted(_json_methods(source)) == ["A.as_dict", "B.to_json"]


#: docs/architecture.md, "Style": the formatter decides every line; no comment switches it off.
_FORMATTER_OFF = re.compile(r"#\s*fmt:\s*(skip|off)\b")


def _formatter_off(source: str) -> list[int]:
    """The lines whose comment switches ruff format (or black) off for a line or a block."""
    tokens = tokenize.generate_tokens(io.StringIO(source).readline)
    return [tok.start[0] for tok in tokens if tok.type == tokenize.COMMENT and _FORMATTER_OFF.search(tok.string)]


def test_the_formatter_is_never_switched_off() -> None:
    root = PACKAGE.parent
    paths = [
        p
        for folder in ("dbos_migrate", "tests", "bench")
        for p in sorted((root / folder).rglob("*.py"))
        if not any(part.startswith(".") for part in p.relative_to(root).parts)  # bench/.venvs, .mutation
    ]
    wrong = [f"{p.relative_to(root)}:{line}" for p in paths for line in _formatter_off(p.read_text("utf-8"))]
    assert not wrong, (
        "set the line length instead of switching the formatter off (docs/architecture.md, Style):\n" + "\n".join(wrong)
    )


def test_the_formatter_check_sees_comments_only() -> None:
    source = 'x = [1,  2]  # fmt: skip\ny = "# fmt: skip"\n# fmt: off\nz = 3  # fmt:skip\n'
    assert _formatter_off(source) == [1, 3, 4]
