"""Workflow checks: which workflows of the app are not finished, read from its DBOS system
database (read-only, bounded), and which of them a breaking change may concern.

Works with every system-schema generation DBOS writes (docs/rehearsal.md, "Workflow
checks"): the tables and columns that exist are read, and the generation is named from
the catalog (dbos_migrations, alembic_version, knex_migrations, the tables present).
Unfinished means PENDING, ENQUEUED or DELAYED in every generation; the old terminal
states (RETRIES_EXCEEDED, MAX_RECOVERY_ATTEMPTS_EXCEEDED) are finished.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import psycopg
from psycopg import sql

from dbos_migrate.engine.scrub import Scrubber
from dbos_migrate.rehearse import readonly
from dbos_migrate.rehearse.rules import Change

UNFINISHED = ("PENDING", "ENQUEUED", "DELAYED")
#: The variable DBOS reads its application version from: the version being deployed.
APPVERSION_ENV = "DBOS__APPVERSION"
NAME_LIMIT = 200
STEP_LIMIT = 500
_TABLES = (
    "workflow_status",
    "operation_outputs",
    "dbos_migrations",
    "application_versions",
    "workflow_inputs",
    "workflow_queue",
    "workflow_input",
    "workflow_output",
)


@dataclass
class VersionCount:
    """Unfinished workflows of one application version."""

    version: str
    count: int
    statuses: dict[str, int] = field(default_factory=dict)
    oldest_age_s: float | None = None
    names: list[tuple[str, int]] = field(default_factory=list)


@dataclass
class WorkflowReport:
    """JSON's `rehearsal.workflows`. `status`: found (unfinished workflows exist), none, unknown."""

    status: str
    reason: str | None = None
    database: str | None = None
    schema: str = "dbos"
    generation: str | None = None
    schema_version: int | None = None
    this_version: str | None = None
    versions: list[VersionCount] = field(default_factory=list)
    steps: dict[tuple[str, str], list[str]] = field(default_factory=dict)  # (version, workflow) -> steps
    missing_columns: list[str] = field(default_factory=list)

    @property
    def unfinished(self) -> int:
        return sum(v.count for v in self.versions)

    def others(self) -> list[VersionCount]:
        """Unfinished workflows of versions other than the one being deployed (all of them
        when that one is not known)."""
        return [v for v in self.versions if self.this_version is None or v.version != self.this_version]


def unknown(reason: str, database: str | None, schema: str, environ: Mapping[str, str]) -> WorkflowReport:
    return WorkflowReport("unknown", reason, database, schema, this_version=environ.get(APPVERSION_ENV) or None)


# ---------------------------------------------------------------------------- reading


class Unreadable(Exception):
    """A table or value of the system database that is not what DBOS writes: a finding."""


def inspect(conn: psycopg.Connection[Any], report: WorkflowReport, timeout_s: float, scrub: Scrubber) -> None:
    """Fill `report` from the connected system database; errors and malformed tables or values
    become `unknown`, with the reason (docs/security.md, "A hostile system database")."""
    try:
        _inspect(conn, report, timeout_s, scrub)
    except Unreadable as exc:
        report.status, report.reason = "unknown", scrub.text(str(exc))
    except (ValueError, TypeError, ArithmeticError) as exc:  # a value no DBOS release writes
        report.status = "unknown"
        report.reason = f"the system database holds a malformed value ({type(exc).__name__})"


def _safe(conn: psycopg.Connection[Any], schema: str, table: str, columns: list[str], timeout_s: float) -> None:
    """Raise Unreadable when reading `columns` of `table` could run code others wrote."""
    from dbos_migrate.engine.ownership import unsafe_to_read

    with readonly.bounded(conn, timeout_s):
        why = unsafe_to_read(conn, schema, table, columns)
    if why is not None:
        raise Unreadable(f"the system database's {why}")


def _inspect(conn: psycopg.Connection[Any], report: WorkflowReport, timeout_s: float, scrub: Scrubber) -> None:
    try:
        tables, columns = _catalog(conn, report.schema, timeout_s)
        report.schema_version, why = _version(conn, report.schema, tables, timeout_s)
        report.generation = generation(tables, report.schema_version)
        if why is not None:
            report.generation += f" ({why})"
        if "workflow_status" not in tables:
            report.status = "unknown"
            report.reason = (
                f"no {report.schema}.workflow_status table in the system database "
                "(the app has not launched against it yet, or it uses another schema)"
            )
            return
        status_cols = columns.get("workflow_status", set())
        report.missing_columns = [
            c for c in ("status", "name", "application_version", "created_at") if c not in status_cols
        ]
        if "status" not in status_cols:
            report.status, report.reason = "unknown", "workflow_status has no status column"
            return
        wanted = ["status", "name", "application_version", "created_at", "workflow_uuid"]
        _safe(conn, report.schema, "workflow_status", wanted, timeout_s)
        _counts(conn, report, status_cols, timeout_s, scrub)
        if "function_name" in columns.get("operation_outputs", set()) and report.versions:
            _safe(conn, report.schema, "operation_outputs", ["function_name", "workflow_uuid"], timeout_s)
            _steps(conn, report, status_cols, timeout_s, scrub)
    except psycopg.Error as exc:
        report.status = "unknown"
        report.reason = "reading the system database failed: " + readonly.reason(exc, scrub, timeout_s)
        return
    report.status = "found" if report.versions else "none"


def _catalog(conn: psycopg.Connection[Any], schema: str, timeout_s: float) -> tuple[set[str], dict[str, set[str]]]:
    """The DBOS tables present (and public.alembic_version/knex_migrations), and the columns of
    workflow_status and operation_outputs, from pg_catalog: no privilege is needed for them."""
    with readonly.bounded(conn, timeout_s):
        rows = conn.execute(
            """SELECT c.relname::text, n.nspname::text,
                      ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                             WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
                 FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind IN ('r', 'p') AND ((n.nspname = %s AND c.relname = ANY(%s))
                   OR (n.nspname = 'public' AND c.relname IN ('alembic_version', 'knex_migrations')))""",
            (schema, list(_TABLES)),
        ).fetchall()
    tables = {name if nsp == schema else f"public.{name}" for name, nsp, _ in rows}
    columns = {name: set(cols) for name, nsp, cols in rows if nsp == schema}
    return tables, columns


def _version(
    conn: psycopg.Connection[Any], schema: str, tables: set[str], timeout_s: float
) -> tuple[int | None, str | None]:
    """The newest dbos_migrations version, or None and why it is unknown (never a crash: the
    value is whatever the system database holds)."""
    if "dbos_migrations" not in tables:
        return None, None
    try:
        _safe(conn, schema, "dbos_migrations", ["version"], timeout_s)
        with readonly.bounded(conn, timeout_s):
            row = conn.execute(
                sql.SQL("SELECT pg_catalog.max({})::text FROM {}").format(
                    sql.Identifier("version"), sql.Identifier(schema, "dbos_migrations")
                )
            ).fetchone()
    except Unreadable as exc:
        return None, str(exc)
    except psycopg.errors.InsufficientPrivilege:
        return None, None
    except psycopg.Error as exc:
        return None, f"dbos_migrations.version could not be read: {type(exc).__name__}"
    value = row[0] if row else None
    if value is None:
        return None, None
    parsed = parse_version(value)
    if parsed is None:
        return None, f"dbos_migrations.version holds {shown_value(value)}, not a migration number"
    return parsed, None


def parse_version(value: object) -> int | None:
    """A migration number as DBOS writes it (a non-negative integer), else None."""
    text = str(value)
    return int(text) if re.fullmatch(r"[0-9]{1,18}", text) else None


def shown_value(value: object, limit: int = 40) -> str:
    """A value read from a database, for a reason: escaped (no control character reaches a
    terminal) and cut to `limit` characters."""
    text = str(value)
    cut = ascii(text[:limit])
    return cut + (f"... ({len(text)} characters)" if len(text) > limit else "")


def generation(tables: set[str], version: int | None) -> str:
    """Which DBOS wrote this system schema, from the signals of docs/rehearsal.md."""
    if "dbos_migrations" in tables:
        if version is None:
            return "DBOS system schema with dbos_migrations (version not readable)"
        if version >= 100:
            which = "Python 3.x, TypeScript 5.x" if "workflow_input" in tables else "Python 2.x, TypeScript 4.x"
            return f"DBOS shared system schema, migration {version} ({which} or Go)"
        if "public.alembic_version" in tables:
            return f"DBOS Python 1.x, upgraded from 0.x (dbos_migrations {version})"
        if "workflow_queue" in tables or "workflow_inputs" in tables:
            return f"DBOS TypeScript 3.x (dbos_migrations {version})"
        return f"DBOS Python 1.x (dbos_migrations {version})"
    if "public.alembic_version" in tables:
        return "DBOS Python 0.x (alembic_version)"
    if "public.knex_migrations" in tables:
        return "DBOS TypeScript 1.x/2.x (knex_migrations)"
    return "unknown generation (no version table)"


def _col(cols: set[str], name: str, fallback: str) -> sql.Composable:
    return sql.Identifier(name) if name in cols else sql.SQL(fallback)


def _counts(
    conn: psycopg.Connection[Any], report: WorkflowReport, cols: set[str], timeout_s: float, scrub: Scrubber
) -> None:
    table = sql.Identifier(report.schema, "workflow_status")
    version = _col(cols, "application_version", "NULL::text")
    name = _col(cols, "name", "NULL::text")
    age = (
        sql.SQL("(extract(epoch FROM clock_timestamp()) * 1000)::bigint - min({})").format(sql.Identifier("created_at"))
        if "created_at" in cols
        else sql.SQL("NULL::bigint")
    )
    with readonly.bounded(conn, timeout_s):
        totals = conn.execute(
            sql.SQL(
                "SELECT coalesce({v}::text, ''), status::text, count(*), {age} FROM {t} "
                "WHERE status = ANY(%s) GROUP BY 1, 2 ORDER BY 1, 2"
            ).format(v=version, age=age, t=table),
            (list(UNFINISHED),),
        ).fetchall()
        names = conn.execute(
            sql.SQL(
                "SELECT coalesce({v}::text, ''), coalesce({n}::text, ''), count(*) FROM {t} "
                "WHERE status = ANY(%s) GROUP BY 1, 2 ORDER BY 3 DESC, 2 LIMIT {lim}"
            ).format(v=version, n=name, t=table, lim=sql.Literal(NAME_LIMIT)),
            (list(UNFINISHED),),
        ).fetchall()
    by_version: dict[str, VersionCount] = {}
    for ver, status, count, age_ms in totals:
        entry = by_version.setdefault(scrub.text(ver), VersionCount(scrub.text(ver), 0))
        entry.count += int(count)
        entry.statuses[status] = int(count)
        if age_ms is not None and abs(age_ms) < 10**15:  # created_at is epoch milliseconds
            age_s = round(int(age_ms) / 1000, 1)
            entry.oldest_age_s = age_s if entry.oldest_age_s is None else max(entry.oldest_age_s, age_s)
    for ver, wf_name, count in names:
        known = by_version.get(scrub.text(ver))
        if known is not None:
            known.names.append((scrub.text(wf_name), int(count)))
    report.versions = sorted(by_version.values(), key=lambda v: (-v.count, v.version))


def _steps(
    conn: psycopg.Connection[Any], report: WorkflowReport, cols: set[str], timeout_s: float, scrub: Scrubber
) -> None:
    """The step names recorded so far by the unfinished workflows (operation_outputs)."""

    def qualified(column: str) -> sql.Composable:
        return sql.SQL("w.{}").format(sql.Identifier(column)) if column in cols else sql.SQL("NULL::text")

    with readonly.bounded(conn, timeout_s):
        rows = conn.execute(
            sql.SQL(
                "SELECT DISTINCT coalesce({v}::text, ''), coalesce({n}::text, ''), o.function_name::text "
                "FROM {o} o JOIN {w} w ON w.workflow_uuid = o.workflow_uuid "
                "WHERE w.status = ANY(%s) AND coalesce(o.function_name, '') <> '' LIMIT {lim}"
            ).format(
                v=qualified("application_version"),
                n=qualified("name"),
                o=sql.Identifier(report.schema, "operation_outputs"),
                w=sql.Identifier(report.schema, "workflow_status"),
                lim=sql.Literal(STEP_LIMIT),
            ),
            (list(UNFINISHED),),
        ).fetchall()
    for ver, wf_name, step in rows:
        report.steps.setdefault((scrub.text(ver), scrub.text(wf_name)), []).append(scrub.text(step))


# ---------------------------------------------------------------------------- ties to changes


@dataclass(frozen=True)
class Tie:
    """Unfinished workflows whose name or recorded steps mention a changed object."""

    version: str
    workflow: str
    count: int
    via: str  # "step update_orders" or "workflow checkout_orders"
    word: str  # the word both share


_STOP = frozenset(
    [
        "dbos",
        "get",
        "set",
        "add",
        "update",
        "insert",
        "delete",
        "remove",
        "create",
        "drop",
        "select",
        "read",
        "write",
        "load",
        "save",
        "step",
        "workflow",
        "run",
        "process",
        "handle",
        "send",
        "recv",
        "the",
        "and",
        "for",
        "new",
        "old",
        "with",
        "from",
        "into",
        "public",
        "all",
        "main",
        "func",
        "function",
        "task",
        "job",
        "data",
        "table",
        "index",
        "key",
        "pkey",
        "fkey",
        "idx",
        "check",
        "value",
        "count",
        "list",
        "fetch",
        "sync",
        "async",
        "make",
        "do",
    ]
)


def words(name: str) -> set[str]:
    """The words of an identifier (snake_case, camelCase, dotted), lower case, plurals folded."""
    spaced = re.sub(r"([a-z0-9])([A-Z])", r"\1 \2", name)
    out = set()
    for word in re.split(r"[^A-Za-z0-9]+", spaced.lower()):
        if word.endswith("ies") and len(word) > 4:
            word = word[:-3] + "y"
        elif word.endswith(("ses", "xes")) and len(word) > 4:
            word = word[:-2]
        elif word.endswith("s") and not word.endswith("ss") and len(word) > 3:
            word = word[:-1]
        if len(word) >= 3 and word not in _STOP and not word.isdigit():
            out.add(word)
    return out


def object_words(change: Change) -> set[str]:
    """The words of what a change touches: its table and column, view, type or function name."""
    names: list[str] = []
    obj = change.object.split("(", 1)[0]
    if change.table is not None:
        names.append(change.table.split(".", 1)[-1])
        if obj.startswith(change.table + "."):
            names.append(obj[len(change.table) + 1 :])
    else:
        names.append(obj.split(".", 1)[-1])
    return set().union(*(words(n) for n in names)) if names else set()


def ties(change: Change, report: WorkflowReport) -> list[Tie]:
    """Unfinished workflows of other versions whose name or steps share a word with the change."""
    wanted = object_words(change)
    if not wanted:
        return []
    found: list[Tie] = []
    for ver in report.others():
        for wf_name, count in ver.names:
            shared = sorted(wanted & words(wf_name))
            if shared:
                found.append(Tie(ver.version, wf_name, count, f"workflow {wf_name}", shared[0]))
                continue
            for step in report.steps.get((ver.version, wf_name), []):
                shared = sorted(wanted & words(step))
                if shared:
                    found.append(Tie(ver.version, wf_name, count, f"step {step}", shared[0]))
                    break
    return found
