"""The safety checks a no-op `up` makes stay, but each costs as few round trips as it can
(docs/architecture.md, "Start-up"): every round trip is a wait on the server, paid on
every deploy. Counted from libpq's own protocol trace on a real server."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import query, write_config
from inmemory import InMemoryContext
from pgharness import with_dbname
from psycopg import pq

from dbos_migrate import verbs
from dbos_migrate.engine import database as db
from dbos_migrate.engine import lease, ownership


def round_trips(conn: psycopg.Connection[object], action: Callable[[], object]) -> int:
    """How many times `action` waited for the server: one ReadyForQuery per round trip."""
    with tempfile.TemporaryFile() as trace:
        conn.pgconn.trace(trace.fileno())
        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
        try:
            action()
        finally:
            conn.pgconn.untrace()
        trace.seek(0)
        lines = trace.read().decode(errors="replace").splitlines()
    return sum(1 for line in lines if line.split("\t")[:1] == ["B"] and "\tReadyForQuery" in line)


@pytest.fixture
def made(tmp_path: Path, pg_url: str, app_db: str) -> Iterator[psycopg.Connection[object]]:
    """An app database where one real `up` made the history and lease tables."""
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    options = verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip")
    report = verbs.up(InMemoryContext({"PATH": os.environ["PATH"]}), options, lambda e: None)
    assert report.error is None, report.error
    with psycopg.connect(with_dbname(pg_url, app_db), autocommit=True) as conn:
        yield conn


def test_verifying_one_of_the_tools_tables_is_one_round_trip(made: psycopg.Connection[object]) -> None:
    checks = [
        lambda: ownership.verify_owned_table(made, db.HISTORY_SCHEMA, "history", db.HISTORY_COLUMNS),
        lambda: ownership.verify_owned_table(made, db.HISTORY_SCHEMA, "lease", list(lease.LEASE_COLUMNS.items())),
    ]
    for check in checks:
        assert round_trips(made, check) == 1
        assert check() is True  # and the table passes: it is the one the tool made


def test_the_system_schema_version_is_probed_in_one_transaction(pg_url: str, app_db: str) -> None:
    """Three probes (dbos_migrations, alembic_version, knex_migrations), none there: BEGIN,
    SET TRANSACTION READ ONLY, one query each, COMMIT."""
    query(pg_url, f'CREATE DATABASE "{app_db}"')
    with psycopg.connect(with_dbname(pg_url, app_db), autocommit=True) as conn:
        found: list[str | None] = []
        assert round_trips(conn, lambda: found.append(db.system_schema_version(conn, "dbos"))) == 6
        assert found == [None]


def test_the_lock_sessions_timeouts_are_lifted_in_one_round_trip(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert round_trips(conn, lambda: db.protect_lock_session(conn)) == 1
        lifted = conn.execute("SHOW idle_in_transaction_session_timeout").fetchone()
        assert lifted is not None and lifted[0] == "0"
        if conn.info.server_version >= 140000:
            lifted = conn.execute("SHOW idle_session_timeout").fetchone()
            assert lifted is not None and lifted[0] == "0"
