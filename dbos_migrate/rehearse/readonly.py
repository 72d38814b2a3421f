"""Read-only, bounded queries on the real databases: what the data and workflow checks use.

Every check runs in a transaction of its own that is `READ ONLY` (nothing can be written,
no row lock can be taken: `SELECT ... FOR UPDATE` is refused), with `statement_timeout`
and `lock_timeout` set to the check's time limit and `search_path` empty (so no function
of the database can stand in for a catalog one). A plain `SELECT` takes `ACCESS SHARE`,
the weakest table lock: it conflicts only with `ACCESS EXCLUSIVE`, so writers never wait
on it (docs/rehearsal.md, "Data checks").
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import psycopg
from psycopg import sql

from dbos_migrate.engine.scrub import Scrubber

Conn = psycopg.Connection[Any]


@contextlib.contextmanager
def bounded(conn: Conn, timeout_s: float, role: str | None = None) -> Iterator[Conn]:
    """A READ ONLY transaction whose statements (and lock waits) end after `timeout_s`; with
    `role`, run as that role (`SET LOCAL ROLE`, row-level security raising an error rather
    than hiding rows), never as the connected one."""
    ms = max(int(timeout_s * 1000), 1)
    as_role = (
        sql.SQL("; SET LOCAL ROLE {}; SET LOCAL row_security = off").format(sql.Identifier(role))
        if role
        else sql.SQL("")
    )
    conn.execute(
        sql.SQL(
            "BEGIN TRANSACTION READ ONLY; SET LOCAL statement_timeout = {ms}; SET LOCAL lock_timeout = {ms}; "
            "SET LOCAL idle_in_transaction_session_timeout = 0; SET LOCAL search_path = ''{as_role}"
        ).format(ms=sql.Literal(ms), as_role=as_role)
    )
    try:
        yield conn
    finally:
        if not conn.closed:
            with contextlib.suppress(psycopg.Error):
                conn.execute("ROLLBACK")


def reason(exc: BaseException, scrub: Scrubber, timeout_s: float) -> str:
    """Why a check could not finish, in a few words (scrubbed): the `unknown` reason."""
    if isinstance(exc, psycopg.errors.QueryCanceled):
        return f"timed out after {timeout_s:g}s (--data-check-timeout)"
    if isinstance(exc, psycopg.errors.LockNotAvailable):
        return f"the table stayed locked by another session for {timeout_s:g}s"
    if isinstance(exc, psycopg.errors.InsufficientPrivilege):
        return "permission denied: " + _first(exc, scrub)
    if isinstance(
        exc,
        (
            psycopg.errors.UndefinedColumn,
            psycopg.errors.UndefinedTable,
            psycopg.errors.UndefinedFunction,
            psycopg.errors.UndefinedObject,
        ),
    ):
        return "the app database does not have what the check needs yet (the migration creates it): " + _first(
            exc, scrub
        )
    if isinstance(exc, psycopg.OperationalError):
        return "the connection failed: " + _first(exc, scrub)
    return _first(exc, scrub)


def _first(exc: BaseException, scrub: Scrubber) -> str:
    text = str(exc).strip().splitlines()
    return scrub.text(text[0] if text else type(exc).__name__)
