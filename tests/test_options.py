"""The options records (engine/options.py) hold only what their verbs read, and each command
declares only the options of its verb's record (docs/architecture.md, "Where a change goes").

An AST walk, not a run: a field counts as read when a function (or class) whose annotations
name its record, or a record built on it, reads `options.<field>`, `opts.<field>` or
`<x>.options.<field>`. A field nobody reads that way fails the first test; a command option
that is not a field of its verb's record fails the second."""

from __future__ import annotations

import ast
import dataclasses
import inspect
from pathlib import Path

import typer

from dbos_migrate.cli import app
from dbos_migrate.engine import options as records

PACKAGE = Path(records.__file__).resolve().parent.parent
RECORDS = {
    name: cls
    for name, cls in vars(records).items()
    if isinstance(cls, type) and dataclasses.is_dataclass(cls) and cls.__module__ == records.__name__
}


def _own_fields(cls: type) -> list[str]:
    """The fields `cls` declares itself (not those of its bases)."""
    return list(inspect.get_annotations(cls))


def _named(node: ast.AST) -> set[str]:
    """Every name an annotation mentions (`Run[UpOptions]`, `verbs.UpOptions`, `UpOptions | None`)."""
    out: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Name):
            out.add(sub.id)
        elif isinstance(sub, ast.Attribute):
            out.add(sub.attr)
        elif isinstance(sub, ast.Constant) and isinstance(sub.value, str):
            out.update(part.strip("[]|, ") for part in sub.value.replace("[", " ").split())
    return out


def _signature_names(node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> set[str]:
    """Every name the parameters' annotations mention; of every method, for a class."""
    functions = [node]
    if isinstance(node, ast.ClassDef):
        functions = [n for n in node.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]
    out: set[str] = set()
    for fn in functions:
        for arg in [*fn.args.args, *fn.args.kwonlyargs, *fn.args.posonlyargs]:
            if arg.annotation is not None:
                out |= _named(arg.annotation)
    return out


def _option_reads(node: ast.AST) -> set[str]:
    """The fields read as options.X, opts.X or <anything>.options.X under `node`."""
    out: set[str] = set()
    for sub in ast.walk(node):
        if isinstance(sub, ast.Attribute) and isinstance(sub.ctx, ast.Load):
            owner = sub.value
            if (isinstance(owner, ast.Name) and owner.id in ("options", "opts")) or (
                isinstance(owner, ast.Attribute) and owner.attr == "options"
            ):
                out.add(sub.attr)
    return out


def _reads_by_scope() -> list[tuple[set[str], set[str]]]:
    """(names in the signature, fields read) for every function and class below cli/."""
    scopes: list[tuple[set[str], set[str]]] = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "cli" in path.relative_to(PACKAGE).parts:
            continue
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                scopes.append((_signature_names(node), _option_reads(node)))
    return scopes


def unread_fields() -> dict[str, list[str]]:
    """Per record, the fields it declares that no function typed with it (or a record built on it) reads."""
    scopes = _reads_by_scope()
    unread: dict[str, list[str]] = {}
    for name, cls in RECORDS.items():
        family = {n for n, other in RECORDS.items() if issubclass(other, cls)}
        read: set[str] = set()
        for names, fields in scopes:
            if names & family:
                read |= fields
        missing = [f for f in _own_fields(cls) if f not in read]
        if missing:
            unread[name] = missing
    return unread


def test_every_field_of_every_options_record_is_read_by_its_verbs() -> None:
    assert len(RECORDS) >= 10, sorted(RECORDS)
    assert unread_fields() == {}


# The command line's names that are not fields: how the record is built, not what it holds.
CLI_ONLY = {"output", "quiet", "verbose", "env_file", "typer_ctx"}
CHOOSES_THE_VERB = {"fail_on_breaking", "rehearse"}  # --fail-on-breaking: gated_up; --rehearse: the rehearsal
RENAMED = {
    "kill_after": "grace",
    "no_data_checks": "data_checks",
    "no_rollback_check": "rollback_check",
    "run": "run_id",
}
COMMANDS = {
    "up": records.UpOptions,
    "migrate": records.UpOptions,
    "down": records.DownOptions,
    "rollback": records.DownOptions,
    "plan": records.PlanOptions,
    "status": records.StatusOptions,
    "wait": records.WaitOptions,
    "history": records.HistoryOptions,
    "url": records.UrlOptions,
    "drop": records.DropOptions,
}


def test_each_command_declares_only_options_of_its_verbs_record() -> None:
    group = typer.main.get_command(app)
    commands = group.commands  # type: ignore[attr-defined]
    extra: dict[str, list[str]] = {}
    for name, record in COMMANDS.items():
        fields = {f.name for f in dataclasses.fields(record)}
        params = [p.name for p in commands[name].params if p.name is not None]
        unknown = [p for p in params if p not in CLI_ONLY | CHOOSES_THE_VERB and RENAMED.get(p, p) not in fields]
        if unknown:
            extra[name] = unknown
    assert extra == {}
    assert "app_role" not in {p.name for p in commands["status"].params}
