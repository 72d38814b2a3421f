"""The privileges of the app's runtime role (`up --app-role`): granted on the app and system
databases, or printed as a psql script for a DBA (`--print-user-role`). The statements are
those of `dbos migrate -r` (docs/dbos-compatibility.md)."""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg import sql

from dbos_migrate.engine.database import HISTORY_SCHEMA, classify, quote_ident, quote_literal
from dbos_migrate.engine.scrub import Scrubber

# ---------------------------------------------------------------------------- the app database

#: What `up --app-role` grants on each schema of the app database (docs/dbos-compatibility.md).
APP_ROLE_GRANTS = (
    "GRANT USAGE ON SCHEMA {s} TO {r}",
    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}",
    "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
    "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {r}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT EXECUTE ON FUNCTIONS TO {r}",
)
#: The app database's schemas the runtime role is granted on (all but the catalogs and ours).
_APP_SCHEMAS = """SELECT nspname FROM pg_catalog.pg_namespace
                WHERE nspname NOT IN ('information_schema', 'dbos_migrate', {history})
                  AND nspname NOT LIKE 'pg\\_%'
                ORDER BY nspname"""


def grant_app_role(
    conn: psycopg.Connection[Any],
    database: str,
    role: str,
    scrub: Scrubber,
    history_schema: str = HISTORY_SCHEMA,
) -> list[str]:
    """What `dbos migrate -r` grants a runtime role (never on the history schema). Returns the
    schemas covered."""
    r = sql.Identifier(role)
    query = sql.SQL(_APP_SCHEMAS).format(history=sql.Literal(history_schema))
    schemas = [row[0] for row in conn.execute(query).fetchall()]
    try:
        with conn.transaction():
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), r))
            for name in schemas:
                s = sql.Identifier(name)
                for stmt in APP_ROLE_GRANTS:
                    conn.execute(sql.SQL(stmt).format(s=s, r=r))
    except psycopg.Error as exc:
        raise classify(exc, scrub, where=f"granting privileges to role {role!r}") from None
    return schemas


# ---------------------------------------------------------------------------- the system database


def grant_system_database(
    conn: psycopg.Connection[Any], database: str, role: str, schema: str | None, scrub: Scrubber
) -> None:
    """What a runtime role needs on the system database (docs/dbos-compatibility.md).

    Always CONNECT (DBOS relies on PUBLIC having it; hardened servers revoke that). With
    `schema` (no toolchain ran): CREATE on the database so the app can create the schema at
    its first launch, and, when the schema already exists, the grants `dbos migrate -r` gives.
    """
    r = sql.Identifier(role)
    try:
        with conn.transaction():
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), r))
            if schema is None:
                return
            conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(database), r))
            exists = conn.execute("SELECT 1 FROM pg_catalog.pg_namespace WHERE nspname = %s", (schema,)).fetchone()
            if exists:
                for statement in DBOS_ROLE_GRANTS:
                    conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema), r=r))
    except psycopg.Error as exc:
        raise classify(exc, scrub, where=f"granting role {role!r} access to the system database") from None


#: The seven statements `dbos migrate -r ROLE` runs on the DBOS system schema (all releases 1.x-3.x).
DBOS_ROLE_GRANTS = (
    "GRANT USAGE ON SCHEMA {s} TO {r}",
    "GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA {s} TO {r}",
    "GRANT ALL PRIVILEGES ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
    "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT ALL ON TABLES TO {r}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT ALL ON SEQUENCES TO {r}",
    "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT EXECUTE ON FUNCTIONS TO {r}",
)


# ---------------------------------------------------------------------------- grants as text


#: knex's bookkeeping tables in the system database of TypeScript SDK 1.x-2.x (schema public):
#: the app runs knex's migrate at every launch, which reads the first and updates the second.
KNEX_TABLES = ("knex_migrations", "knex_migrations_lock")


def grant_schema_and_tables(
    conn: psycopg.Connection[Any], role: str, schema: str, tables: list[tuple[str, str]], scrub: Scrubber
) -> None:
    """The `dbos migrate -r` statements on `schema`, and read-write on each of `tables` that
    exists (knex's bookkeeping tables of TypeScript SDK 1.x-2.x, which the app's knex migrate
    updates at every launch: docs/dbos-compatibility.md)."""
    r = sql.Identifier(role)
    try:
        with conn.transaction():
            for statement in DBOS_ROLE_GRANTS:
                conn.execute(sql.SQL(statement).format(s=sql.Identifier(schema), r=r))
            for namespace, table in tables:
                found = conn.execute(
                    "SELECT pg_catalog.to_regclass(%s) IS NOT NULL", (f"{namespace}.{table}",)
                ).fetchone()
                if found and found[0]:
                    grant = sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE {} TO {}")
                    conn.execute(grant.format(sql.Identifier(namespace, table), r))
    except psycopg.Error as exc:
        raise classify(exc, scrub, where=f"granting role {role!r} access to the system database") from None


def user_role_script(
    app_database: str,
    system_database: str | None,
    role: str,
    schema: str,
    history_schema: str = HISTORY_SCHEMA,
) -> str:
    """The SQL `up --app-role ROLE` runs, as a psql script (`\\connect` between the databases):
    for a DBA who applies grants by hand. The app database's schemas are only known there, so
    its grants loop over them as `grant_app_role` does (docs/dbos-compatibility.md)."""
    r = quote_ident(role)
    tag = "$grant$"
    while tag in role:
        tag = tag[:-1] + "_$"
    loop = "\n".join(
        f"    EXECUTE format({quote_literal(stmt.format(s='%I', r='%I'))}, s, {quote_literal(role)});"
        for stmt in APP_ROLE_GRANTS
    )
    app = quote_ident(app_database)
    lines = [
        f"-- The privileges role {r} needs at run time: what `dbos-migrate up --app-role {role}` grants.",
        "-- Run it after the migrations, as the role that runs them (default privileges cover",
        "-- the objects that role creates later), e.g. piped to psql.",
        f"\\connect {app}",
        f"GRANT CONNECT ON DATABASE {app} TO {r};",
        "-- every schema of the app database but the catalogs and dbos-migrate's own",
        f"DO {tag}",
        "DECLARE s text;",
        "BEGIN",
        "  FOR s IN " + " ".join(_APP_SCHEMAS.format(history=quote_literal(history_schema)).split()) + " LOOP",
        loop,
        "  END LOOP;",
        f"END {tag};",
    ]
    if system_database is not None:
        sysdb, s = quote_ident(system_database), quote_ident(schema)
        lines += [
            f"\\connect {sysdb}",
            f"GRANT CONNECT ON DATABASE {sysdb} TO {r};",
            f"-- what `dbos migrate -r {role}` grants on the DBOS system schema {s}",
            *(stmt.format(s=s, r=r) + ";" for stmt in DBOS_ROLE_GRANTS),
            "-- TypeScript SDK 1.x-2.x only: knex's bookkeeping tables, which the app's knex updates at launch",
            f"DO {tag}",
            "DECLARE t text;",
            "BEGIN",
            "  FOREACH t IN ARRAY ARRAY[" + ", ".join(quote_literal(t) for t in KNEX_TABLES) + "] LOOP",
            "    IF pg_catalog.to_regclass(pg_catalog.format('public.%I', t)) IS NOT NULL THEN",
            "      EXECUTE pg_catalog.format('GRANT SELECT, INSERT, UPDATE, DELETE ON TABLE public.%I TO %I', t, "
            + quote_literal(role)
            + ");",
            "    END IF;",
            "  END LOOP;",
            f"END {tag};",
        ]
    else:
        lines.append("-- the system database is not PostgreSQL: nothing to grant there")
    return "\n".join(lines) + "\n"
