"""Data checks: ask the real app database, read-only and bounded, whether a change will fail
on its rows or lock a large table for long (docs/rehearsal.md, "Data checks").

The plan comes from dataplan.py. Each check here is one query in a READ ONLY transaction of
its own with `statement_timeout` (readonly.py); a table larger than the sample size is read
through `TABLESAMPLE SYSTEM`, and the finding says how many rows were examined. A check
that cannot finish is `unknown` with the reason, never a pass. No row value is ever shown:
findings carry counts only.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import psycopg
from psycopg import sql

from dbos_migrate.engine.scrub import Scrubber
from dbos_migrate.rehearse import readonly
from dbos_migrate.rehearse.dataplan import Check, Rel, RowCheck, SizeCheck
from dbos_migrate.rehearse.rules import BREAKING, LOCK_HEAVY, SAFE, UNKNOWN, Ruled
from dbos_migrate.rehearse.units import human_bytes, human_count, human_seconds, parse_size

#: Environment variables that tune the checks (docs/rehearsal.md).
SAMPLE_ENV = "DBOS_MIGRATE_DATA_CHECK_SAMPLE"
LARGE_ENV = "DBOS_MIGRATE_LARGE_TABLE"
DEFAULT_SAMPLE = "64MB"
DEFAULT_LARGE = "128MB"
DEFAULT_TIMEOUT = 5.0

#: Rough throughput for the duration estimate of a locked rewrite, scan or index build, in
#: bytes per second: below what bench/rehearse_checks.py --calibrate measured with the table
#: in cache (docs/rehearsal.md, "Data checks").
RATES = {"rewrite": 60 * 1024**2, "scan": 400 * 1024**2, "index build": 80 * 1024**2}


@dataclass(frozen=True)
class Settings:
    timeout_s: float = DEFAULT_TIMEOUT
    sample_bytes: int = 64 * 1024**2
    large_bytes: int = 128 * 1024**2
    role: str | None = None  # the read-only role the row checks run as
    no_role: str | None = None  # why there is none: every row check is then unknown

    @classmethod
    def from_env(cls, environ: Mapping[str, str], timeout_s: float) -> Settings:
        sample = parse_size(environ.get(SAMPLE_ENV) or DEFAULT_SAMPLE, f"${SAMPLE_ENV}")
        large = parse_size(environ.get(LARGE_ENV) or DEFAULT_LARGE, f"${LARGE_ENV}")
        return cls(timeout_s, max(sample, 8192), large)


@dataclass
class Finding(Ruled):
    """What the app database's rows say about one change (`change` indexes Rehearsal.changes)."""

    change: int
    rule: str
    check: str  # nulls, rows, duplicates, check, foreign-key, fits-type, enum-values, exclusion, size
    object: str
    table: str
    status: str  # violations, none, none-in-sample, unknown, large, small
    detail: str
    examined_rows: int | None = None
    estimated_rows: int | None = None
    violating_rows: int | None = None
    sampled: bool = False
    sample_percent: float | None = None
    table_bytes: int | None = None
    estimated_seconds: float | None = None
    elapsed_ms: int | None = None
    reason: str | None = None


@dataclass
class DataChecks:
    """JSON's `rehearsal.data_checks`: how the checks ran (their findings sit with the changes)."""

    enabled: bool
    skipped: str | None = None
    database: str | None = None
    settings: Settings = field(default_factory=Settings)
    checks: int = 0
    elapsed_ms: int = 0


def summary(findings: list[Finding]) -> dict[str, int]:
    return {sev: sum(1 for f in findings if f.severity == sev) for sev in (BREAKING, LOCK_HEAVY, UNKNOWN, SAFE)}


@dataclass(frozen=True)
class Facts:
    """A table's size as the catalogs tell it, without reading a row."""

    exists: bool
    heap_bytes: int = 0
    total_bytes: int = 0
    rows: int | None = None  # None: never vacuumed or analyzed
    can_select: bool = False


# ---------------------------------------------------------------------------- running

#: The role the row checks run as (PostgreSQL 14+): it may read every table and do nothing else.
READER = "pg_read_all_data"


def reader_role(conn: psycopg.Connection[Any]) -> tuple[str | None, str | None]:
    """(the role the row checks run as, or None and why): `pg_read_all_data`, when the
    connected role may SET ROLE to it (superusers may; others need it granted)."""
    if conn.info.server_version < 140000:
        return None, (
            f"the server has no {READER} role (PostgreSQL 14+) to run the check as, and it never "
            "runs as the deploy role"
        )
    privilege = "SET" if conn.info.server_version >= 160000 else "MEMBER"
    row = conn.execute(
        "SELECT pg_catalog.pg_has_role(%s::pg_catalog.name, %s::pg_catalog.text)", (READER, privilege)
    ).fetchone()
    if row and row[0]:
        return READER, None
    return None, (
        f"the role may not SET ROLE {READER}, the read-only role the checks run as (never as the "
        f"deploy role): GRANT {READER} TO it, or pass --no-data-checks"
    )


def run_checks(
    conn: psycopg.Connection[Any], checks: list[Check], settings: Settings, scrub: Scrubber
) -> list[Finding]:
    """Every check, in plan order; a failure of one makes it `unknown` and the rest go on."""
    rels = list(dict.fromkeys(c.rel for c in checks))
    try:
        if settings.role is None and settings.no_role is None:
            role, why = reader_role(conn)
            settings = replace(settings, role=role, no_role=why)
        facts = table_facts(conn, rels, settings.timeout_s, settings.role)
    except psycopg.Error as exc:
        why = "reading the table sizes failed: " + readonly.reason(exc, scrub, settings.timeout_s)
        return [unknown_finding(c, why, None) for c in checks]
    findings: list[Finding] = []
    lost: str | None = None
    for check in checks:
        fact = facts[check.rel]
        if not fact.exists:
            findings.append(unknown_finding(check, f"table {check.rel.qualname} was not found in the app database", 0))
        elif isinstance(check, SizeCheck):
            findings.append(_size(check, fact, settings))
        elif lost is not None:
            findings.append(unknown_finding(check, lost, None))
        else:
            try:
                findings.append(_row_check(conn, check, fact, settings, scrub))
            except psycopg.Error as exc:  # the connection broke: the remaining checks cannot run
                lost = readonly.reason(exc, scrub, settings.timeout_s)
                findings.append(unknown_finding(check, lost, None))
    return findings


def table_facts(
    conn: psycopg.Connection[Any], rels: list[Rel], timeout_s: float, role: str | None = None
) -> dict[Rel, Facts]:
    """Sizes (partitions added up), row estimates and SELECT privilege of `rels`, one query."""
    if not rels:
        return {}
    with readonly.bounded(conn, timeout_s, role):
        rows = conn.execute(
            """SELECT q.i::int, c.oid IS NOT NULL,
                      coalesce((SELECT sum(pg_catalog.pg_relation_size(p.relid))
                                  FROM (SELECT c.oid AS relid UNION SELECT relid FROM pg_catalog.pg_partition_tree(c.oid)) p), 0)::bigint,
                      coalesce((SELECT sum(pg_catalog.pg_total_relation_size(p.relid))
                                  FROM (SELECT c.oid AS relid UNION SELECT relid FROM pg_catalog.pg_partition_tree(c.oid)) p), 0)::bigint,
                      (SELECT CASE WHEN bool_or(pc.reltuples < 0) THEN NULL
                                   ELSE coalesce(sum(pc.reltuples), 0) END
                         FROM (SELECT c.oid AS relid UNION SELECT relid FROM pg_catalog.pg_partition_tree(c.oid)) p
                         JOIN pg_catalog.pg_class pc ON pc.oid = p.relid AND pc.relkind = 'r')::bigint,
                      coalesce(pg_catalog.has_table_privilege(c.oid, 'SELECT'), false)
                 FROM unnest(%s::text[], %s::text[]) WITH ORDINALITY AS q(s, n, i)
                 LEFT JOIN pg_catalog.pg_namespace ns ON ns.nspname = q.s
                 LEFT JOIN pg_catalog.pg_class c
                        ON c.relnamespace = ns.oid AND c.relname = q.n AND c.relkind IN ('r', 'p')
                ORDER BY 1""",
            ([r.schema for r in rels], [r.name for r in rels]),
        ).fetchall()
    return {
        rels[i - 1]: Facts(bool(ok), int(heap), int(total), None if est is None else int(est), bool(sel))
        for i, ok, heap, total, est, sel in rows
    }


def _size(check: SizeCheck, fact: Facts, settings: Settings) -> Finding:
    size = fact.total_bytes if check.operation == "rewrite" else fact.heap_bytes
    seconds = round(size / RATES[check.operation], 1)
    large = fact.total_bytes >= settings.large_bytes
    rows = f"~{human_count(fact.rows)} rows" if fact.rows is not None else "row count not analyzed"
    detail = (
        f"{check.rel.qualname} is {human_bytes(fact.total_bytes)} ({rows}): the {check.operation} holds "
        f"{check.lock} for {human_seconds(seconds)} (rough, from its size)"
    )
    if large:
        detail += f"; at or above the large-table threshold ({human_bytes(settings.large_bytes)})"
    return Finding(
        check.change,
        check.rule if large else "DATA013",
        "size",
        check.object,
        check.rel.qualname,
        "large" if large else "small",
        detail,
        estimated_rows=fact.rows,
        table_bytes=fact.total_bytes,
        estimated_seconds=seconds,
    )


def unknown_finding(check: Check, why: str, elapsed_ms: int | None) -> Finding:
    what = f"for {check.what}" if isinstance(check, RowCheck) else "the table's size"
    kind = check.kind if isinstance(check, RowCheck) else "size"
    return Finding(
        check.change,
        "DATA010",
        kind,
        check.object,
        check.rel.qualname,
        "unknown",
        f"could not check {what}: {why}",
        elapsed_ms=elapsed_ms,
        reason=why,
    )


def _row_check(
    conn: psycopg.Connection[Any], check: RowCheck, fact: Facts, settings: Settings, scrub: Scrubber
) -> Finding:
    if check.unknown is not None:
        return unknown_finding(check, check.unknown, None)
    if settings.role is None:
        return unknown_finding(check, settings.no_role or "there is no read-only role to run it as", None)
    if not fact.can_select:
        return unknown_finding(check, f"permission denied: the role may not SELECT from {check.rel.qualname}", 0)
    percent = None
    if check.kind != "rows" and fact.heap_bytes > settings.sample_bytes:
        percent = max(round(100.0 * settings.sample_bytes / fact.heap_bytes, 4), 0.0001)
    start = time.monotonic()
    try:
        with readonly.bounded(conn, settings.timeout_s, settings.role):
            row = conn.execute(row_query(check, percent)).fetchone()
    except psycopg.Error as exc:
        elapsed = int((time.monotonic() - start) * 1000)
        if conn.closed or conn.broken:
            raise
        return unknown_finding(check, readonly.reason(exc, scrub, settings.timeout_s), elapsed)
    elapsed = int((time.monotonic() - start) * 1000)
    examined, violating = (int(row[0] or 0), int(row[1] or 0)) if row else (0, 0)
    return _row_finding(check, fact, examined, violating, percent, elapsed)


def row_query(check: RowCheck, percent: float | None) -> sql.Composed:
    """(rows examined, violating rows) for one check, over a sample when `percent` is set."""
    source = sql.SQL("{} AS t").format(check.rel.ident)
    if percent is not None:
        source = sql.SQL("{} TABLESAMPLE SYSTEM ({}) REPEATABLE (0)").format(source, sql.Literal(percent))
    where = sql.SQL(" WHERE {}").format(check.where) if check.where is not None else sql.SQL("")
    if check.kind == "rows":
        return sql.SQL("SELECT count(*), count(*) FROM (SELECT 1 FROM {} LIMIT 1) s").format(source)
    if check.kind == "duplicates":
        keys = sql.SQL(", ").join(check.keys)
        null = sql.SQL(" OR ").join(sql.SQL("{} IS NULL").format(k) for k in check.keys)
        anynull = null if check.nulls_distinct or check.null_key_violates else sql.SQL("false")
        nulls = sql.SQL(" + coalesce(sum(n) FILTER (WHERE anynull), 0)") if check.null_key_violates else sql.SQL("")
        return sql.SQL(
            "SELECT coalesce(sum(n), 0), coalesce(sum(n) FILTER (WHERE n > 1 AND NOT anynull), 0){nulls} "
            "FROM (SELECT count(*) AS n, {anynull} AS anynull FROM {source}{where} GROUP BY {keys}) g"
        ).format(nulls=nulls, anynull=anynull, source=source, where=where, keys=keys)
    assert check.violation is not None
    return sql.SQL("SELECT count(*), count(*) FILTER (WHERE {}) FROM {}{}").format(check.violation, source, where)


def _row_finding(
    check: RowCheck, fact: Facts, examined: int, violating: int, percent: float | None, elapsed: int
) -> Finding:
    sampled = percent is not None
    estimated = fact.rows if fact.rows is not None else (examined if not sampled else None)
    if sampled and estimated is None and percent:
        estimated = int(examined * 100 / percent)
    scope = (
        f"{examined:,} sampled rows (~{percent:.2g}% of the table, ~{human_count(estimated or 0)} rows)"
        if sampled
        else f"{examined:,} rows"
    )
    if check.kind == "rows":
        status = "violations" if violating else "none"
        detail = (
            f"{check.rel.qualname} has rows (~{human_count(max(fact.rows or 1, 1))}): {check.consequence}"
            if violating
            else f"{check.rel.qualname} is empty: the column can be added"
        )
    elif violating:
        status = "violations"
        detail = f"{violating:,} of {scope} hold {check.what}: {check.consequence}"
    elif sampled:
        status = "none-in-sample"
        detail = f"none of {scope} holds {check.what}; the rest of the table was not examined"
    else:
        status = "none"
        detail = f"none of the {examined:,} rows holds {check.what} (every row checked)"
    rule = {"violations": check.rule, "none": "DATA012", "none-in-sample": "DATA011"}[status]
    return Finding(
        check.change,
        rule,
        check.kind,
        check.object,
        check.rel.qualname,
        status,
        detail,
        examined_rows=examined,
        estimated_rows=estimated,
        violating_rows=violating,
        sampled=sampled,
        sample_percent=percent,
        table_bytes=fact.total_bytes,
        elapsed_ms=elapsed,
    )
