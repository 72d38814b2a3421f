"""Copying the app database's schema (no data) into the scratch database.

pg_dump --schema-only when a recent enough one is installed, else a re-creation from the
catalogs; then the rows of the migration tool's own version table (alembic_version & co.),
without which the tool would replay every migration from zero (docs/rehearsal.md).
"""

from __future__ import annotations

import glob
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

import psycopg
from psycopg import sql

from dbos_migrate.engine.ownership import unsafe_to_read
from dbos_migrate.engine.scrub import Scrubber
from dbos_migrate.errors import first_line
from dbos_migrate.rehearse.catalog import OWN_SCHEMA, Conn, not_extension_member, user_schemas
from dbos_migrate.settings.target import PgUrl

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


@dataclass(frozen=True)
class PgDump:
    path: str
    major: int
    version: str


_PG_DUMP_VERSION = re.compile(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?|\b(\d+)\.(\d+)")


def pg_dump_version(path: str) -> PgDump | None:
    """`pg_dump --version` parsed; None when it does not run."""
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=15, stdin=subprocess.DEVNULL)
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
    public = url.without_secrets().libpq_text()
    args = [
        dump.path,
        "--schema-only",
        "--no-owner",
        "--no-privileges",
        "--no-security-labels",
        "--no-tablespaces",
        f"--exclude-schema={OWN_SCHEMA}",
        f"--lock-wait-timeout={max(lock_wait_ms, 1)}",
        f"--dbname={public}",
    ]
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
        raise CopyFailed(first_line(exc)) from None


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
        return first_line(exc)
    return None


def _catalog_statements(src: Conn) -> Iterator[tuple[str, str]]:
    """(label, DDL) in dependency order, as far as one pass can tell."""
    user = user_schemas("n")
    q = "quote_ident(n.nspname) || '.' || quote_ident"
    yield from _schema_statements(src, user, q)
    yield from _type_statements(src, user, q)
    yield from _sequence_and_function_statements(src, user, q)
    yield from _table_statements(src, user, q)
    yield from _ownership_and_constraint_statements(src, user, q)
    yield from _index_view_and_trigger_statements(src, user, q)


def _schema_statements(src: Conn, user: str, q: str) -> Iterator[tuple[str, str]]:
    """Schemas, then the extensions installed in them."""
    for (name,) in src.execute(
        f"SELECT quote_ident(n.nspname) FROM pg_catalog.pg_namespace n WHERE {user} "
        f"AND {not_extension_member('pg_namespace', 'n.oid')} ORDER BY n.oid"
    ).fetchall():
        yield f"schema {name}", f"CREATE SCHEMA IF NOT EXISTS {name}"
    for ext, schema in src.execute(
        "SELECT quote_ident(e.extname), quote_ident(n.nspname) FROM pg_catalog.pg_extension e "
        "JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql' ORDER BY e.oid"
    ).fetchall():
        yield f"extension {ext}", f"CREATE EXTENSION IF NOT EXISTS {ext} WITH SCHEMA {schema}"


def _type_statements(src: Conn, user: str, q: str) -> Iterator[tuple[str, str]]:
    """Enums, domains and composite types."""
    for name, labels in src.execute(
        f"""SELECT {q}(t.typname), ARRAY(SELECT quote_literal(e.enumlabel) FROM pg_catalog.pg_enum e
                                          WHERE e.enumtypid = t.oid ORDER BY e.enumsortorder)
              FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
             WHERE t.typtype = 'e' AND {user} AND {not_extension_member("pg_type", "t.oid")} ORDER BY t.oid"""
    ).fetchall():
        yield f"enum {name}", f"CREATE TYPE {name} AS ENUM ({', '.join(labels)})"
    for name, base, notnull, default, checks in src.execute(
        f"""SELECT {q}(t.typname), pg_catalog.format_type(t.typbasetype, t.typtypmod), t.typnotnull, t.typdefault,
                   ARRAY(SELECT 'CONSTRAINT ' || quote_ident(con.conname) || ' ' || pg_catalog.pg_get_constraintdef(con.oid)
                           FROM pg_catalog.pg_constraint con WHERE con.contypid = t.oid AND con.contype = 'c'
                          ORDER BY con.oid)
              FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
             WHERE t.typtype = 'd' AND {user} AND {not_extension_member("pg_type", "t.oid")} ORDER BY t.oid"""
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
             WHERE t.typtype = 'c' AND {user} AND {not_extension_member("pg_type", "t.oid")} ORDER BY t.oid"""
    ).fetchall():
        yield f"type {name}", f"CREATE TYPE {name} AS ({', '.join(attrs)})"


def _sequence_and_function_statements(src: Conn, user: str, q: str) -> Iterator[tuple[str, str]]:
    """Free-standing sequences, then functions and procedures."""
    for name, typ, start, inc, lo, hi, cache, cycle in src.execute(
        f"""SELECT {q}(c.relname), pg_catalog.format_type(s.seqtypid, NULL), s.seqstart, s.seqincrement,
                   s.seqmin, s.seqmax, s.seqcache, s.seqcycle
              FROM pg_catalog.pg_sequence s JOIN pg_catalog.pg_class c ON c.oid = s.seqrelid
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE {user} AND {not_extension_member("pg_class", "c.oid")}
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
             WHERE p.prokind IN ('f', 'p') AND {user} AND {not_extension_member("pg_proc", "p.oid")}
             ORDER BY p.oid"""
    ).fetchall():
        yield f"function {name}", definition


def _ownership_and_constraint_statements(src: Conn, user: str, q: str) -> Iterator[tuple[str, str]]:
    """Sequence ownership, then every table constraint (NOT VALID kept)."""
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
               AND {not_extension_member("pg_class", "c.oid")} AND (con.conislocal OR con.coninhcount = 0)
             ORDER BY position(con.contype IN 'puxcf'), con.oid"""
    ).fetchall():
        yield f"constraint {name} on {table}", f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}"


def _index_view_and_trigger_statements(src: Conn, user: str, q: str) -> Iterator[tuple[str, str]]:
    """Indexes, views and materialized views (their indexes after them), triggers."""
    late: list[tuple[str, str]] = []
    for name, definition, relkind in src.execute(
        f"""SELECT {q}(ic.relname), pg_catalog.pg_get_indexdef(i.indexrelid), c.relkind::text
              FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class ic ON ic.oid = i.indexrelid
              JOIN pg_catalog.pg_class c ON c.oid = i.indrelid
              JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
             WHERE c.relkind IN ('r', 'p', 'm') AND {user} AND {not_extension_member("pg_class", "c.oid")}
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
             WHERE c.relkind IN ('v', 'm') AND {user} AND {not_extension_member("pg_class", "c.oid")}
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
             WHERE NOT t.tgisinternal AND {user} AND {not_extension_member("pg_class", "c.oid")}
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
             WHERE c.relkind IN ('r', 'p') AND {user} AND {not_extension_member("pg_class", "c.oid")}
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
             WHERE c.relkind IN ('r', 'p') AND c.relname = ANY(%s) AND {user_schemas("n")}
             ORDER BY n.nspname, c.relname""",
        (list(VERSION_TABLES),),
    ).fetchall()
    for oid, schema, name, size in rows:
        label = f"{schema}.{name}"
        if size > VERSION_TABLE_MAX_BYTES:
            problems.append(f"{label}: not copied, {size} bytes is too big for a version table")
            continue
        target = dst.execute("SELECT pg_catalog.to_regclass(%s)", (f"{_quote(schema)}.{_quote(name)}",)).fetchone()
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
        why = unsafe_to_read(src, schema, name, names, kinds="rp")
        if why is not None:  # reading it could run code its owner wrote (docs/security.md)
            problems.append(f"{label}: rows not copied: {why}")
            continue
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
            problems.append(f"{label}: rows not copied: {first_line(exc)}")
            continue
        copied.append(label)
    return copied, problems


def _quote(ident: str) -> str:
    return '"' + ident.replace('"', '""') + '"'
