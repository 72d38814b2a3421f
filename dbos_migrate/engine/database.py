"""Everything that talks to PostgreSQL: connect, ensure the app database, lock, history (the
runtime role's grants are in grants.py).

All connections are autocommit: the lock is a session advisory lock, so no transaction
stays open while commands run (an open one would block `CREATE INDEX CONCURRENTLY`).
Driver errors are turned into the project's error kinds with secrets scrubbed out.
"""

from __future__ import annotations

import getpass
import hashlib
import math
import os
import random
import re
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any

import psycopg
from psycopg import sql

from dbos_migrate.engine.ownership import unsafe_to_read, verify_owned_table, verify_schema
from dbos_migrate.engine.scrub import Scrubber
from dbos_migrate.errors import DatabaseError, LockTimeout, UsageError
from dbos_migrate.model import HistoryRow, LockHolder
from dbos_migrate.settings.target import Endpoint

LOCK_CLASS = 0x44424D47  # "DBMG": the first key of every dbos-migrate advisory lock
DEFAULT_CONNECT_TIMEOUT = 10
_MISSING_DB = re.compile(r'database "[^"]*" does not exist')


class DatabaseMissing(DatabaseError):
    """The app database does not exist (SQLSTATE 3D000)."""

    code = "database_missing"


class ConnectionLost(DatabaseError):
    code = "connection_lost"


def application_name(verb: str) -> str:
    """What pg_stat_activity shows for our sessions, so a lock holder can be identified."""
    return f"dbos-migrate {verb} ({socket.gethostname()[:24]} pid {os.getpid()})"[:63]


def _sqlstate(exc: BaseException) -> str | None:
    state = getattr(exc, "sqlstate", None)
    return state if isinstance(state, str) else None


def describe(exc: BaseException, scrub: Scrubber) -> str:
    """A driver error as one scrubbed line or two, without psycopg's noise."""
    text = str(exc).strip() or type(exc).__name__
    text = text.replace("connection failed: ", "", 1)
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return scrub.text(" — ".join(lines[:3]))


def classify(exc: BaseException, scrub: Scrubber, *, where: str) -> DatabaseError:
    """Turn a psycopg error into a DatabaseError with a hint an operator can act on."""
    message = describe(exc, scrub)
    state = _sqlstate(exc)
    lowered = message.lower()
    if state == "3D000" or _MISSING_DB.search(message):
        return DatabaseMissing(f"{where}: {message}")
    hint = None
    if "password authentication failed" in lowered or state == "28P01":
        hint = "check the password in the URL (percent-encode special characters) or PGPASSWORD"
    elif "no pg_hba.conf entry" in lowered or state == "28000":
        hint = "the server's pg_hba.conf does not admit this user/host/SSL combination; try ?sslmode=require"
    elif "connection refused" in lowered or "could not connect" in lowered or "timeout expired" in lowered:
        hint = "is the server running and reachable? `--wait SECONDS` retries while it starts"
    elif "could not translate host name" in lowered or "name or service not known" in lowered:
        hint = "check the host name in the URL"
    elif state == "42501" or "permission denied" in lowered:
        hint = "the role lacks a privilege it needs here"
    return DatabaseError(f"{where}: {message}", hint)


def is_transient(exc: BaseException) -> bool:
    """Errors worth retrying under --wait: the server is not (yet) accepting connections."""
    text = str(exc).lower()
    return any(
        s in text
        for s in (
            "connection refused",
            "could not connect",
            "starting up",
            "shutting down",
            "timeout expired",
            "no such file or directory",
            "server closed the connection",
            "in recovery mode",
            "too many clients",
            "could not translate host name",
            "terminating connection",
            "consuming input failed",
            "connection is lost",
            "the connection is closed",
        )
    )


#: TCP keepalives for the session that holds the migration lock: a dead peer is noticed
#: in about a minute instead of the kernel's two hours (docs/reliability.md).
KEEPALIVES = {
    "keepalives": "1",
    "keepalives_idle": "30",
    "keepalives_interval": "10",
    "keepalives_count": "3",
}


#: Sent first on every session (docs/security.md).
PIN_SESSION = "SET search_path = pg_catalog, pg_temp"
READ_ONLY_SESSION = "; SET default_transaction_read_only = on"


def connect(
    endpoint: Endpoint,
    scrub: Scrubber,
    *,
    dbname: str | None = None,
    app_name: str = "dbos-migrate",
    where: str = "connecting",
    read_only: bool = False,
    extra: dict[str, str] | None = None,
) -> psycopg.Connection[Any]:
    """An autocommit connection with libpq's effective parameters (docs/behaviour.md).

    Its `search_path` is pinned to `pg_catalog, pg_temp`, whatever the role or database
    settings say, so no function or operator another role created can stand in for a
    built-in one; with `read_only`, every transaction of the session is READ ONLY
    (docs/security.md, "The tool's own objects"). `extra` overrides libpq parameters (the
    lease's shorter timeouts).
    """
    kwargs: dict[str, Any] = endpoint.kwargs(dbname)
    kwargs.update(extra or {})
    kwargs.setdefault("application_name", app_name)
    kwargs.setdefault("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT))
    for key, value in KEEPALIVES.items():
        kwargs.setdefault(key, value)
    try:
        conn = psycopg.connect(autocommit=True, **kwargs)
    except psycopg.Error as exc:
        raise classify(exc, scrub, where=where) from None
    except (ValueError, TypeError, UnicodeError) as exc:
        raise UsageError(f"{where}: invalid connection parameters: {scrub.text(str(exc))}") from None
    try:
        conn.execute(PIN_SESSION + (READ_ONLY_SESSION if read_only else ""))
    except psycopg.Error as exc:
        conn.close()
        raise classify(exc, scrub, where=where) from None
    return conn


def connect_waiting(
    endpoint: Endpoint,
    scrub: Scrubber,
    *,
    dbname: str | None,
    app_name: str,
    wait: float,
    on_retry: Callable[[float, str], None],
    where: str,
    read_only: bool = False,
) -> psycopg.Connection[Any]:
    """Connect, retrying transient failures with backoff until `wait` seconds have passed."""
    deadline = time.monotonic() + wait
    delay = 0.1
    while True:
        try:
            return connect(endpoint, scrub, dbname=dbname, app_name=app_name, where=where, read_only=read_only)
        except DatabaseMissing:
            raise
        except DatabaseError as exc:
            cause = exc.__cause__ or exc.__context__
            left = deadline - time.monotonic()
            if left <= 0 or not is_transient(cause if cause else exc):
                if wait > 0 and left <= 0:
                    exc.message += f" (gave up after --wait {wait:g}s)"
                raise
            on_retry(left, exc.message)
            time.sleep(min(delay, max(left, 0.01)))
            delay = min(delay * 1.6, 1.0)


def protect_lock_session(conn: psycopg.Connection[Any]) -> None:
    """Keep the session that holds the lock alive while commands run: a role's or database's
    idle_session_timeout (PostgreSQL 14+) or idle_in_transaction_session_timeout would end
    it, release the lock, and let another run start while ours is still migrating."""
    both = conn.info.server_version >= 140000  # one round trip for the two
    conn.execute("SET idle_in_transaction_session_timeout = 0" + ("; SET idle_session_timeout = 0" if both else ""))


def in_recovery(conn: psycopg.Connection[Any]) -> bool:
    """Whether the server is a hot standby (read-only): nothing can be created or migrated there."""
    row = conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone()
    return bool(row and row[0])


def refuse_standby(conn: psycopg.Connection[Any], shown: str) -> None:
    if in_recovery(conn):
        raise DatabaseError(
            f"the target is a read-only standby (in recovery): {shown}; nothing was changed",
            "point --db-url (or database_url) at the primary server",
        )


def holds_lock(conn: psycopg.Connection[Any], key: int) -> bool:
    """Whether this session still holds the migration lock `key`."""
    row = conn.execute(
        """SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks WHERE locktype = 'advisory' AND granted
                   AND pid = pg_catalog.pg_backend_pid() AND classid = %s::oid AND objid = %s::oid AND objsubid = 2)""",
        (LOCK_CLASS, key),
    ).fetchone()
    return bool(row and row[0])


def database_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_catalog.pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


def create_database(conn: psycopg.Connection[Any], name: str, scrub: Scrubber, *, template0: bool) -> bool:
    """CREATE DATABASE with a quoted identifier. False when a concurrent creator won."""
    statement = sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name))
    if template0:
        statement = sql.SQL("{} TEMPLATE template0").format(statement)
    try:
        conn.execute(statement)
        return True
    except (psycopg.errors.DuplicateDatabase, psycopg.errors.UniqueViolation):
        return False
    except psycopg.errors.InsufficientPrivilege:
        raise DatabaseError(
            f"cannot create database {name!r}: the role lacks the CREATEDB privilege",
            "grant it (ALTER ROLE <role> CREATEDB), have an admin create the database, "
            "or pass --no-create to use an existing one",
        ) from None
    except psycopg.Error as exc:
        raise classify(exc, scrub, where=f"creating database {name!r}") from None


# ---------------------------------------------------------------------------- lock


def lock_key(app_database: str) -> int:
    return int.from_bytes(hashlib.sha256(app_database.encode()).digest()[:4], "big") & 0x7FFFFFFF


def lock_holder(conn: psycopg.Connection[Any], key: int, database: str) -> LockHolder | None:
    row = conn.execute(
        """
        SELECT a.pid, coalesce(a.application_name, ''), coalesce(pg_catalog.host(a.client_addr), 'local socket'),
               coalesce(a.xact_start, a.backend_start), coalesce(a.usename::text, '')
          FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_stat_activity a ON a.pid = l.pid
          JOIN pg_catalog.pg_database d ON d.oid = l.database
         WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s
           AND l.objsubid = 2 AND d.datname = %s
         LIMIT 1
        """,
        (LOCK_CLASS, key, database),
    ).fetchone()
    if row is None:
        return None
    return LockHolder(int(row[0]), str(row[1]), str(row[2]), row[3], str(row[4]))


def _channel(key: int) -> str:
    return f"dbos_migrate_lock_{key}"


def acquire_lock(
    conn: psycopg.Connection[Any],
    key: int,
    database: str,
    *,
    timeout: float,
    on_wait: Callable[[LockHolder | None, float], None],
    on_first_attempt: Callable[[], None] | None = None,
) -> None:
    """Try-lock with short jittered backoff; never a blocking lock (see module docstring).

    A waiter LISTENs on the lock's channel and the holder NOTIFYs when it releases, so a
    hand-over takes one round trip instead of a poll interval. Polling stays as the
    fallback for a holder that dies without releasing (its session end frees the lock).
    """
    deadline = time.monotonic() + timeout
    delay = 0.005
    reported: LockHolder | None = None
    last_report = 0.0
    listening = False
    while True:
        row = conn.execute("SELECT pg_catalog.pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, key)).fetchone()
        if on_first_attempt is not None:
            on_first_attempt()
            on_first_attempt = None
        if row and row[0]:
            if listening:
                conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(_channel(key))))
            return
        if not listening:
            # Listen, then try again at once: a release between the two is not missed.
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(_channel(key))))
            listening = True
            continue
        now = time.monotonic()
        if now >= deadline:
            raise lock_timed_out(database, timeout, lock_holder(conn, key, database))
        if now - last_report > 5 or reported is None:
            holder = lock_holder(conn, key, database)
            if holder is not None and holder != reported:
                reported = holder
                on_wait(holder, deadline - now)
            last_report = now
        pause = min(delay * random.uniform(0.5, 1.5), max(deadline - now, 0.001))
        for _ in conn.notifies(timeout=pause, stop_after=1):
            pass
        delay = min(delay * 1.5, 0.25)


def lock_timed_out(database: str, timeout: float, holder: LockHolder | None) -> LockTimeout:
    """The error of a wait that ran out, naming the holder as the last look found it.

    `holder` is None when the holder's session ended between the last failed try and that
    look: a race no fast test stages against a live server, so the message is built here,
    where a unit test reaches each branch of it (docs/mutation.md).
    """
    who = holder.describe() if holder else "a session that has since ended"
    return LockTimeout(
        # The time left of --lock-timeout, to a tenth of a second: "2s", not "1.92006s".
        f"could not take the migration lock for {database!r} within {math.ceil(timeout * 10) / 10:g}s; held by {who}",
        "wait for that run to finish, raise --lock-timeout, or end the holder's session "
        "(SELECT pg_terminate_backend(pid)) if it is stuck",
    )


def release_lock(conn: psycopg.Connection[Any], key: int) -> None:
    """Unlock and wake the waiters listening on the lock's channel."""
    if not conn.closed:
        with suppress(psycopg.Error):
            conn.execute(
                "SELECT pg_catalog.pg_advisory_unlock(%s, %s), pg_catalog.pg_notify(%s, '')",
                (LOCK_CLASS, key, _channel(key)),
            )


class LockLost(ConnectionLost):
    """The migration lock's session ended (or lost the lock) while a command ran."""

    code = "lock_lost"


def verify_lock(conn: psycopg.Connection[Any], key: int, scrub: Scrubber, *, during: str | None = None) -> None:
    """Prove the lock's session is alive and still holds the lock, or stop the run.

    Checked before each command (none starts without the lock) and after it (`during`
    names the command that ran meanwhile: another run may have overlapped it).
    """
    reason = None
    try:
        if not holds_lock(conn, key):
            reason = "its session no longer holds it"
    except psycopg.Error as exc:
        reason = f"its connection failed ({describe(exc, scrub)})"
    if reason is None:
        return
    hint = "check the server; rerun when it is back (migrations must be idempotent or resumable)"
    if during is not None:
        raise LockLost(
            f"the migration lock was lost while {during} ran: {reason}; another run may have overlapped; "
            "no further command was started",
            hint + "; check what the other run did (dbos-migrate history)",
        )
    raise ConnectionLost(f"the migration lock was lost: {reason}; no further command was started", hint)


def closing_now(conn: psycopg.Connection[Any] | None) -> None:
    """Close `conn` if it is open, ignoring errors (a lost connection is already closed)."""
    if conn is not None and not conn.closed:
        with suppress(psycopg.Error):
            conn.close()


@contextmanager
def closing(conn: psycopg.Connection[Any] | None) -> Iterator[None]:
    try:
        yield
    finally:
        if conn is not None and not conn.closed:
            with suppress(psycopg.Error):
                conn.close()


# ---------------------------------------------------------------------------- history


HISTORY_SCHEMA = "dbos_migrate"
#: The history table's columns as pg_catalog.format_type prints them, in order: what
#: ownership.verify_owned_table expects of a table the tool made.
HISTORY_COLUMNS = (
    ("id", "bigint"),
    ("run_id", "uuid"),
    ("direction", "text"),
    ("command_index", "integer"),
    ("command", "text"),
    ("started_at", "timestamp with time zone"),
    ("finished_at", "timestamp with time zone"),
    ("exit_code", "integer"),
    ("status", "text"),
    ("tool_version", "text"),
    ("host", "text"),
    ("os_user", "text"),
    ("instance", "text"),
    ("note", "text"),
)

_HISTORY_DDL = """
CREATE TABLE IF NOT EXISTS {s}.history (
    id            bigserial PRIMARY KEY,
    run_id        uuid NOT NULL,
    direction     text NOT NULL CHECK (direction IN ('up', 'down')),
    command_index integer NOT NULL,
    command       text NOT NULL,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    exit_code     integer,
    status        text NOT NULL CHECK (status IN ('succeeded', 'failed', 'timed_out', 'interrupted')),
    tool_version  text NOT NULL,
    host          text NOT NULL,
    os_user       text NOT NULL,
    instance      text NOT NULL,
    note          text
);
CREATE INDEX IF NOT EXISTS history_started_at ON {s}.history (started_at DESC);
"""

_INSERT = """
INSERT INTO {s}.history (run_id, direction, command_index, command, started_at, finished_at,
    exit_code, status, tool_version, host, os_user, instance, note)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_$]{0,62}")


def check_history_schema(name: str) -> str:
    """The `--history-schema` name, or a UsageError: a plain identifier, not a system schema."""
    if not _SCHEMA_NAME.fullmatch(name) or name.lower().startswith("pg_") or name == "information_schema":
        raise UsageError(
            f"--history-schema {name!r}: not a usable schema name",
            "use letters, digits and _ (at most 63), not starting with pg_",
        )
    return name


def _history(schema: str, text: str) -> sql.Composed:
    return sql.SQL(text).format(s=sql.Identifier(schema))


def new_run_id() -> str:
    return str(uuid.uuid4())


def who() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return socket.gethostname(), user


def check_history(conn: psycopg.Connection[Any], schema: str = HISTORY_SCHEMA) -> bool:
    """Whether the history table exists; raises ownership.PlantedObject (exit 3) when it, its
    schema or its sequence is not what the tool made (docs/security.md)."""
    return verify_owned_table(conn, schema, "history", HISTORY_COLUMNS)


def _ensure_history(conn: psycopg.Connection[Any], schema: str) -> None:
    """Create the schema and table where missing, verifying each before it is used."""
    if check_history(conn, schema):
        return
    if not verify_schema(conn, schema):
        conn.execute(_history(schema, "CREATE SCHEMA IF NOT EXISTS {s}"))
        if not verify_schema(conn, schema):
            raise DatabaseError(f"schema {schema} disappeared while it was being created")
    conn.execute(_history(schema, _HISTORY_DDL))
    if not check_history(conn, schema):
        raise DatabaseError(f"{schema}.history disappeared while it was being created")


def write_history(conn: psycopg.Connection[Any], row: HistoryRow, schema: str = HISTORY_SCHEMA) -> None:
    """Insert one row; create the schema and table on first use.

    One transaction: the table is locked (ROW EXCLUSIVE, what the INSERT takes anyway, so that
    no trigger, rule or policy can be added meanwhile), verified, then written.
    """
    host, user = who()
    params = (
        row.run_id,
        row.direction,
        row.command_index,
        row.command,
        row.started_at,
        row.finished_at,
        row.exit_code,
        row.status,
        row.tool_version,
        host,
        user,
        row.instance,
        row.note,
    )
    with conn.transaction():
        if check_history(conn, schema):
            conn.execute(_history(schema, "LOCK TABLE {s}.history IN ROW EXCLUSIVE MODE"))
        _ensure_history(conn, schema)
        conn.execute(_history(schema, _INSERT), params)


def read_history(
    conn: psycopg.Connection[Any], limit: int, *, run_id: str | None = None, schema: str = HISTORY_SCHEMA
) -> list[HistoryRow]:
    """The newest `limit` rows, or every row of one run (oldest command first), read in a READ
    ONLY transaction from a verified table (none: no rows)."""
    where, order, params = "", "started_at DESC, id DESC LIMIT %s", [limit]
    if run_id is not None:
        where, order, params = "WHERE run_id::text = %s", "command_index, id", [run_id]  # type: ignore[list-item]
    with conn.transaction():
        conn.execute("SET TRANSACTION READ ONLY")
        if not check_history(conn, schema):
            return []
        query = f"""SELECT run_id::text, direction, command_index, command, started_at, finished_at, exit_code,
                           status, instance, note, tool_version, host, os_user
                      FROM {{s}}.history {where} ORDER BY {order}"""
        rows = conn.execute(_history(schema, query), params).fetchall()
    return [HistoryRow(*r) for r in rows]


def server_version(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


# ---------------------------------------------------------------------------- roles (grants: engine/grants.py)


def role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_catalog.pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


# ---------------------------------------------------------------------------- the system database


def system_schema_version(conn: psycopg.Connection[Any], schema: str) -> str | None:
    """The DBOS schema version of a system database: `<schema>.dbos_migrations` (Python 1.x+,
    TypeScript 3.x+), Alembic's revision (Python 0.x), or knex's count (TypeScript 1.x-2.x).

    Read in a READ ONLY transaction, only from plain tables whose columns have built-in types;
    a value that is not what DBOS writes is "unknown: ..." with the reason, never an error
    (docs/security.md, "A hostile system database")."""
    probes = (
        (schema, "dbos_migrations", "version", "SELECT pg_catalog.max({c})::text FROM {t}", r"[0-9]{1,18}", "{}"),
        (
            "public",
            "alembic_version",
            "version_num",
            "SELECT pg_catalog.max({c}) FROM {t}",
            r"[0-9A-Za-z_]{1,64}",
            "alembic {}",
        ),
        (
            "public",
            "knex_migrations",
            "id",
            "SELECT pg_catalog.count(*)::text FROM {t}",
            r"[0-9]{1,18}",
            "knex {} migrations",
        ),
    )
    with conn.transaction():  # one READ ONLY transaction for every probe: fewer round trips
        conn.execute("SET TRANSACTION READ ONLY")
        for probe in probes:
            nsp, table, column, query = probe[:4]
            why = unsafe_to_read(conn, nsp, table, [column])
            if why == "missing":
                continue
            if why is not None:
                return f"unknown: {why}"
            try:
                with conn.transaction():
                    statement = sql.SQL(query).format(c=sql.Identifier(column), t=sql.Identifier(nsp, table))
                    row = conn.execute(statement).fetchone()
            except psycopg.Error:
                return "unreadable"
            break
        else:
            return None
    pattern, shown = probe[4:]
    value = row[0] if row else None
    if value is None:
        return None
    if not re.fullmatch(pattern, str(value)):
        text = str(value)
        return f"unknown: {nsp}.{table}.{column} holds {text[:40]!a}" + (
            f"... ({len(text)} characters)" if len(text) > 40 else ""
        )
    return shown.format(value)


# ---------------------------------------------------------------------------- SQL printed rather than run


def quote_ident(name: str) -> str:
    """A PostgreSQL identifier, quoted, for SQL printed rather than run."""
    return '"' + name.replace('"', '""') + '"'


def quote_literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


# ---------------------------------------------------------------------------- did the migrations change anything

_FINGERPRINT = """
SELECT md5(coalesce(string_agg(item, E'\\n' ORDER BY item), ''))
  FROM (SELECT 'schema ' || n.nspname AS item
          FROM pg_catalog.pg_namespace n
         WHERE n.nspname NOT IN ('information_schema', 'dbos_migrate', %(h)s) AND n.nspname NOT LIKE 'pg\\_%%'
        UNION ALL
        SELECT n.nspname || '.' || c.relname || ' ' || c.relkind::text
               || coalesce(' ' || a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod), '')
          FROM pg_catalog.pg_class c
          JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          LEFT JOIN pg_catalog.pg_attribute a ON a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped
         WHERE n.nspname NOT IN ('information_schema', 'dbos_migrate', %(h)s) AND n.nspname NOT LIKE 'pg\\_%%'
        UNION ALL
        SELECT 'function ' || n.nspname || '.' || p.proname || '(' || pg_catalog.oidvectortypes(p.proargtypes) || ')'
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
         WHERE n.nspname NOT IN ('information_schema', 'dbos_migrate', %(h)s) AND n.nspname NOT LIKE 'pg\\_%%'
        UNION ALL
        SELECT 'type ' || n.nspname || '.' || t.typname
          FROM pg_catalog.pg_type t
          JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
         WHERE t.typtype IN ('e', 'd', 'c') AND n.nspname NOT IN ('information_schema', 'dbos_migrate', %(h)s)
           AND n.nspname NOT LIKE 'pg\\_%%') AS catalog
"""


def schema_fingerprint(conn: psycopg.Connection[Any], history_schema: str = HISTORY_SCHEMA) -> str:
    """A digest of the database's user schemas (relations, columns, functions, types), the
    tool's own schema left out: equal before and after means nothing changed."""
    row = conn.execute(_FINGERPRINT, {"h": history_schema}).fetchone()
    return str(row[0]) if row else ""


def has_history(conn: psycopg.Connection[Any], history_schema: str = HISTORY_SCHEMA) -> bool:
    """Whether any run was ever recorded in this database's history table."""
    return bool(read_history(conn, 1, schema=history_schema))


# ---------------------------------------------------------------------------- drop (docs/behaviour.md, "drop")


def other_sessions(conn: psycopg.Connection[Any], name: str, exclude: tuple[int, ...] = ()) -> list[str]:
    """The sessions connected to database `name`, but ours and `exclude`, described for a message."""
    rows = conn.execute(
        "SELECT pid, COALESCE(usename::text, ''), COALESCE(application_name, ''),"
        " COALESCE(client_addr::text, 'local') FROM pg_catalog.pg_stat_activity"
        " WHERE datname = %s AND pid <> pg_catalog.pg_backend_pid() AND NOT (pid = ANY(%s::pg_catalog.int4[]))",
        (name, list(exclude)),
    ).fetchall()
    return [f"pid {pid} ({user or '?'}, {app or 'no application_name'}, {addr})" for pid, user, app, addr in rows]


def drop_database(conn: psycopg.Connection[Any], name: str, scrub: Scrubber, *, force: bool) -> None:
    """DROP DATABASE with a quoted identifier; WITH (FORCE) ends its sessions first."""
    statement = sql.SQL("DROP DATABASE {}").format(sql.Identifier(name))
    if force:
        statement = sql.SQL("{} WITH (FORCE)").format(statement)
    try:
        conn.execute(statement)
    except psycopg.errors.ObjectInUse as exc:
        raise DatabaseError(
            f"database {name!r} is in use by other sessions: {describe(exc, scrub)}; nothing was dropped",
            "end them, or pass --force to end them (DROP DATABASE ... WITH (FORCE))",
        ) from None
    except psycopg.Error as exc:
        raise classify(exc, scrub, where=f"dropping database {name!r}") from None
