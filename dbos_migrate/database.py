"""Everything that talks to PostgreSQL: connect, ensure the app database, lock, history.

All connections are autocommit: the lock is a session advisory lock, so no transaction
stays open while commands run (an open one would block `CREATE INDEX CONCURRENTLY`).
Driver errors are turned into the project's error kinds with secrets scrubbed out.
"""

from __future__ import annotations

import getpass
import hashlib
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

from dbos_migrate.errors import DatabaseError, LockTimeout, UsageError
from dbos_migrate.model import HistoryRow, LockHolder
from dbos_migrate.scrub import Scrubber
from dbos_migrate.target import PgUrl

LOCK_CLASS = 0x44424D47  # "DBMG": the first key of every dbos-migrate advisory lock
DEFAULT_CONNECT_TIMEOUT = 10
_MISSING_DB = re.compile(r'database "[^"]*" does not exist')
HISTORY_TABLE = "dbos_migrate.history"


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
        )
    )


def connect(
    url: PgUrl,
    scrub: Scrubber,
    *,
    dbname: str | None = None,
    app_name: str = "dbos-migrate",
    where: str = "connecting",
) -> psycopg.Connection[Any]:
    kwargs: dict[str, Any] = url.connect_kwargs()
    if dbname is not None:
        kwargs["dbname"] = dbname
    kwargs.setdefault("application_name", app_name)
    kwargs.setdefault("connect_timeout", str(DEFAULT_CONNECT_TIMEOUT))
    try:
        return psycopg.connect(autocommit=True, **kwargs)
    except psycopg.Error as exc:
        raise classify(exc, scrub, where=where) from None
    except (ValueError, TypeError, UnicodeError) as exc:
        raise UsageError(f"{where}: invalid connection parameters: {scrub.text(str(exc))}") from None


def connect_waiting(
    url: PgUrl,
    scrub: Scrubber,
    *,
    dbname: str | None,
    app_name: str,
    wait: float,
    on_retry: Callable[[float, str], None],
    where: str,
) -> psycopg.Connection[Any]:
    """Connect, retrying transient failures with backoff until `wait` seconds have passed."""
    deadline = time.monotonic() + wait
    delay = 0.1
    while True:
        try:
            return connect(url, scrub, dbname=dbname, app_name=app_name, where=where)
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


def database_exists(conn: psycopg.Connection[Any], name: str) -> bool:
    row = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
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
        SELECT a.pid, coalesce(a.application_name, ''), coalesce(host(a.client_addr), 'local socket'),
               coalesce(a.xact_start, a.backend_start), coalesce(a.usename, '')
          FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          JOIN pg_database d ON d.oid = l.database
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
        row = conn.execute("SELECT pg_try_advisory_lock(%s, %s)", (LOCK_CLASS, key)).fetchone()
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
            holder = lock_holder(conn, key, database)
            who = holder.describe() if holder else "a session that has since ended"
            raise LockTimeout(
                f"could not take the migration lock for {database!r} within {timeout:g}s; held by {who}",
                "wait for that run to finish, raise --lock-timeout, or end the holder's session "
                "(SELECT pg_terminate_backend(pid)) if it is stuck",
            )
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


def release_lock(conn: psycopg.Connection[Any], key: int) -> None:
    """Unlock and wake the waiters listening on the lock's channel."""
    if not conn.closed:
        with suppress(psycopg.Error):
            conn.execute(
                "SELECT pg_advisory_unlock(%s, %s), pg_notify(%s, '')", (LOCK_CLASS, key, _channel(key))
            )


def check_alive(conn: psycopg.Connection[Any], scrub: Scrubber) -> None:
    """Before each command: prove the lock's session still exists, or stop the run."""
    try:
        conn.execute("SELECT 1")
    except psycopg.Error as exc:
        raise ConnectionLost(
            f"the migration lock was lost: its connection failed ({describe(exc, scrub)}); no further command was started",
            "check the server; rerun when it is back (migrations must be idempotent or resumable)",
        ) from None


@contextmanager
def closing(conn: psycopg.Connection[Any] | None) -> Iterator[None]:
    try:
        yield
    finally:
        if conn is not None and not conn.closed:
            with suppress(psycopg.Error):
                conn.close()


# ---------------------------------------------------------------------------- history


HISTORY_DDL = """
CREATE SCHEMA IF NOT EXISTS dbos_migrate;
CREATE TABLE IF NOT EXISTS dbos_migrate.history (
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
CREATE INDEX IF NOT EXISTS history_started_at ON dbos_migrate.history (started_at DESC);
"""

_INSERT = f"""
INSERT INTO {HISTORY_TABLE} (run_id, direction, command_index, command, started_at, finished_at,
    exit_code, status, tool_version, host, os_user, instance, note)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
"""


def new_run_id() -> str:
    return str(uuid.uuid4())


def who() -> tuple[str, str]:
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return socket.gethostname(), user


def write_history(conn: psycopg.Connection[Any], row: HistoryRow) -> None:
    """Insert one row; create the schema and table on first use."""
    host, user = who()
    params = (
        row.run_id, row.direction, row.command_index, row.command, row.started_at, row.finished_at,
        row.exit_code, row.status, row.tool_version, host, user, row.instance, row.note,
    )  # fmt: skip
    try:
        conn.execute(_INSERT, params)
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        conn.execute(HISTORY_DDL)
        conn.execute(_INSERT, params)


def read_history(conn: psycopg.Connection[Any], limit: int, *, run_id: str | None = None) -> list[HistoryRow]:
    """The newest `limit` rows, or every row of one run (oldest command first)."""
    where, order, params = "", "started_at DESC, id DESC LIMIT %s", [limit]
    if run_id is not None:
        where, order, params = "WHERE run_id::text = %s", "command_index, id", [run_id]  # type: ignore[list-item]
    try:
        rows = conn.execute(
            f"""SELECT run_id::text, direction, command_index, command, started_at, finished_at, exit_code,
                       status, instance, note, tool_version, host, os_user
                  FROM {HISTORY_TABLE} {where} ORDER BY {order}""",
            params,
        ).fetchall()
    except (psycopg.errors.UndefinedTable, psycopg.errors.InvalidSchemaName):
        return []
    return [HistoryRow(*r) for r in rows]


def server_version(conn: psycopg.Connection[Any]) -> str:
    row = conn.execute("SHOW server_version").fetchone()
    return str(row[0]) if row else "unknown"


# ---------------------------------------------------------------------------- app role


def role_exists(conn: psycopg.Connection[Any], role: str) -> bool:
    return conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone() is not None


def grant_app_role(conn: psycopg.Connection[Any], database: str, role: str, scrub: Scrubber) -> list[str]:
    """What `dbos migrate -r` grants a runtime role. Returns the schemas covered."""
    r = sql.Identifier(role)
    schemas = [
        row[0]
        for row in conn.execute(
            """SELECT nspname FROM pg_namespace
                WHERE nspname NOT IN ('information_schema', 'dbos_migrate')
                  AND nspname NOT LIKE 'pg\\_%'
                ORDER BY nspname"""
        ).fetchall()
    ]
    try:
        with conn.transaction():
            conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), r))
            for name in schemas:
                s = sql.Identifier(name)
                for stmt in (
                    "GRANT USAGE ON SCHEMA {s} TO {r}",
                    "GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA {s} TO {r}",
                    "GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA {s} TO {r}",
                    "GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA {s} TO {r}",
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {r}",
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {r}",
                    "ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT EXECUTE ON FUNCTIONS TO {r}",
                ):
                    conn.execute(sql.SQL(stmt).format(s=s, r=r))
    except psycopg.Error as exc:
        raise classify(exc, scrub, where=f"granting privileges to role {role!r}") from None
    return schemas
