"""The rollback, rehearsed (docs/rehearsal.md, "The rollback").

Two uses. `plan --rehearse` runs `database.rollback` on the scratch copy after the migrate
commands and compares the schema with the one taken before them: does the rollback restore
it, and what is left over or missing? `down --rehearse` rehearses the rollback itself on a
scratch copy of the real schema, classifies its changes with the same rules, and asks the
real rows, read-only and bounded, what the destructive ones would destroy.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import psycopg
from psycopg import sql

from dbos_migrate.engine.frame import run_commands
from dbos_migrate.errors import CommandFailed, CommandTimeout, MigrateError
from dbos_migrate.events import Notice
from dbos_migrate.model import CommandResult
from dbos_migrate.rehearse import readonly
from dbos_migrate.rehearse.catalog import Column, Snapshot
from dbos_migrate.rehearse.copy import VERSION_TABLES

if TYPE_CHECKING:
    from collections.abc import Callable

    from dbos_migrate.engine.frame import Run
    from dbos_migrate.engine.options import RehearseOptions
    from dbos_migrate.engine.runner import Interrupts
    from dbos_migrate.rehearse.rules import Change
    from dbos_migrate.settings.target import Target

LEFT_OVER = "left over"
MISSING = "missing"
CHANGED = "changed"


@dataclass(frozen=True)
class Difference:
    """One way the schema after the rollback differs from the schema before the migrations."""

    object: str  # schema.table, schema.table.column; schema.table.constraint; schema.name otherwise
    kind: str  # table, column, constraint, index, type, view, function
    issue: str  # left over, missing, changed
    detail: str

    def describe(self) -> str:
        return f"{self.kind} {self.object} {self.issue}" + (f" ({self.detail})" if self.detail else "")


@dataclass
class RollbackCheck:
    """JSON's `rehearsal.rollback`: did `database.rollback` bring the schema back?"""

    ran: bool = False
    restores: bool | None = None
    differences: list[Difference] = field(default_factory=list)
    commands: list[CommandResult] = field(default_factory=list)
    failed_command: str | None = None
    exit_code: int | None = None
    failure: str | None = None  # how the failed command ended, in words
    elapsed_ms: int = 0  # the whole check: commands, snapshot, comparison


def wanted(run: Run[RehearseOptions]) -> bool:
    """The rollback check runs when rollback commands are declared, unless --no-rollback-check."""
    return bool(run.config.database.rollback) and run.options.rollback_check


def rehearse_rollback(
    run: Run[RehearseOptions],
    scratch_target: Target,
    before: Snapshot,
    interrupts: Interrupts,
    take_snapshot: Callable[[], Snapshot],
    env: dict[str, str] | None = None,
) -> RollbackCheck:
    """Run `database.rollback` on the scratch database and compare with `before`; `env` is
    the rehearsal's own (scratch credentials, allow-listed: rehearse/sandbox.py)."""
    start = run.ctx.clock()
    check = _rehearse_rollback(run, scratch_target, before, interrupts, take_snapshot, env)
    check.elapsed_ms = round((run.ctx.clock() - start) * 1000)
    return check


def _rehearse_rollback(
    run: Run[RehearseOptions],
    scratch_target: Target,
    before: Snapshot,
    interrupts: Interrupts,
    take_snapshot: Callable[[], Snapshot],
    env: dict[str, str] | None = None,
) -> RollbackCheck:
    check = RollbackCheck()
    env = env if env is not None else run.command_env(scratch_target)
    commands = run.commands(run.config.database.rollback, "rollback", env)
    run.emit(Notice(f"rehearsal: running the {len(commands)} rollback command(s) on the scratch database"))
    try:
        run_commands(run, commands, interrupts, env=env, on_result=check.commands.append, label="rehearsal rollback ")
    except (CommandFailed, CommandTimeout):
        failed = check.commands[-1]
        check.ran, check.restores = True, False
        check.failed_command, check.exit_code, check.failure = (
            failed.command,
            failed.exit_code,
            failed.describe_end(),
        )
        run.emit(
            Notice(
                f"rehearsal: rollback command {failed.index} failed with {check.failure} on the "
                f"scratch database: {failed.command}",
                "warning",
            )
        )
        return check
    check.ran = True
    check.differences = compare(before, take_snapshot())
    check.restores = not check.differences
    return check


# ---------------------------------------------------------------------------- the comparison


def compare(before: Snapshot, after: Snapshot) -> list[Difference]:
    """Every object whose name, or whose definition under its name, differs: by name, not OID
    (the rollback re-creates what it restores). The migration tools' version tables are left
    out: their rows are what a rollback rewrites, and a first deploy starts without them."""
    out: list[Difference] = []
    old_tables = {t.qualname: t for t in before.tables.values() if t.name not in VERSION_TABLES}
    new_tables = {t.qualname: t for t in after.tables.values() if t.name not in VERSION_TABLES}
    for name in sorted(old_tables.keys() - new_tables.keys()):
        out.append(Difference(name, "table", MISSING, "dropped by the rollback or never re-created"))
    for name in sorted(new_tables.keys() - old_tables.keys()):
        out.append(Difference(name, "table", LEFT_OVER, "created by the migrations, not dropped by the rollback"))
    for name in sorted(old_tables.keys() & new_tables.keys()):
        old, new = old_tables[name].columns, new_tables[name].columns
        for col in sorted(old.keys() - new.keys()):
            out.append(Difference(f"{name}.{col}", "column", MISSING, f"{old[col].type}"))
        for col in sorted(new.keys() - old.keys()):
            out.append(Difference(f"{name}.{col}", "column", LEFT_OVER, f"{new[col].type}"))
        for col in sorted(old.keys() & new.keys()):
            parts = _column_changes(old[col], new[col])
            if parts:
                out.append(Difference(f"{name}.{col}", "column", CHANGED, "; ".join(parts)))
    kept = old_tables.keys() & new_tables.keys()
    out += _by_name("constraint", _constraints(before, kept), _constraints(after, kept))
    out += _by_name("index", _indexes(before, kept), _indexes(after, kept))
    out += _by_name(
        "type",
        {e.qualname: repr(e.labels) for e in before.enums.values()},
        {e.qualname: repr(e.labels) for e in after.enums.values()},
    )
    out += _by_name(
        "view",
        {v.qualname: v.definition for v in before.views.values()},
        {v.qualname: v.definition for v in after.views.values()},
    )
    out += _by_name(
        "function",
        {f.key: f"{f.result} {f.body}" for f in before.functions.values()},
        {f.key: f"{f.result} {f.body}" for f in after.functions.values()},
    )
    return out


def _column_changes(was: Column, now: Column) -> list[str]:
    pairs = (
        ("type", was.type, now.type),
        ("not null", was.notnull, now.notnull),
        ("default", was.default, now.default),
        ("identity", was.identity, now.identity),
        ("generated", was.generated, now.generated),
    )
    return [f"type {b} -> {a}" if what == "type" else f"{what} {b!r} -> {a!r}" for what, b, a in pairs if b != a]


# Constraints and indexes count only on tables present on both sides: a whole table left
# over or missing is already one difference.


def _constraints(snap: Snapshot, kept: set[str]) -> dict[str, str]:
    tables = {oid: t.qualname for oid, t in snap.tables.items() if t.qualname in kept}
    return {f"{tables[c.table_oid]}.{c.name}": c.definition for c in snap.constraints.values() if c.table_oid in tables}


def _indexes(snap: Snapshot, kept: set[str]) -> dict[str, str]:
    tables = {oid for oid, t in snap.tables.items() if t.qualname in kept}
    return {f"{i.schema}.{i.name}": i.definition for i in snap.indexes.values() if i.table_oid in tables}


def _by_name(kind: str, old: dict[str, str], new: dict[str, str]) -> list[Difference]:
    out = [Difference(n, kind, MISSING, "") for n in sorted(old.keys() - new.keys())]
    out += [Difference(n, kind, LEFT_OVER, "") for n in sorted(new.keys() - old.keys())]
    out += [
        Difference(n, kind, CHANGED, "definition differs") for n in sorted(old.keys() & new.keys()) if old[n] != new[n]
    ]
    return out


# ---------------------------------------------------------------------------- what `down` destroys


@dataclass(frozen=True)
class Loss:
    """What one destructive change of the rollback would destroy in the real app database."""

    object: str  # schema.table or schema.table.column
    kind: str  # table or column
    schema: str
    table: str
    column: str | None
    rows: int | None = None  # rows in the table; for a column, its non-NULL values
    unknown: str | None = None  # why it could not be counted

    def describe(self) -> str:
        if self.rows is None:
            return f"drops {self.object}: rows unknown ({self.unknown})"
        if self.kind == "table":
            return f"drops {self.object}: {self.rows} row{'s' if self.rows != 1 else ''}"
        return f"drops {self.object}: {self.rows} non-NULL value{'s' if self.rows != 1 else ''}"


def plan_losses(before: Snapshot, changes: list[Change]) -> list[Loss]:
    """The dropped tables (BRK001) and columns (BRK002), named as in the real database."""
    tables = {t.qualname: t for t in before.tables.values()}
    out: list[Loss] = []
    for change in changes:
        table = tables.get(change.table or "")
        if table is None:
            continue
        if change.rule == "BRK001":
            out.append(Loss(change.object, "table", table.schema, table.name, None))
        elif change.rule == "BRK002":
            column = change.object[len(table.qualname) + 1 :]
            if column in table.columns:
                out.append(Loss(change.object, "column", table.schema, table.name, column))
    return sorted(out, key=lambda loss: (loss.schema, loss.table, loss.column or ""))


def count_losses(run: Run[RehearseOptions], losses: list[Loss]) -> list[Loss]:
    """Count what each loss holds in the real app database, each in a bounded READ ONLY transaction."""
    from dbos_migrate.engine import database as db

    if not losses:
        return []
    timeout = run.options.data_check_timeout
    try:
        conn = db.connect(
            run.target.app, run.scrub, app_name=db.application_name("rehearse"), where="reading the app database"
        )
    except MigrateError as exc:
        return [_unknown(loss, run.scrub.text(exc.message)) for loss in losses]
    out: list[Loss] = []
    with db.closing(conn):
        conn.autocommit = True
        for loss in losses:
            rel = sql.Identifier(loss.schema, loss.table)
            counted = (
                sql.SQL("count(*)") if loss.column is None else sql.SQL("count({})").format(sql.Identifier(loss.column))
            )
            try:
                with readonly.bounded(conn, timeout) as c:
                    row = c.execute(sql.SQL("SELECT {} FROM {}").format(counted, rel)).fetchone()
                out.append(_counted(loss, int(row[0]) if row else 0))
            except psycopg.Error as exc:
                out.append(_unknown(loss, readonly.reason(exc, run.scrub, timeout)))
    return out


def _counted(loss: Loss, rows: int) -> Loss:
    return Loss(loss.object, loss.kind, loss.schema, loss.table, loss.column, rows=rows)


def _unknown(loss: Loss, why: str) -> Loss:
    return Loss(loss.object, loss.kind, loss.schema, loss.table, loss.column, unknown=why)
