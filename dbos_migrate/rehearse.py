"""Breaking-change rehearsal: `plan --rehearse` and `up --fail-on-breaking` (SPEC §10).

A deploy runs its migrations while workflows of the previous app version are still
running, so a schema change that the new code is fine with can still break the old
code. To find such changes before they hit the real database, a rehearsal:

1. creates a scratch database (`dbos_rehearse_<app>_<utc timestamp>_<6 hex>`) on the
   same instance, or on `--rehearse-url`'s;
2. copies the app database's schema into it, no data, except the rows of the migration
   tool's own version table (alembic_version & co.): without them the tool would replay
   every migration from zero;
3. runs the `database.migrate` commands there, with the SPEC §7 environment pointing at
   the scratch database;
4. snapshots the catalogs before and after the commands, diffs them, and classifies each
   change with a stable rule id, a severity and a hint (see RULES and docs/rehearsal.md);
5. drops the scratch database whatever happens. A run killed before it could do so leaves
   one behind; the next rehearsal removes it.

The real app database is only read (pg_dump or catalog queries, under the migration lock
so a concurrent `up` is not copied half-way).
"""

from __future__ import annotations

import contextlib
import glob
import os
import re
import secrets
import shutil
import signal
import subprocess
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import Any

import psycopg
from psycopg import sql

from dbos_migrate import database as db
from dbos_migrate import migrate
from dbos_migrate.errors import (
    BreakingChange,
    DatabaseError,
    MigrateError,
    UsageError,
)
from dbos_migrate.events import (
    Event,
    Finished,
    Notice,
    Resolved,
    RunReport,
    Sink,
)
from dbos_migrate.runner import CommandResult, Interrupts
from dbos_migrate.scrub import Scrubber
from dbos_migrate.target import PgUrl, Target, command_env, parse_url

Conn = psycopg.Connection[Any]

SCRATCH_PREFIX = "dbos_rehearse_"
#: `dbos_rehearse_<app>_<yyyymmddhhmmss>_<6 hex>`: only names of this exact shape are ever
#: considered leftovers, so a database someone else named `dbos_rehearse_x` is never dropped.
_SCRATCH_NAME = re.compile(r"\Adbos_rehearse_[a-z0-9_]*_(\d{14})_[0-9a-f]{6}\Z")
#: First key of the advisory lock a live rehearsal holds on its scratch database's name
#: ("DBRH"); the cleanup of leftovers never touches a scratch database whose lock is held.
REHEARSE_LOCK_CLASS = 0x44425248
#: A leftover that still has sessions is only dropped once it is this old (by its name).
LEFTOVER_AGE = timedelta(hours=1)
#: Our own bookkeeping schema: never copied, never compared.
OWN_SCHEMA = "dbos_migrate"
#: Version tables of common migration tools. Their rows are copied into the scratch
#: database so the tool resumes from the real database's version instead of from zero.
VERSION_TABLES = (
    "alembic_version",  # alembic
    "knex_migrations",  # knex
    "knex_migrations_lock",
    "_prisma_migrations",  # prisma
    "schema_migrations",  # rails, golang-migrate, dbmate, sqlx-cli (old)
    "schema_version",  # flyway < 5
    "flyway_schema_history",  # flyway
    "__drizzle_migrations",  # drizzle (schema "drizzle")
    "typeorm_migrations",  # typeorm (custom name)
    "migrations",  # typeorm, mikro-orm (old), node-pg-migrate (old)
    "pgmigrations",  # node-pg-migrate
    "mikro_orm_migrations",  # mikro-orm
    "kysely_migration",  # kysely
    "kysely_migration_lock",
    "SequelizeMeta",  # sequelize
    "django_migrations",  # django
    "goose_db_version",  # goose
    "_sqlx_migrations",  # sqlx
    "__diesel_schema_migrations",  # diesel
    "databasechangelog",  # liquibase
    "databasechangeloglock",
    "__EFMigrationsHistory",  # entity framework
    "atlas_schema_revisions",  # atlas
)
#: A "version table" bigger than this is somebody's real data, not bookkeeping: not copied.
VERSION_TABLE_MAX_BYTES = 64 * 1024 * 1024
#: Where pg_dump binaries usually live, besides PATH (newest distributions first).
PG_DUMP_GLOBS = (
    "/usr/lib/postgresql/*/bin/pg_dump",  # Debian, Ubuntu
    "/usr/pgsql-*/bin/pg_dump",  # RHEL (PGDG)
    "/usr/local/pgsql/bin/pg_dump",  # source builds
    "/opt/homebrew/opt/postgresql@*/bin/pg_dump",  # Homebrew (Apple silicon)
    "/usr/local/opt/postgresql@*/bin/pg_dump",  # Homebrew (Intel)
    "/Applications/Postgres.app/Contents/Versions/*/bin/pg_dump",
)
#: `auto` (pg_dump when a recent enough one exists, else the catalogs), `pg_dump` (fail
#: without one) or `catalog` (always the catalog copy). For tests and odd installations.
COPY_MODE_ENV = "DBOS_MIGRATE_REHEARSE_COPY"
PG_DUMP_ENV = "DBOS_MIGRATE_PG_DUMP"

BREAKING = "breaking"
LOCK_HEAVY = "lock-heavy"
SAFE = "safe"
_SEVERITY_RANK = {BREAKING: 0, LOCK_HEAVY: 1, SAFE: 2}


# ---------------------------------------------------------------------------- rules


@dataclass(frozen=True)
class Rule:
    """A stable rule id (it never changes meaning), its short name, severity and hint."""

    id: str
    name: str
    severity: str
    what: str
    hint: str


RULES: dict[str, Rule] = {
    r.id: r
    for r in (
        Rule("BRK001", "dropped-table", BREAKING, "a table was dropped",
             "expand/contract: ship code that no longer uses the table first, and drop it in a later "
             "deploy, once no workflow of the previous version can still run"),
        Rule("BRK002", "dropped-column", BREAKING, "a column was dropped",
             "ship code that no longer reads or writes the column first (make it nullable or give it a "
             "DEFAULT so old INSERTs still work), and drop it in a later deploy"),
        Rule("BRK003", "renamed-table", BREAKING,
             "a table was renamed or moved (or dropped and re-created with the same columns)",
             "do not rename in place: create the new table (or a view with the new name), dual-write and "
             "backfill, switch the code, and drop the old name in a later deploy"),
        Rule("BRK004", "renamed-column", BREAKING,
             "a column was renamed (or dropped and one of the same type added)",
             "add the new column, backfill and dual-write (trigger or code), switch reads, and drop the "
             "old column in a later deploy"),
        Rule("BRK005", "column-type-changed", BREAKING, "a column's type changed (not a pure widening)",
             "add a column of the new type, backfill in batches, dual-write, switch, and drop the old one "
             "later; an in-place ALTER TYPE also rewrites the table under an ACCESS EXCLUSIVE lock"),
        Rule("BRK006", "set-not-null", BREAKING, "an existing column became NOT NULL",
             "old code may still write NULL: backfill, give the column a DEFAULT, add CHECK (col IS NOT "
             "NULL) NOT VALID and VALIDATE it, and SET NOT NULL once every running version sets the column"),
        Rule("BRK007", "not-null-column-without-default", BREAKING,
             "a NOT NULL column without a default was added to an existing table",
             "old code's INSERTs do not set the new column and will fail: add it nullable or with a "
             "DEFAULT, backfill, and add NOT NULL in a later deploy"),
        Rule("BRK008", "enum-value-dropped", BREAKING,
             "an enum lost values (recreated narrower, value renamed, or type dropped/renamed)",
             "rows and old code may still use the value: stop writing it, move rows to another value, and "
             "remove it in a later deploy; adding values is safe"),
        Rule("BRK009", "dropped-view", BREAKING, "a view was dropped or renamed, or lost columns",
             "keep the view (or a compatible one with the same name and columns) until the previous "
             "version is gone; drop it in a later deploy"),
        Rule("BRK010", "dropped-function", BREAKING,
             "a function or procedure was dropped, renamed, or changed its signature or return type",
             "old code calls it by this signature: add the new function (or overload) alongside, switch "
             "the code, and drop the old one in a later deploy"),
        Rule("BRK011", "dropped-constraint", BREAKING,
             "a primary key, unique, exclusion or foreign key constraint, or a unique index, was dropped",
             "code relies on it (INSERT ... ON CONFLICT needs the unique key; ON DELETE CASCADE; "
             "integrity): drop it only once no running version depends on it"),
        Rule("BRK012", "dropped-default", BREAKING, "a NOT NULL column lost its default",
             "old code that omits the column on INSERT will fail: keep the default until every running "
             "version sets the column"),
        Rule("LCK001", "index-without-concurrently", LOCK_HEAVY,
             "an index was built on a pre-existing table without CONCURRENTLY",
             "CREATE INDEX blocks writes to the table for the whole build: use CREATE INDEX CONCURRENTLY "
             "outside a transaction (alembic: postgresql_concurrently=True inside "
             "op.get_context().autocommit_block())"),
        Rule("LCK002", "table-rewrite", LOCK_HEAVY,
             "a pre-existing table was rewritten or re-created (new relfilenode)",
             "the rewrite holds an ACCESS EXCLUSIVE lock for as long as it copies the table (ALTER COLUMN "
             "TYPE, a volatile DEFAULT, SET LOGGED, VACUUM FULL, CLUSTER, TRUNCATE, drop and re-create): "
             "use a new column and a batched backfill, or a maintenance window"),
        Rule("LCK003", "constraint-validated-under-lock", LOCK_HEAVY,
             "a validated constraint was added to (or re-created on) a pre-existing table",
             "ADD CONSTRAINT scans the table while blocking writes: add CHECK/FOREIGN KEY constraints "
             "NOT VALID and VALIDATE CONSTRAINT separately; for UNIQUE/PRIMARY KEY, CREATE UNIQUE INDEX "
             "CONCURRENTLY then ADD CONSTRAINT ... USING INDEX. Old code must already satisfy it"),
        Rule("SAFE001", "added-table", SAFE, "a table was added", "safe: old code does not know about it"),
        Rule("SAFE002", "added-column", SAFE, "a nullable column, or one with a default, was added",
             "safe: old INSERTs that omit it still work"),
        Rule("SAFE003", "added-index", SAFE, "an index was added on a new table, or built CONCURRENTLY",
             "safe"),
        Rule("SAFE004", "widened-type", SAFE,
             "a column type was widened (longer varchar, varchar to text, more numeric precision)",
             "safe: every old value still fits; the change needs no rewrite"),
        Rule("SAFE005", "added-enum-value", SAFE, "an enum gained values",
             "safe for old code; new code must not write the value until the deploy is complete"),
        Rule("SAFE006", "added-object", SAFE, "a view, function or type was added", "safe"),
        Rule("SAFE007", "changed-definition", SAFE,
             "a view's query or a function's body changed (same name, columns and signature), or a "
             "constraint's definition changed on a table that was itself re-created",
             "safe for callers; check the new behaviour is what old code expects"),
        Rule("SAFE008", "relaxed", SAFE,
             "a restriction was lifted: DROP NOT NULL, a dropped CHECK or non-unique index, a dropped "
             "trigger function",
             "safe for old code; a dropped index can make its queries slower"),
        Rule("SAFE009", "added-constraint-not-valid", SAFE,
             "a constraint was added NOT VALID, or from an index that already existed",
             "safe: VALIDATE CONSTRAINT later takes only a weak lock"),
        Rule("SAFE010", "default-changed", SAFE, "a column's default was added or changed", "safe"),
        Rule("SAFE011", "renamed-index-or-constraint", SAFE, "an index or constraint was renamed",
             "safe, unless code names it (INSERT ... ON CONFLICT ON CONSTRAINT name)"),
    )
}  # fmt: skip


@dataclass(frozen=True)
class Change:
    """One classified difference between the catalogs before and after the commands."""

    rule: str
    object: str
    detail: str
    group: str  # what the text output groups by: "table public.orders", "type public.mood", ...
    table: str | None = None

    @property
    def spec(self) -> Rule:
        return RULES[self.rule]

    @property
    def severity(self) -> str:
        return self.spec.severity

    def as_dict(self) -> dict[str, Any]:
        return {
            "rule": self.rule,
            "name": self.spec.name,
            "severity": self.severity,
            "object": self.object,
            "table": self.table,
            "detail": self.detail,
            "hint": self.spec.hint,
        }


# ---------------------------------------------------------------------------- catalog snapshots


def _user_schemas(alias: str) -> str:
    """SQL: the namespace `alias` holds user objects (no pg_*, information_schema, ours)."""
    return (
        f"{alias}.nspname NOT IN ('information_schema', '{OWN_SCHEMA}') AND left({alias}.nspname, 3) <> 'pg_'"
    )


def _not_extension_member(catalog: str, oid_expr: str) -> str:
    """SQL: the object is not part of an extension (extension objects are not the app's schema)."""
    return (
        f"NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend xd WHERE xd.classid = '{catalog}'::regclass "
        f"AND xd.objid = {oid_expr} AND xd.deptype = 'e')"
    )


@dataclass(frozen=True)
class Column:
    name: str
    attnum: int
    type: str
    notnull: bool
    default: str | None
    identity: str
    generated: str

    @property
    def has_default(self) -> bool:
        return self.default is not None or bool(self.identity) or bool(self.generated)


@dataclass(frozen=True)
class Table:
    oid: int
    schema: str
    name: str
    kind: str
    relfilenode: int
    columns: dict[str, Column]

    @property
    def qualname(self) -> str:
        return f"{self.schema}.{self.name}"

    @property
    def shape(self) -> frozenset[tuple[str, str]]:
        return frozenset((c.name, c.type) for c in self.columns.values())


@dataclass(frozen=True)
class Constraint:
    oid: int
    table_oid: int
    name: str
    type: str  # p, u, x, f, c
    definition: str
    validated: bool
    index_oid: int
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Index:
    oid: int
    schema: str
    name: str
    table_oid: int
    definition: str
    unique: bool
    valid: bool
    concurrently: bool  # see _concurrently_sql
    constraint_backed: bool
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Enum:
    oid: int
    qualname: str
    labels: tuple[str, ...]


@dataclass(frozen=True)
class View:
    oid: int
    qualname: str
    kind: str  # v or m
    definition: str
    columns: tuple[str, ...]


@dataclass(frozen=True)
class Function:
    oid: int
    schema: str
    name: str
    args: str
    result: str
    kind: str  # f, p, a, w
    body: str  # a hash

    @property
    def key(self) -> str:
        return f"{self.schema}.{self.name}({self.args})"


@dataclass
class Snapshot:
    """What the diff compares: objects keyed by OID where a rename keeps the OID."""

    tables: dict[int, Table] = field(default_factory=dict)
    constraints: dict[int, Constraint] = field(default_factory=dict)
    indexes: dict[int, Index] = field(default_factory=dict)
    enums: dict[int, Enum] = field(default_factory=dict)
    views: dict[int, View] = field(default_factory=dict)
    functions: dict[int, Function] = field(default_factory=dict)

    def shape(self) -> dict[str, Any]:
        """The snapshot without OIDs and physical details: equal for two faithful copies."""
        tables = {oid: t.qualname for oid, t in self.tables.items()}
        return {
            "tables": {
                t.qualname: sorted((c.name, c.type, c.notnull, c.default, c.identity, c.generated)
                                   for c in t.columns.values())
                for t in self.tables.values()
            },
            "constraints": sorted((tables[c.table_oid], c.name, c.type, c.definition, c.validated)
                                  for c in self.constraints.values()),
            "indexes": sorted((tables[i.table_oid], i.name, i.definition) for i in self.indexes.values()),
            "enums": sorted((e.qualname, e.labels) for e in self.enums.values()),
            "views": sorted((v.qualname, v.kind, v.definition, v.columns) for v in self.views.values()),
            "functions": sorted((f.key, f.result, f.kind, f.body) for f in self.functions.values()),
        }  # fmt: skip


# A CREATE INDEX CONCURRENTLY commits the pg_class row of the index first and flips
# pg_index.indisready/indisvalid in later transactions, so its pg_index row is younger
# than its pg_class row; a plain CREATE INDEX writes both in one transaction. (ALTER INDEX
# RENAME makes the pg_class row younger, so it never fakes a concurrent build; CLUSTER ON
# or REPLICA IDENTITY USING INDEX on a plain index in the same migration would.)
_CONCURRENTLY_SQL = "age(i.xmin) < age(ic.xmin)"


def snapshot(conn: Conn) -> Snapshot:
    """Read the user objects of the connected database (search_path is set to '' so that
    every type and expression is rendered schema-qualified, the same way each time)."""
    conn.execute("SET search_path = ''")
    snap = Snapshot()
    rows = conn.execute(
        f"""SELECT c.oid, n.nspname, c.relname, c.relkind::text, c.relfilenode
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND {_user_schemas("n")}
               AND {_not_extension_member("pg_class", "c.oid")}"""
    ).fetchall()
    columns = _columns(conn, [r[0] for r in rows])
    for oid, schema, name, kind, node in rows:
        snap.tables[oid] = Table(oid, schema, name, kind, node, {c.name: c for c in columns.get(oid, [])})
    table_oids = list(snap.tables)
    for row in conn.execute(
        """SELECT con.oid, con.conrelid, con.conname, con.contype::text, pg_catalog.pg_get_constraintdef(con.oid),
                  con.convalidated, con.conindid,
                  ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                         WHERE a.attrelid = con.conrelid AND a.attnum = ANY(con.conkey) ORDER BY a.attnum)
             FROM pg_catalog.pg_constraint con
            WHERE con.conrelid = ANY(%s::oid[]) AND con.contype IN ('p', 'u', 'x', 'f', 'c')""",
        (table_oids,),
    ).fetchall():
        oid, rel, name, kind, definition, validated, index_oid, cols = row
        snap.constraints[oid] = Constraint(
            oid, rel, name, kind, definition, validated, index_oid, tuple(cols)
        )
    for row in conn.execute(
        f"""SELECT i.indexrelid, n.nspname, ic.relname, i.indrelid, pg_catalog.pg_get_indexdef(i.indexrelid),
                   i.indisunique, i.indisvalid, {_CONCURRENTLY_SQL},
                   EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con WHERE con.conindid = i.indexrelid
                            AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x')),
                   ARRAY(SELECT a.attname::text FROM pg_catalog.pg_attribute a
                          WHERE a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey::int2[]) ORDER BY a.attnum)
              FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
              JOIN pg_catalog.pg_namespace n ON n.oid = ic.relnamespace
             WHERE i.indrelid = ANY(%s::oid[])""",
        (table_oids,),
    ).fetchall():
        oid, schema, name, rel, definition, unique, valid, concurrently, backed, cols = row
        snap.indexes[oid] = Index(
            oid, schema, name, rel, definition, unique, valid, concurrently, backed, tuple(cols)
        )
    for oid, schema, name, labels in conn.execute(
        f"""SELECT t.oid, n.nspname, t.typname,
                   ARRAY(SELECT e.enumlabel::text FROM pg_catalog.pg_enum e
                          WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)
              FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
             WHERE t.typtype = 'e' AND {_user_schemas("n")} AND {_not_extension_member("pg_type", "t.oid")}"""
    ).fetchall():
        snap.enums[oid] = Enum(oid, f"{schema}.{name}", tuple(labels))
    views = conn.execute(
        f"""SELECT c.oid, n.nspname, c.relname, c.relkind::text, pg_catalog.pg_get_viewdef(c.oid)
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('v', 'm') AND {_user_schemas("n")}
               AND {_not_extension_member("pg_class", "c.oid")}"""
    ).fetchall()
    view_columns = _columns(conn, [r[0] for r in views])
    for oid, schema, name, kind, definition in views:
        cols = tuple(c.name for c in view_columns.get(oid, []))
        snap.views[oid] = View(oid, f"{schema}.{name}", kind, definition or "", cols)
    for row in conn.execute(
        f"""SELECT p.oid, n.nspname, p.proname, pg_catalog.pg_get_function_identity_arguments(p.oid),
                   coalesce(pg_catalog.pg_get_function_result(p.oid), ''), p.prokind::text,
                   md5(CASE WHEN p.prokind IN ('f', 'p') THEN pg_catalog.pg_get_functiondef(p.oid)
                            ELSE coalesce(p.prosrc, '') END)
              FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             WHERE {_user_schemas("n")} AND {_not_extension_member("pg_proc", "p.oid")}"""
    ).fetchall():
        snap.functions[row[0]] = Function(*row)
    return snap


def _columns(conn: Conn, oids: list[int]) -> dict[int, list[Column]]:
    out: dict[int, list[Column]] = {}
    if not oids:
        return out
    for relid, num, name, typ, notnull, default, identity, generated in conn.execute(
        """SELECT a.attrelid, a.attnum, a.attname, pg_catalog.format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attidentity::text, a.attgenerated::text
             FROM pg_catalog.pg_attribute a
             LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attrelid, a.attnum""",
        (oids,),
    ).fetchall():
        out.setdefault(relid, []).append(Column(name, num, typ, notnull, default, identity, generated))
    return out


# ---------------------------------------------------------------------------- the diff


_VARCHAR = re.compile(r"character varying\((\d+)\)")
_NUMERIC = re.compile(r"numeric\((\d+),(\d+)\)")
_UNBOUNDED_TEXT = ("text", "character varying")


def widened(old: str, new: str) -> bool:
    """Whether `old` → `new` only widens: every old value fits, and old code reads the same
    kind of value. int → bigint is *not* a widening here: node-postgres returns int8 as a
    string, so old TypeScript code would break."""
    if old.endswith("[]") and new.endswith("[]"):
        return widened(old[:-2], new[:-2])
    if old in _UNBOUNDED_TEXT and new in _UNBOUNDED_TEXT:
        return True
    v_old, v_new = _VARCHAR.fullmatch(old), _VARCHAR.fullmatch(new)
    if v_old and (new in _UNBOUNDED_TEXT or (v_new and int(v_new[1]) >= int(v_old[1]))):
        return True
    n_old, n_new = _NUMERIC.fullmatch(old), _NUMERIC.fullmatch(new)
    if n_old and new == "numeric":
        return True
    return bool(n_old and n_new and n_new[2] == n_old[2] and int(n_new[1]) >= int(n_old[1]))


def diff(before: Snapshot, after: Snapshot) -> list[Change]:
    """Classify every difference; the list is ordered by group, then severity."""
    changes = _Differ(before, after).run()
    order: dict[str, int] = {}
    for change in changes:
        order.setdefault(change.group, len(order))
    return sorted(changes, key=lambda c: (order[c.group], _SEVERITY_RANK[c.severity]))


class _Differ:
    def __init__(self, before: Snapshot, after: Snapshot) -> None:
        self.b = before
        self.a = after
        self.changes: list[Change] = []

    def add(self, rule: str, obj: str, detail: str, group: str, table: str | None = None) -> None:
        self.changes.append(Change(rule, obj, detail, group, table))

    def run(self) -> list[Change]:
        pairs, dropped, added = self._match_tables()
        for old, new, how in pairs:
            self._table(old, new, how)
        for old in dropped:
            cols = ", ".join(old.columns) or "no columns"
            self.add("BRK001", old.qualname, f"table {old.qualname} dropped ({cols})",
                     f"table {old.qualname}", old.qualname)  # fmt: skip
        for new in added:
            group = f"table {new.qualname}"
            self.add("SAFE001", new.qualname, f"table {new.qualname} added ({', '.join(new.columns)})",
                     group, new.qualname)  # fmt: skip
            for index in self._indexes_of(self.a, new.oid):
                if not index.constraint_backed:
                    self.add("SAFE003", f"{index.schema}.{index.name}",
                             f"index {index.name} on new table: {index.definition}", group, new.qualname)  # fmt: skip
        self._enums()
        self._views()
        self._functions()
        return self.changes

    # -- tables

    def _match_tables(self) -> tuple[list[tuple[Table, Table, str]], list[Table], list[Table]]:
        """Pair tables by OID (survives renames), then by name (dropped and re-created), then
        by identical columns (a rename done as drop + create). The rest is dropped or added."""
        pairs: list[tuple[Table, Table, str]] = []
        used: set[int] = set()
        rest: list[Table] = []
        for old in sorted(self.b.tables.values(), key=lambda t: t.qualname):
            new = self.a.tables.get(old.oid)
            if new is not None:
                pairs.append((old, new, "same"))
                used.add(new.oid)
            else:
                rest.append(old)
        by_name = {t.qualname: t for t in self.a.tables.values()}
        dropped: list[Table] = []
        for old in rest:
            new = by_name.get(old.qualname)
            if new is not None and new.oid not in used:
                pairs.append((old, new, "recreated"))
                used.add(new.oid)
            else:
                dropped.append(old)
        added = sorted((t for t in self.a.tables.values() if t.oid not in used), key=lambda t: t.qualname)
        for old in list(dropped):
            twins = [t for t in added if t.shape == old.shape and t.columns]
            if len(twins) == 1:
                pairs.append((old, twins[0], "shape"))
                dropped.remove(old)
                added.remove(twins[0])
        return pairs, dropped, added

    def _table(self, old: Table, new: Table, how: str) -> None:
        name = new.qualname
        group = f"table {name}"
        if how == "shape":
            self.add("BRK003", old.qualname,
                     f"table {old.qualname} dropped and {name} created with the same columns: looks like a "
                     "rename, and its rows are not carried over", group, name)  # fmt: skip
            return
        if old.qualname != name:
            self.add("BRK003", old.qualname, f"table {old.qualname} renamed to {name}", group, name)
        if how == "recreated":
            self.add("LCK002", name,
                     f"table {name} dropped and re-created: its rows are not carried over unless the "
                     "migration copies them", group, name)  # fmt: skip
        elif old.kind == "r" and old.relfilenode != new.relfilenode:
            self.add("LCK002", name, f"table {name} rewritten (new relfilenode)", group, name)
        gone = self._columns(old, new, how, group)
        self._constraints(old, new, how, gone, group)
        self._indexes(old, new, how, gone, group)

    def _columns(self, old: Table, new: Table, how: str, group: str) -> set[str]:
        """Compare columns; returns the names of old columns that are gone (dropped or renamed)
        so the constraints and indexes they took with them are not reported twice."""
        table = new.qualname
        pairs: list[tuple[Column, Column]] = []
        matched: set[str] = set()
        lost: list[Column] = []
        for col in old.columns.values():
            if col.name in new.columns:
                pairs.append((col, new.columns[col.name]))
                matched.add(col.name)
            else:
                lost.append(col)
        gone = {c.name for c in lost}
        if how == "same":  # ALTER TABLE RENAME COLUMN keeps attnum
            by_num = {c.attnum: c for c in new.columns.values()}
            for col in list(lost):
                twin = by_num.get(col.attnum)
                if twin is not None and twin.name not in old.columns and twin.name not in matched:
                    self.add("BRK004", f"{table}.{col.name}", f"column {col.name} renamed to {twin.name}",
                             group, table)  # fmt: skip
                    pairs.append((col, twin))
                    matched.add(twin.name)
                    lost.remove(col)
        fresh = [c for c in new.columns.values() if c.name not in matched]
        for col in list(lost):  # a rename done as DROP COLUMN + ADD COLUMN of the same type
            twins = [c for c in fresh if c.type == col.type]
            if len(twins) == 1 and sum(1 for c in lost if c.type == col.type) == 1:
                self.add("BRK004", f"{table}.{col.name}",
                         f"column {col.name} ({col.type}) dropped and {twins[0].name} added with the same "
                         "type: looks like a rename, and its values are not carried over", group, table)  # fmt: skip
                lost.remove(col)
                fresh.remove(twins[0])
        for col in lost:
            self.add("BRK002", f"{table}.{col.name}", f"column {col.name} ({col.type}) dropped", group, table)
        for col in fresh:
            obj = f"{table}.{col.name}"
            if col.notnull and not col.has_default:
                self.add("BRK007", obj, f"column {col.name} {col.type} NOT NULL added without a default",
                         group, table)  # fmt: skip
            else:
                what = "NOT NULL " if col.notnull else ""
                extra = f" DEFAULT {col.default}" if col.default is not None else ""
                self.add("SAFE002", obj, f"column {col.name} {col.type} {what}added{extra}".replace("  ", " "),
                         group, table)  # fmt: skip
        for was, now in pairs:
            self._column(table, was, now, group)
        return gone

    def _column(self, table: str, was: Column, now: Column, group: str) -> None:
        obj = f"{table}.{now.name}"
        retyped = was.type != now.type
        if retyped:
            rule = "SAFE004" if widened(was.type, now.type) else "BRK005"
            self.add(rule, obj, f"column {now.name} type {was.type} → {now.type}", group, table)
        if now.notnull and not was.notnull:
            self.add("BRK006", obj, f"column {now.name} SET NOT NULL", group, table)
        elif was.notnull and not now.notnull:
            self.add("SAFE008", obj, f"column {now.name} DROP NOT NULL", group, table)
        if was.default is not None and now.default is None and not now.has_default:
            if now.notnull:
                self.add("BRK012", obj, f"column {now.name} (NOT NULL) lost its default {was.default}",
                         group, table)  # fmt: skip
        elif was.default != now.default and not retyped and now.default is not None:
            before = "no default" if was.default is None else was.default
            self.add("SAFE010", obj, f"column {now.name} default {before} → {now.default}", group, table)

    # -- constraints and indexes

    def _constraints(self, old: Table, new: Table, how: str, gone: set[str], group: str) -> None:
        table = new.qualname
        retyped = {c for c in old.columns if c in new.columns and old.columns[c].type != new.columns[c].type}
        olds = [c for c in self.b.constraints.values() if c.table_oid == old.oid]
        news = {c.oid: c for c in self.a.constraints.values() if c.table_oid == new.oid}
        by_name = {c.name: c for c in news.values()}
        kinds = {"p": "primary key", "u": "unique", "x": "exclusion", "f": "foreign key", "c": "check"}
        for con in olds:
            now = news.pop(con.oid, None)
            if now is not None:
                if now.name != con.name:
                    self.add("SAFE011", f"{table}.{now.name}", f"constraint {con.name} renamed to {now.name}",
                             group, table)  # fmt: skip
                by_name.pop(now.name, None)
                continue
            now = by_name.pop(con.name, None)
            kind = kinds[con.type]
            if now is not None:
                news.pop(now.oid, None)
                if now.definition == con.definition or set(con.columns) & retyped:
                    continue  # rebuilt by ALTER COLUMN TYPE: reported as the type change
                # NOT VALID: no scan; on a re-created table: no old rows were locked
                rule = "SAFE009" if not now.validated else "LCK003" if how == "same" else "SAFE007"
                self.add(rule, f"{table}.{con.name}",
                         f"{kind} constraint {con.name} re-created: {con.definition} → {now.definition}",
                         group, table)  # fmt: skip
                continue
            if con.columns and set(con.columns) <= gone:
                continue  # went with its column(s): reported as dropped/renamed columns
            rule = "SAFE008" if con.type == "c" else "BRK011"
            self.add(rule, f"{table}.{con.name}", f"{kind} constraint {con.name} dropped: {con.definition}",
                     group, table)  # fmt: skip
        for now in news.values():
            kind = kinds[now.type]
            obj = f"{table}.{now.name}"
            if how != "same":
                continue  # a new (re-created) table: nothing held a lock on old rows
            if not now.validated:
                self.add("SAFE009", obj, f"{kind} constraint {now.name} added NOT VALID: {now.definition}",
                         group, table)  # fmt: skip
            elif now.type in "pux" and now.index_oid in self.b.indexes:
                self.add("SAFE009", obj,
                         f"{kind} constraint {now.name} added using an existing index: {now.definition}",
                         group, table)  # fmt: skip
            else:
                how_locked = "builds its index" if now.type in "pux" else "scans the table"
                self.add("LCK003", obj,
                         f"{kind} constraint {now.name} added ({how_locked} under lock): {now.definition}",
                         group, table)  # fmt: skip

    @staticmethod
    def _indexes_of(snap: Snapshot, table_oid: int) -> list[Index]:
        return sorted((i for i in snap.indexes.values() if i.table_oid == table_oid), key=lambda i: i.name)

    def _indexes(self, old: Table, new: Table, how: str, gone: set[str], group: str) -> None:
        """Constraint-backed indexes are left to _constraints; the others are compared here."""
        table = new.qualname
        news = {i.oid: i for i in self._indexes_of(self.a, new.oid)}
        by_name = {i.name: i for i in news.values()}
        for idx in self._indexes_of(self.b, old.oid):
            now = news.pop(idx.oid, None) or self.a.indexes.get(idx.oid)
            if now is not None:
                by_name.pop(now.name, None)
                if now.name != idx.name and not (now.constraint_backed or idx.constraint_backed):
                    self.add("SAFE011", f"{now.schema}.{now.name}", f"index {idx.name} renamed to {now.name}",
                             group, table)  # fmt: skip
                continue
            now = by_name.pop(idx.name, None)
            if now is not None:
                news.pop(now.oid, None)
                if now.definition == idx.definition or now.constraint_backed or idx.constraint_backed:
                    continue  # rebuilt (ALTER COLUMN TYPE): reported as the type change
                self._new_index(now, how, group, table, f"index {now.name} re-created: {idx.definition} → ")
                continue
            if idx.constraint_backed or (idx.columns and set(idx.columns) <= gone):
                continue
            rule = "BRK011" if idx.unique else "SAFE008"
            kind = "unique index" if idx.unique else "index"
            self.add(rule, f"{idx.schema}.{idx.name}", f"{kind} {idx.name} dropped: {idx.definition}",
                     group, table)  # fmt: skip
        for now in news.values():
            if not now.constraint_backed and now.oid not in self.b.indexes:
                self._new_index(now, how, group, table, f"index {now.name} added: ")

    def _new_index(self, idx: Index, how: str, group: str, table: str, prefix: str) -> None:
        obj = f"{idx.schema}.{idx.name}"
        if how != "same":
            self.add("SAFE003", obj, prefix + idx.definition, group, table)
        elif idx.concurrently:
            self.add("SAFE003", obj, prefix + idx.definition + " (built CONCURRENTLY)", group, table)
        else:
            self.add("LCK001", obj, prefix + idx.definition, group, table)

    # -- types, views, functions

    def _enums(self) -> None:
        after_by_name = {e.qualname: e for e in self.a.enums.values()}
        before_names = {e.qualname for e in self.b.enums.values()}
        for old in self.b.enums.values():
            group = f"type {old.qualname}"
            new = after_by_name.get(old.qualname)
            if new is None:
                renamed = self.a.enums.get(old.oid)
                what = f"renamed to {renamed.qualname}" if renamed else "dropped"
                self.add("BRK008", old.qualname, f"enum {old.qualname} {what} (values: {', '.join(old.labels)})",
                         group)  # fmt: skip
                continue
            lost = [v for v in old.labels if v not in new.labels]
            gained = [v for v in new.labels if v not in old.labels]
            if lost:
                self.add(
                    "BRK008", old.qualname, f"enum {old.qualname} lost value(s): {', '.join(lost)}", group
                )
            if gained:
                self.add("SAFE005", old.qualname, f"enum {old.qualname} gained value(s): {', '.join(gained)}",
                         group)  # fmt: skip
        for new in self.a.enums.values():
            if new.qualname not in before_names and new.oid not in self.b.enums:
                self.add("SAFE006", new.qualname, f"enum {new.qualname} added ({', '.join(new.labels)})",
                         f"type {new.qualname}")  # fmt: skip

    def _views(self) -> None:
        by_name = {v.qualname: v for v in self.a.views.values()}
        seen: set[int] = set()
        for old in self.b.views.values():
            kind = "materialized view" if old.kind == "m" else "view"
            group = f"view {old.qualname}"
            new = by_name.get(old.qualname)
            if new is None:
                renamed = self.a.views.get(old.oid)
                what = f"renamed to {renamed.qualname}" if renamed else "dropped"
                if renamed:
                    seen.add(renamed.oid)
                self.add("BRK009", old.qualname, f"{kind} {old.qualname} {what}", group)
                continue
            seen.add(new.oid)
            lost = [c for c in old.columns if c not in new.columns]
            if lost:
                self.add("BRK009", old.qualname, f"{kind} {old.qualname} lost column(s): {', '.join(lost)}",
                         group)  # fmt: skip
            elif old.definition != new.definition:
                self.add("SAFE007", old.qualname, f"{kind} {old.qualname} query changed", group)
        for new in self.a.views.values():
            if new.oid not in seen:
                kind = "materialized view" if new.kind == "m" else "view"
                self.add("SAFE006", new.qualname, f"{kind} {new.qualname} added", f"view {new.qualname}")

    def _functions(self) -> None:
        by_key = {f.key: f for f in self.a.functions.values()}
        seen: set[int] = set()
        dropped: list[Function] = []
        for old in self.b.functions.values():
            new = by_key.get(old.key)
            if new is None:
                dropped.append(old)
                continue
            seen.add(new.oid)
            group = f"function {old.key}"
            if new.result != old.result:
                self.add("BRK010", old.key, f"{_fkind(old)} {old.key} return type {old.result} → {new.result}",
                         group)  # fmt: skip
            elif new.body != old.body:
                self.add("SAFE007", old.key, f"{_fkind(old)} {old.key} body changed", group)
        for old in dropped:
            group = f"function {old.key}"
            renamed = self.a.functions.get(old.oid)
            overloads = [f for f in self.a.functions.values()
                         if f.oid not in seen and f.schema == old.schema and f.name == old.name]  # fmt: skip
            if renamed is not None:
                seen.add(renamed.oid)
                detail = f"{_fkind(old)} {old.key} renamed to {renamed.key}"
            elif len(overloads) == 1:
                seen.add(overloads[0].oid)
                detail = f"{_fkind(old)} {old.key} replaced by {overloads[0].key} (signature changed)"
            else:
                detail = f"{_fkind(old)} {old.key} dropped"
            trigger = old.result in ("trigger", "event_trigger")
            self.add("SAFE008" if trigger else "BRK010", old.key, detail, group)
        for new in self.a.functions.values():
            if new.oid not in seen:
                self.add("SAFE006", new.key, f"{_fkind(new)} {new.key} added", f"function {new.key}")


def _fkind(func: Function) -> str:
    return {"p": "procedure", "a": "aggregate", "w": "window function"}.get(func.kind, "function")


# ---------------------------------------------------------------------------- copying the schema


@dataclass(frozen=True)
class PgDump:
    path: str
    major: int
    version: str


_PG_DUMP_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?|\b(\d+)\.(\d+)")


def pg_dump_version(path: str) -> PgDump | None:
    """`pg_dump --version` parsed; None when it does not run."""
    try:
        out = subprocess.run(
            [path, "--version"], capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.SubprocessError):
        return None
    match = _PG_DUMP_VERSION.search(out.stdout)
    if out.returncode != 0 or match is None:
        return None
    major = int(match[1] or match[3])
    minor = match[2] or match[4] or "0"
    return PgDump(path, major, f"{major}.{minor}")


def find_pg_dump(server_major: int, environ: Mapping[str, str]) -> PgDump | None:
    """The pg_dump to copy the schema with: its major version must be >= the server's (an
    older pg_dump refuses newer servers). Among those the closest major wins, since a newer
    pg_dump's output may use syntax the server does not know. $DBOS_MIGRATE_PG_DUMP, when
    set, is the only candidate."""
    explicit = environ.get(PG_DUMP_ENV)
    if explicit:
        candidates = [explicit]
    else:
        candidates = []
        found = shutil.which("pg_dump", path=environ.get("PATH") or os.defpath)
        if found:
            candidates.append(found)
        for pattern in PG_DUMP_GLOBS:
            candidates.extend(sorted(glob.glob(pattern), reverse=True))
    best: PgDump | None = None
    seen: set[str] = set()
    for path in candidates:
        real = os.path.realpath(path)
        if real in seen:
            continue
        seen.add(real)
        found_dump = pg_dump_version(path)
        if found_dump is None or found_dump.major < server_major:
            continue
        if best is None or found_dump.major < best.major:
            best = found_dump
    return best


class CopyFailed(Exception):
    """The pg_dump copy did not work; the catalog copy is tried instead."""


_META_COMMAND = re.compile(r"^\\(?:un)?restrict [A-Za-z0-9]+[ \t]*$", re.M)


def dump_schema(dump: PgDump, url: PgUrl, env: Mapping[str, str], scrub: Scrubber, lock_wait_ms: int) -> str:
    """`pg_dump --schema-only` of the app database, as a script for psycopg.

    The password travels in PGPASSWORD (`env`), never on the command line: the URL passed
    with --dbname keeps every other parameter (sslmode, options, ...) but no secret.
    """
    public = replace(
        url,
        password=None,
        params=tuple((k, v) for k, v in url.params if k not in ("password", "sslpassword")),
    )
    args = [
        dump.path, "--schema-only", "--no-owner", "--no-privileges", "--no-security-labels", "--no-tablespaces",
        f"--exclude-schema={OWN_SCHEMA}", f"--lock-wait-timeout={max(lock_wait_ms, 1)}",
        f"--dbname={public.render(mask=False)}",
    ]  # fmt: skip
    if dump.major >= 10:
        args += ["--no-publications", "--no-subscriptions"]  # a subscription would connect out
    if dump.major >= 11:
        args.append("--no-comments")  # COMMENT ON EXTENSION needs ownership; comments do not matter
    try:
        proc = subprocess.run(args, env=dict(env), capture_output=True, stdin=subprocess.DEVNULL)
    except OSError as exc:
        raise CopyFailed(f"cannot run {dump.path}: {exc}") from None
    if proc.returncode != 0:
        message = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise CopyFailed(scrub.text(" — ".join(message[:3]) or f"exit code {proc.returncode}"))
    # psql meta-commands that pg_dump 17.6/16.10/15.14+ emit; psycopg runs plain SQL only.
    return _META_COMMAND.sub("", proc.stdout.decode("utf-8"))


def restore_script(dst: Conn, script: str) -> None:
    """Run a dump script as one simple query: one implicit transaction, all or nothing."""
    try:
        dst.execute(script.encode("utf-8"))
    except psycopg.Error as exc:
        raise CopyFailed(
            str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        ) from None


def catalog_copy(src: Conn, dst: Conn) -> list[str]:
    """Re-create the app schema from its catalogs, for when no suitable pg_dump exists.

    Covers: schemas, extensions (CREATE EXTENSION IF NOT EXISTS), enums, domains, composite
    types, sequences (and OWNED BY), functions and procedures, tables (columns, types,
    collations, defaults, identity, generated columns, NOT NULL, unlogged, partitioned
    tables and their partitions), constraints (primary key, unique, exclusion, check, foreign
    key, NOT VALID kept), indexes, views, materialized views (WITH NO DATA) and triggers.
    Statements run one at a time and failures are retried until nothing more succeeds
    (dependency order); returns what could not be copied.
    """
    src.execute("SET search_path = ''")  # every name the pg_get_*def functions print is qualified
    dst.execute("SET search_path = ''")
    dst.execute("SET check_function_bodies = off")
    dst.execute("SET standard_conforming_strings = on")
    failed: list[tuple[str, str, str]] = []
    for label, statement in _catalog_statements(src):
        error = _try(dst, statement)
        if error is not None:
            failed.append((label, statement, error))
    progress = True
    while failed and progress:
        progress = False
        still: list[tuple[str, str, str]] = []
        for label, statement, _ in failed:
            error = _try(dst, statement)
            if error is None:
                progress = True
            else:
                still.append((label, statement, error))
        failed = still
    return [f"{label}: {error}" for label, _, error in failed]


def _try(conn: Conn, statement: str) -> str | None:
    try:
        conn.execute(statement.encode("utf-8"))
    except psycopg.Error as exc:
        text = str(exc).strip()
        return text.splitlines()[0] if text else type(exc).__name__
    return None


def _catalog_statements(src: Conn) -> Iterator[tuple[str, str]]:
    """(label, DDL) in dependency order, as far as one pass can tell."""
    user = _user_schemas("n")
    q = "quote_ident(n.nspname) || '.' || quote_ident"
    for (name,) in src.execute(
        f"SELECT quote_ident(n.nspname) FROM pg_catalog.pg_namespace n WHERE {user} "
        f"AND {_not_extension_member('pg_namespace', 'n.oid')} ORDER BY n.oid"
    ).fetchall():
        yield f"schema {name}", f"CREATE SCHEMA IF NOT EXISTS {name}"
    for ext, schema in src.execute(
        "SELECT quote_ident(e.extname), quote_ident(n.nspname) FROM pg_catalog.pg_extension e "
        "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql' ORDER BY e.oid"
    ).fetchall():
        yield f"extension {ext}", f"CREATE EXTENSION IF NOT EXISTS {ext} WITH SCHEMA {schema}"
    for name, labels in src.execute(
        f"""SELECT {q}(t.typname), ARRAY(SELECT quote_literal(e.enumlabel) FROM pg_catalog.pg_enum e
                                          WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)
              FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
             WHERE t.typtype = 'e' AND {user} AND {_not_extension_member("pg_type", "t.oid")} ORDER BY t.oid"""
    ).fetchall():
        yield f"enum {name}", f"CREATE TYPE {name} AS ENUM ({', '.join(labels)})"
    for name, base, notnull, default, checks in src.execute(
        f"""SELECT {q}(t.typname), pg_catalog.format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
                   ARRAY(SELECT 'CONSTRAINT ' || quote_ident(con.conname) || ' ' || pg_catalog.pg_get_constraintdef(con.oid)
                           FROM pg_catalog.pg_constraint con WHERE con.contypid = t.oid AND con.contype = 'c'
                          ORDER BY con.oid)
              FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
             WHERE t.typtype = 'd' AND {user} AND {_not_extension_member("pg_type", "t.oid")} ORDER BY t.oid"""
    ).fetchall():
        text = f"CREATE DOMAIN {name} AS {base}"
        text += f" DEFAULT {default}" if default is not None else ""
        text += " NOT NULL" if notnull else ""
        yield f"domain {name}", " ".join([text, *checks])
    for name, attrs in src.execute(
        f"""SELECT {q}(t.typname),
                   ARRAY(SELECT quote_ident(a.attname) || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod)
                           FROM pg_catalog.pg_attribute a
                          WHERE a.attrelid = t.typrelid AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum)
              FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
              JOIN pg_catalog.pg_class c ON c.oid = t.typrelid AND c.relkind = 'c'
             WHERE t.typtype = 'c' AND {user} AND {_not_extension_member("pg_type", "t.oid")} ORDER BY t.oid"""
    ).fetchall():
        yield f"type {name}", f"CREATE TYPE {name} AS ({', '.join(attrs)})"
    for name, typ, start, inc, lo, hi, cache, cycle in src.execute(
        f"""SELECT {q}(c.relname), pg_catalog.format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
                   s.seqmin, s.seqmax, s.seqcache, s.seqcycle
              FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE {user} AND {_not_extension_member("pg_class", "c.oid")}
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_class'::regclass
                                AND d.objid = c.oid AND d.deptype = 'i')
             ORDER BY c.oid"""
    ).fetchall():
        yield (
            f"sequence {name}",
            (
                f"CREATE SEQUENCE {name} AS {typ} INCREMENT BY {inc} MINVALUE {lo} MAXVALUE {hi} "
                f"START WITH {start} CACHE {cache} {'CYCLE' if cycle else 'NO CYCLE'}"
            ),
        )
    for name, definition in src.execute(
        f"""SELECT {q}(p.proname) || '(' || pg_catalog.pg_get_function_identity_arguments(p.oid) || ')',
                   pg_catalog.pg_get_functiondef(p.oid)
              FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
             WHERE p.prokind IN ('f', 'p') AND {user} AND {_not_extension_member("pg_proc", "p.oid")}
             ORDER BY p.oid"""
    ).fetchall():
        yield f"function {name}", definition
    yield from _table_statements(src, user, q)
    for seq, table, column in src.execute(
        f"""SELECT {q}(s.relname), quote_ident(tn.nspname) || '.' || quote_ident(t.relname), quote_ident(a.attname)
              FROM pg_catalog.pg_depend d
              JOIN pg_catalog.pg_class s ON s.oid = d.objid AND s.relkind = 'S'
              JOIN pg_catalog.pg_namespace n ON n.oid = s.relnamespace
              JOIN pg_catalog.pg_class t ON t.oid = d.refobjid
              JOIN pg_catalog.pg_namespace tn ON tn.oid = t.relnamespace
              JOIN pg_catalog.pg_attribute a ON a.attrelid = t.oid AND a.attnum = d.refobjsubid
             WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass
               AND d.deptype = 'a' AND {user}"""
    ).fetchall():
        yield f"sequence {seq} ownership", f"ALTER SEQUENCE {seq} OWNED BY {table}.{column}"
    for table, name, definition in src.execute(
        f"""SELECT {q}(c.relname), quote_ident(con.conname), pg_catalog.pg_get_constraintdef(con.oid)
              FROM pg_catalog.pg_constraint con JOIN pg_catalog.pg_class c ON c.oid = con.conrelid
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE con.contype IN ('p', 'u', 'x', 'c', 'f') AND c.relkind IN ('r', 'p') AND {user}
               AND {_not_extension_member("pg_class", "c.oid")} AND (con.conislocal OR con.coninhcount = 0)
             ORDER BY position(con.contype IN 'puxcf'), con.oid"""
    ).fetchall():
        yield f"constraint {name} on {table}", f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"
    late: list[tuple[str, str]] = []
    for name, definition, relkind in src.execute(
        f"""SELECT {q}(ic.relname), pg_catalog.pg_get_indexdef(i.indexrelid), c.relkind::text
              FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
              JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'm') AND {user} AND {_not_extension_member("pg_class", "c.oid")}
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_constraint con WHERE con.conindid = i.indexrelid
                                AND con.conrelid = i.indrelid AND con.contype IN ('p', 'u', 'x'))
               AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits h WHERE h.inhrelid = i.indexrelid)
             ORDER BY i.indexrelid"""
    ).fetchall():
        if relkind == "p":  # ON ONLY would leave the partitions without their index
            definition = definition.replace(" ON ONLY ", " ON ", 1)
        item = (f"index {name}", definition)
        if relkind == "m":
            late.append(item)  # after the materialized views
        else:
            yield item
    for name, relkind, definition in src.execute(
        f"""SELECT {q}(c.relname), c.relkind::text, pg_catalog.pg_get_viewdef(c.oid)
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('v', 'm') AND {user} AND {_not_extension_member("pg_class", "c.oid")}
             ORDER BY c.oid"""
    ).fetchall():
        body = (definition or "").strip().rstrip(";")
        if relkind == "m":
            yield f"materialized view {name}", f"CREATE MATERIALIZED VIEW {name} AS {body} WITH NO DATA"
        else:
            yield f"view {name}", f"CREATE VIEW {name} AS {body}"
    yield from late
    version = src.info.server_version
    for name, definition in src.execute(
        f"""SELECT quote_ident(t.tgname), pg_catalog.pg_get_triggerdef(t.oid)
              FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE NOT t.tgisinternal AND {user} AND {_not_extension_member("pg_class", "c.oid")}
               {"AND t.tgparentid = 0" if version >= 130000 else ""}
             ORDER BY t.oid"""
    ).fetchall():
        yield f"trigger {name}", definition


def _table_statements(src: Conn, user: str, q: str) -> Iterator[tuple[str, str]]:
    tables = src.execute(
        f"""SELECT c.oid, {q}(c.relname), c.relkind::text, c.relpersistence::text, c.relispartition,
                   CASE WHEN c.relkind = 'p' THEN pg_catalog.pg_get_partkeydef(c.oid) END,
                   (SELECT quote_ident(pn.nspname) || '.' || quote_ident(pc.relname)
                      FROM pg_catalog.pg_inherits h JOIN pg_catalog.pg_class pc ON pc.oid = h.inhparent
                      JOIN pg_catalog.pg_namespace pn ON pn.oid = pc.relnamespace
                     WHERE h.inhrelid = c.oid AND c.relispartition),
                   CASE WHEN c.relispartition THEN pg_catalog.pg_get_expr(c.relpartbound, c.oid) END
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND {user} AND {_not_extension_member("pg_class", "c.oid")}
             ORDER BY c.oid"""
    ).fetchall()
    columns: dict[int, list[str]] = {}
    for relid, name, typ, collation, default, notnull, identity, generated in src.execute(
        """SELECT a.attrelid, quote_ident(a.attname), pg_catalog.format_type(a.atttypid, a.atttypmod),
                  (SELECT quote_ident(cn.nspname) || '.' || quote_ident(co.collname)
                     FROM pg_catalog.pg_collation co JOIN pg_catalog.pg_namespace cn ON cn.oid = co.collnamespace
                    WHERE co.oid = a.attcollation AND a.attcollation <> t.typcollation),
                  pg_catalog.pg_get_expr(d.adbin, d.adrelid), a.attnotnull, a.attidentity::text, a.attgenerated::text
             FROM pg_catalog.pg_attribute a JOIN pg_catalog.pg_type t ON t.oid = a.atttypid
             LEFT JOIN pg_catalog.pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
            WHERE a.attrelid = ANY(%s::oid[]) AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attrelid, a.attnum""",
        ([t[0] for t in tables],),
    ).fetchall():
        text = f"{name} {typ}"
        text += f" COLLATE {collation}" if collation else ""
        if generated == "s":
            text += f" GENERATED ALWAYS AS ({default}) STORED"
        elif identity:
            text += f" GENERATED {'ALWAYS' if identity == 'a' else 'BY DEFAULT'} AS IDENTITY"
        elif default is not None:
            text += f" DEFAULT {default}"
        text += " NOT NULL" if notnull else ""
        columns.setdefault(relid, []).append(text)
    for oid, name, _kind, persistence, partition, partkey, parent, bound in tables:
        unlogged = "UNLOGGED " if persistence == "u" else ""
        if partition and parent:
            text = f"CREATE {unlogged}TABLE {name} PARTITION OF {parent} {bound}"
        else:
            text = f"CREATE {unlogged}TABLE {name} ({', '.join(columns.get(oid, []))})"
        if partkey:
            text += f" PARTITION BY {partkey}"
        yield f"table {name}", text


def copy_version_tables(src: Conn, dst: Conn) -> tuple[list[str], list[str]]:
    """Copy the rows of the migration tools' version tables (and their sequences' positions).

    Returns (tables copied, problems). Only tables that exist on both sides, outside our own
    schema, and are small enough to be bookkeeping are copied.
    """
    copied: list[str] = []
    problems: list[str] = []
    rows = src.execute(
        f"""SELECT c.oid, n.nspname, c.relname, pg_catalog.pg_total_relation_size(c.oid)
              FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p') AND c.relname = ANY(%s) AND {_user_schemas("n")}
             ORDER BY n.nspname, c.relname""",
        (list(VERSION_TABLES),),
    ).fetchall()
    for oid, schema, name, size in rows:
        label = f"{schema}.{name}"
        if size > VERSION_TABLE_MAX_BYTES:
            problems.append(f"{label}: not copied, {size} bytes is too big for a version table")
            continue
        target = dst.execute("SELECT to_regclass(%s)", (f"{_quote(schema)}.{_quote(name)}",)).fetchone()
        if not target or target[0] is None:
            problems.append(f"{label}: not copied, the table is missing from the scratch copy")
            continue
        names = [
            r[0]
            for r in src.execute(
                "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = %s AND attnum > 0 "
                "AND NOT attisdropped AND attgenerated = '' ORDER BY attnum",
                (oid,),
            ).fetchall()
        ]
        ident = sql.Identifier(schema, name)
        cols = sql.SQL(", ").join(sql.Identifier(n) for n in names)
        try:
            with (
                src.cursor() as scur,
                dst.cursor() as dcur,
                scur.copy(sql.SQL("COPY (SELECT {} FROM {}) TO STDOUT").format(cols, ident)) as out,
                dcur.copy(sql.SQL("COPY {} ({}) FROM STDIN").format(ident, cols)) as inp,
            ):
                for block in out:
                    inp.write(block)
            for col in names:
                seq = src.execute(
                    "SELECT pg_catalog.pg_get_serial_sequence(%s, %s)",
                    (f"{_quote(schema)}.{_quote(name)}", col),
                ).fetchone()
                if seq and seq[0]:
                    pos = src.execute(
                        sql.SQL("SELECT last_value, is_called FROM {}").format(sql.SQL(seq[0]))
                    ).fetchone()
                    if pos:
                        dst.execute("SELECT pg_catalog.setval(%s, %s, %s)", (seq[0], pos[0], pos[1]))
        except psycopg.Error as exc:
            problems.append(f"{label}: rows not copied: {str(exc).strip().splitlines()[0]}")
            continue
        copied.append(label)
    return copied, problems


def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'


# ---------------------------------------------------------------------------- the scratch database


def scratch_name(app_database: str, now: datetime | None = None) -> str:
    """`dbos_rehearse_<app>_<yyyymmddhhmmss UTC>_<6 hex>`, at most 63 bytes: the app part is
    shortened, never the timestamp (leftover age) or the random part (uniqueness)."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d%H%M%S")
    tail = f"_{stamp}_{secrets.token_hex(3)}"
    room = 63 - len(SCRATCH_PREFIX) - len(tail)
    return SCRATCH_PREFIX + app_database[:room] + tail


def scratch_lock_key(name: str) -> int:
    return db.lock_key(name)


def _scratch_age(name: str, now: datetime) -> timedelta | None:
    match = _SCRATCH_NAME.match(name)
    if not match:
        return None
    born = datetime.strptime(match[1], "%Y%m%d%H%M%S").replace(tzinfo=timezone.utc)
    return now - born


def drop_statement(conn: Conn, name: str) -> sql.Composed:
    if conn.info.server_version >= 130000:
        return sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
    conn.execute(
        "SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE datname = %s",
        (name,),
    )
    return sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name))


def remove_leftovers(conn: Conn, now: datetime | None = None) -> tuple[list[str], list[str]]:
    """Drop scratch databases that killed rehearsals left behind.

    A scratch database is a leftover when its name has the exact scratch shape, no session
    holds its rehearsal lock (a live rehearsal takes it before creating the database and
    keeps it until the drop), and it either has no connected session or is older than
    LEFTOVER_AGE. Returns (dropped, problems).
    """
    now = now or datetime.now(timezone.utc)
    dropped: list[str] = []
    problems: list[str] = []
    names = [
        r[0]
        for r in conn.execute(
            "SELECT datname FROM pg_catalog.pg_database WHERE starts_with(datname, %s) ORDER BY datname",
            (SCRATCH_PREFIX,),
        ).fetchall()
    ]
    for name in names:
        age = _scratch_age(name, now)
        if age is None:
            continue
        row = conn.execute(
            """SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE l.locktype = 'advisory' AND l.granted
                               AND l.classid = %s::oid AND l.objid = %s::oid AND l.objsubid = 2),
                      (SELECT count(*) FROM pg_catalog.pg_stat_activity a WHERE a.datname = %s)""",
            (REHEARSE_LOCK_CLASS, scratch_lock_key(name), name),
        ).fetchone()
        locked, sessions = (bool(row[0]), int(row[1])) if row else (True, 0)
        if locked or (sessions and age < LEFTOVER_AGE):
            continue
        try:
            conn.execute(drop_statement(conn, name))
            dropped.append(name)
        except psycopg.Error as exc:
            problems.append(
                f"could not drop leftover scratch database {name}: {str(exc).strip().splitlines()[0]}"
            )
    return dropped, problems


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Hold SIGINT/SIGTERM while the scratch database is dropped: a second Ctrl-C must not
    abandon the cleanup. A held signal is delivered (and interrupts as usual) right after."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    except (AttributeError, OSError, ValueError):
        yield
        return
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


# ---------------------------------------------------------------------------- the rehearsal


@dataclass
class Rehearsal:
    """What one rehearsal did: JSON's `rehearsal` object (the changes go in `changes[]`)."""

    scratch_database: str
    instance: str
    copy_method: str = "not started"
    version_tables: list[str] = field(default_factory=list)
    copy_warnings: list[str] = field(default_factory=list)
    leftovers_removed: list[str] = field(default_factory=list)
    commands: list[CommandResult] = field(default_factory=list)
    changes: list[Change] = field(default_factory=list)
    created: bool = False
    dropped: bool = False

    @property
    def breaking(self) -> list[Change]:
        return [c for c in self.changes if c.severity == BREAKING]

    def counts(self) -> dict[str, int]:
        return {
            sev: sum(1 for c in self.changes if c.severity == sev) for sev in (BREAKING, LOCK_HEAVY, SAFE)
        }

    def as_dict(self) -> dict[str, Any]:
        return {
            "scratch_database": self.scratch_database,
            "instance": self.instance,
            "copy_method": self.copy_method,
            "version_tables": list(self.version_tables),
            "copy_warnings": list(self.copy_warnings),
            "leftovers_removed": list(self.leftovers_removed),
            "commands": [c.as_dict() for c in self.commands],
            "summary": self.counts(),
            "created": self.created,
            "dropped": self.dropped,
        }


def _store(report: RunReport, rehearsal: Rehearsal) -> None:
    report.extra["rehearsal"] = rehearsal.as_dict()
    report.extra["changes"] = [c.as_dict() for c in rehearsal.changes]


def rehearse(
    ctx: migrate._Context, interrupts: Interrupts, rehearse_url: str | None, *, record: bool
) -> Rehearsal:
    """Copy, run, diff, drop. `record` puts the rehearsal's command results into the report's
    own `commands` (plan); otherwise they stay under `rehearsal.commands` (gated up)."""
    commands = migrate._commands(ctx, ctx.config.database.migrate, "migrate")
    ctx.report.planned = [shown for _, shown in commands]
    instance = ctx.target.instance
    if rehearse_url:
        instance = parse_url(rehearse_url, what="--rehearse-url")
        ctx.scrub = Scrubber([*_secrets(ctx), instance.password])
    name = scratch_name(ctx.target.app_database)
    scratch = replace(
        ctx.target,
        instance=instance,
        app_database=name,
        system_url=instance.with_database(name),  # a command must not touch the real system database
    )
    rehearsal = Rehearsal(name, instance.masked())
    _store(ctx.report, rehearsal)
    if not commands:
        rehearsal.copy_method = "skipped: database.migrate lists no commands"
        ctx.emit(Notice("rehearsal: database.migrate lists no commands, so there is nothing to rehearse"))
        return rehearsal
    app_name = db.application_name("rehearse")
    maint = _maintenance(ctx, instance, app_name)
    try:
        _check_server(maint)
        try:
            # Taken before the database exists and held until it is dropped: while it is
            # held, no other rehearsal's cleanup takes this scratch database for a leftover.
            maint.execute(
                "SELECT pg_try_advisory_lock(%s, %s)", (REHEARSE_LOCK_CLASS, scratch_lock_key(name))
            )
            dropped, problems = remove_leftovers(maint)
        except psycopg.Error as exc:
            raise db.classify(exc, ctx.scrub, where="preparing the rehearsal") from None
        rehearsal.leftovers_removed = dropped
        for left in dropped:
            ctx.emit(Notice(f"rehearsal: removed leftover scratch database {left} (from an interrupted run)"))
        for problem in problems:
            ctx.emit(Notice(f"rehearsal: {problem}", "warning"))
        try:  # from here on, the finally drops the scratch database (IF EXISTS), whatever happens
            _create(ctx, maint, name, rehearse_url)
            rehearsal.created = True
            where = "" if rehearse_url is None else f" on {instance.masked()}"
            ctx.emit(Notice(f"rehearsal: scratch database {name}{where}"))
            _copy(ctx, scratch, rehearsal)
            before = _snapshot(ctx, scratch)
            _run(ctx, commands, scratch, interrupts, rehearsal, record)
            after = _snapshot(ctx, scratch)
            rehearsal.changes = diff(before, after)
        finally:
            rehearsal.dropped = _drop(ctx, maint, instance, name, app_name)
            _store(ctx.report, rehearsal)
    finally:
        with contextlib.suppress(psycopg.Error):
            maint.close()
    return rehearsal


def _secrets(ctx: migrate._Context) -> list[str | None]:
    out: list[str | None] = list(ctx.target.secrets)
    if ctx.config.database.password is not None:
        out.append(ctx.config.database.password.value)
    return out


def _maintenance(ctx: migrate._Context, instance: PgUrl, app_name: str) -> Conn:
    """A connection to a database that is neither the app's nor the scratch one."""
    names: list[str] = []
    if instance is not ctx.target.instance and instance.database:
        names.append(instance.database)
    if ctx.options.maintenance_db:
        names.append(ctx.options.maintenance_db)
    names += ["postgres", "template1"]
    last: DatabaseError | None = None
    for dbname in dict.fromkeys(names):
        try:
            return db.connect(instance, ctx.scrub, dbname=dbname, app_name=app_name,
                              where=f"connecting to maintenance database {dbname!r} for the rehearsal")  # fmt: skip
        except DatabaseError as exc:
            last = exc
    assert last is not None
    raise last


def _check_server(conn: Conn) -> None:
    if conn.info.server_version < 120000:
        raise UsageError(
            f"the rehearsal needs PostgreSQL 12 or later (the server is {db.server_version(conn)})",
            "pass --rehearse-url with a newer instance",
        )


def _create(ctx: migrate._Context, maint: Conn, name: str, rehearse_url: str | None) -> None:
    try:
        created = db.create_database(maint, name, ctx.scrub, template0=True)
    except DatabaseError as exc:
        if rehearse_url is None:
            exc.hint = (exc.hint + "; " if exc.hint else "") + (
                "or pass --rehearse-url with an instance where this role may create databases"
            )
        raise
    if not created:
        raise DatabaseError(f"scratch database {name!r} already exists (name clash); retry")


def _drop(ctx: migrate._Context, maint: Conn, instance: PgUrl, name: str, app_name: str) -> bool:
    """Drop the scratch database, through a fresh connection if ours broke. Never raises."""
    with _signals_held():
        errors: list[str] = []
        for attempt in range(2):
            conn = maint
            try:
                if attempt:
                    conn = _maintenance(ctx, instance, app_name)
                try:
                    conn.execute(drop_statement(conn, name))
                    return True
                finally:
                    if attempt:
                        conn.close()
            except (psycopg.Error, MigrateError) as exc:
                errors.append(
                    ctx.scrub.text(str(exc).strip().splitlines()[0] if str(exc).strip() else repr(exc))
                )
    ctx.emit(
        Notice(
            f"rehearsal: could not drop scratch database {name} ({'; '.join(errors)}); "
            "the next rehearsal removes it",
            "warning",
        )
    )
    return False


def _copy(ctx: migrate._Context, scratch: Target, rehearsal: Rehearsal) -> None:
    """Copy the real app database's schema (and version-table rows) into the scratch one."""
    target = ctx.target
    app_name = db.application_name("rehearse")
    try:
        src = db.connect(target.app_url, ctx.scrub, app_name=app_name, where="reading the app database")
    except db.DatabaseMissing:
        rehearsal.copy_method = "none: the app database does not exist yet (first deploy)"
        ctx.emit(Notice("rehearsal: the app database does not exist yet: the scratch database starts empty"))
        return
    key = db.lock_key(target.app_database)
    deadline = time.monotonic() + ctx.options.lock_timeout
    with db.closing(src):
        # Under the migration lock, so that a concurrent `up` is not copied half-way.
        migrate._take_lock(ctx, src, key, target.app_database, deadline)
        try:
            dst = db.connect(
                scratch.app_url, ctx.scrub, app_name=app_name, where="opening the scratch database"
            )
            with db.closing(dst):
                rehearsal.copy_method = _copy_schema(ctx, src, dst, rehearsal, deadline)
                copied, problems = copy_version_tables(src, dst)
                rehearsal.version_tables = copied
                rehearsal.copy_warnings += [ctx.scrub.text(p) for p in problems]
        except psycopg.Error as exc:
            raise db.classify(exc, ctx.scrub, where="copying the schema into the scratch database") from None
        finally:
            db.release_lock(src, key)
    for problem in rehearsal.copy_warnings:
        ctx.emit(Notice(f"rehearsal copy: {problem}", "warning"))
    tables = ", ".join(rehearsal.version_tables) or "none found"
    ctx.emit(Notice(f"rehearsal: schema copied with {rehearsal.copy_method}; version table rows: {tables}"))


def _copy_schema(ctx: migrate._Context, src: Conn, dst: Conn, rehearsal: Rehearsal, deadline: float) -> str:
    environ = ctx.options.environ
    mode = (environ.get(COPY_MODE_ENV) or "auto").strip().lower()
    if mode not in ("auto", "pg_dump", "catalog"):
        raise UsageError(f"${COPY_MODE_ENV} must be auto, pg_dump or catalog, not {mode!r}")
    if mode != "catalog":
        server_major = src.info.server_version // 10000
        dump = find_pg_dump(server_major, environ)
        if dump is None:
            if mode == "pg_dump":
                raise UsageError(
                    f"no pg_dump of major version >= {server_major} found (PATH, /usr/lib/postgresql/*/bin, ...)",
                    f"install the PostgreSQL {server_major} client tools, set ${PG_DUMP_ENV}, or unset ${COPY_MODE_ENV}",
                )
            ctx.emit(
                Notice(f"rehearsal: no pg_dump >= {server_major} found: copying the schema from the catalogs")
            )
        else:
            env = command_env(ctx.target, environ, {})
            env["PGAPPNAME"] = db.application_name("rehearse")
            env.setdefault("PGCONNECT_TIMEOUT", str(db.DEFAULT_CONNECT_TIMEOUT))
            wait_ms = int(max(deadline - time.monotonic(), 1) * 1000)
            try:
                restore_script(dst, dump_schema(dump, ctx.target.app_url, env, ctx.scrub, wait_ms))
                return f"pg_dump {dump.version} ({dump.path})"
            except CopyFailed as exc:
                if mode == "pg_dump":
                    raise DatabaseError(
                        f"copying the schema with pg_dump failed: {ctx.scrub.text(str(exc))}"
                    ) from None
                ctx.emit(Notice(f"rehearsal: pg_dump copy failed ({ctx.scrub.text(str(exc))}): "
                                "copying the schema from the catalogs instead", "warning"))  # fmt: skip
    problems = catalog_copy(src, dst)
    rehearsal.copy_warnings += [ctx.scrub.text(f"not copied: {p}") for p in problems]
    return "catalog"


def _snapshot(ctx: migrate._Context, scratch: Target) -> Snapshot:
    conn = db.connect(scratch.app_url, ctx.scrub, app_name=db.application_name("rehearse"),
                      where="reading the scratch database")  # fmt: skip
    with db.closing(conn):
        try:
            return snapshot(conn)
        except psycopg.Error as exc:
            raise db.classify(exc, ctx.scrub, where="reading the scratch database's catalogs") from None


def _run(
    ctx: migrate._Context,
    commands: list[tuple[str, str]],
    scratch: Target,
    interrupts: Interrupts,
    rehearsal: Rehearsal,
    record: bool,
) -> None:
    """The migrate commands against the scratch database, with `up`'s streaming and failure rules."""

    def finished(result: CommandResult) -> None:
        rehearsal.commands.append(result)
        if record:
            ctx.report.commands.append(result)

    migrate.run_commands(
        ctx, commands, interrupts, env=command_env(scratch, ctx.options.environ, ctx.config.env_map),
        on_result=finished, label="rehearsal ",
        failure_hint="it failed on a copy of the current schema, so it would fail on the real database too; "
        "the real database was not touched",
    )  # fmt: skip


# ---------------------------------------------------------------------------- presenting


def render_changes(changes: list[Change]) -> str:
    """The text diff: grouped by table (or type, view, function), worst first in each group."""
    if not changes:
        return "rehearsal: the migrations change no schema object"
    counts = {sev: sum(1 for c in changes if c.severity == sev) for sev in (BREAKING, LOCK_HEAVY, SAFE)}
    lines = [
        f"rehearsal: {len(changes)} change(s): {counts[BREAKING]} breaking, "
        f"{counts[LOCK_HEAVY]} lock-heavy, {counts[SAFE]} safe"
    ]
    group = None
    for change in changes:
        if change.group != group:
            group = change.group
            lines.append(f"  {group}")
        lines.append(f"    {change.severity:<10} {change.rule} {change.spec.name}: {change.detail}")
        if change.severity != SAFE:
            lines.append(f"               hint: {change.spec.hint}")
    return "\n".join(lines)


def breaking_summary(changes: Iterable[Change], limit: int = 5) -> str:
    items = [f"{c.rule} {c.object}" for c in changes]
    more = f" and {len(items) - limit} more" if len(items) > limit else ""
    return ", ".join(items[:limit]) + more


def _present(ctx: migrate._Context, rehearsal: Rehearsal, *, gate: bool) -> None:
    ctx.emit(Notice(render_changes(rehearsal.changes)))
    breaking = rehearsal.breaking
    if breaking and not gate:
        ctx.emit(Notice(f"rehearsal found {len(breaking)} breaking change(s): {breaking_summary(breaking)}",
                        "warning"))  # fmt: skip


# ---------------------------------------------------------------------------- the verbs


def plan(options: migrate.Options, emit: Sink, *, rehearse_url: str | None = None) -> RunReport:
    """`plan --rehearse`: report what the migrations would change, and how risky each change is.

    Breaking changes do not fail `plan` (it reports; `up --fail-on-breaking` is the gate); a
    failing command does (exit 1), as it would fail the deploy.
    """

    def body(ctx: migrate._Context, interrupts: Interrupts) -> None:
        _present(ctx, rehearse(ctx, interrupts, rehearse_url, record=True), gate=False)

    return migrate.run_steps("plan", options, emit, body)


def gated_up(
    options: migrate.Options, emit: Sink, *, allow_breaking: bool = False, rehearse_url: str | None = None
) -> RunReport:
    """`up --fail-on-breaking`: rehearse first; on a breaking change run nothing and exit 6,
    unless `allow_breaking`, in which case `up` runs and its history rows say so."""
    shown: set[str] = set()

    def first(event: Event) -> None:
        if isinstance(event, Notice):
            shown.add(event.text)
        emit(event)

    rehearsal: Rehearsal | None = None

    def body(ctx: migrate._Context, interrupts: Interrupts) -> None:
        nonlocal rehearsal
        rehearsal = rehearse(ctx, interrupts, rehearse_url, record=False)
        _present(ctx, rehearsal, gate=not allow_breaking)

    report = migrate.run_steps("up", options, first, body, finish=False)
    breaking = rehearsal.breaking if rehearsal is not None else []
    if report.error is None and breaking and not allow_breaking:
        report.error = BreakingChange(
            f"refusing to migrate {report.app_database}: the rehearsal found {len(breaking)} breaking "
            f"change(s): {breaking_summary(breaking)}; nothing was run",
            "make the change in expand/contract steps (see each hint), or pass --allow-breaking to run it "
            "anyway (recorded in history)",
        )
    if report.error is not None or rehearsal is None:
        emit(Finished(report))
        return report
    note = options.note
    if breaking:
        note = "; ".join(x for x in (note, f"allow-breaking: {breaking_summary(breaking, 20)}") if x)[:2000]
        emit(Notice(f"--allow-breaking: running {len(breaking)} breaking change(s); recorded in history",
                    "warning"))  # fmt: skip
    else:
        emit(Notice("rehearsal passed the gate: running the migrations on the app database"))
    extras = {k: report.extra[k] for k in ("rehearsal", "changes")}

    def second(event: Event) -> None:
        if isinstance(event, Resolved):
            return  # the target was already shown
        if isinstance(event, Notice) and event.text in shown:
            return  # config warnings, already shown
        if isinstance(event, Finished):
            event.report.extra.update(extras)
        emit(event)

    final = migrate.up(replace(options, note=note), second)
    final.extra.update(extras)
    return final


__all__ = [
    "BREAKING",
    "LOCK_HEAVY",
    "RULES",
    "SAFE",
    "Change",
    "Rehearsal",
    "Rule",
    "Snapshot",
    "catalog_copy",
    "diff",
    "find_pg_dump",
    "gated_up",
    "plan",
    "remove_leftovers",
    "snapshot",
]
