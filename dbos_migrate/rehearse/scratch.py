"""The scratch database: named, marked, created, dropped, and cleaned up after killed runs.

Nothing but a rehearsal ever drops a database, so the rules that decide what is a scratch
database are strict (docs/rehearsal.md, "The scratch database"):
- its name has the exact shape `dbos_rehearse_<app>_<yyyymmddhhmmss>_<6 hex>`, and the
  prefix is refused as an app or system database name;
- it carries the scratch mark, a database comment that only a rehearsal writes, right
  after creating it; a database without the mark is never dropped, whatever its name;
- no live rehearsal holds its lock.
"""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import psycopg
from psycopg import sql

from dbos_migrate.engine import database as db
from dbos_migrate.errors import first_line
from dbos_migrate.rehearse.catalog import Conn
from dbos_migrate.settings.config import SCRATCH_PREFIX

#: Only names of this exact shape are ever considered leftovers.
_SCRATCH_NAME = re.compile(r"\Adbos_rehearse_[a-z0-9_]*_(\d{14})_[0-9a-f]{6}\Z")
#: First key of the advisory lock a live rehearsal holds on its scratch database's name
#: ("DBRH"); the cleanup of leftovers never touches a scratch database whose lock is held.
REHEARSE_LOCK_CLASS = 0x44425248
#: A leftover that still has sessions is only dropped once it is this old (by its name).
LEFTOVER_AGE = timedelta(hours=1)
#: The comment a rehearsal puts on its scratch database, checked before any leftover is dropped.
SCRATCH_MARK = "dbos-migrate rehearsal scratch database: dropped when its rehearsal ends"


def scratch_name(app_database: str, now: datetime | None = None) -> str:
    """`dbos_rehearse_<app>_<yyyymmddhhmmss UTC>_<6 hex>`, at most 63 bytes: the app part is
    shortened, never the timestamp (leftover age) or the random part (uniqueness)."""
    stamp = (now or datetime.now(timezone.utc)).strftime("%Y%m%d%H%M%S")
    tail = f"_{stamp}_{secrets.token_hex(3)}"
    room = 63 - len(SCRATCH_PREFIX) - len(tail)
    return SCRATCH_PREFIX + app_database[:room] + tail


def scratch_lock_key(name: str) -> int:
    return db.lock_key(name)


def hold_scratch_lock(conn: Conn, name: str) -> None:
    """Taken before the database exists and held until it is dropped."""
    conn.execute("SELECT pg_catalog.pg_try_advisory_lock(%s, %s)", (REHEARSE_LOCK_CLASS, scratch_lock_key(name)))


def mark(conn: Conn, name: str) -> None:
    """Write the scratch mark on a database this rehearsal has just created (and so owns)."""
    conn.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier(name), sql.Literal(SCRATCH_MARK)))


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
    """Drop scratch databases that killed rehearsals left behind. Returns (dropped, problems).

    A database is a leftover when its name has the exact scratch shape, it carries the
    scratch mark, no session holds its rehearsal lock, and it either has no connected
    session or is older than LEFTOVER_AGE.
    """
    now = now or datetime.now(timezone.utc)
    dropped: list[str] = []
    problems: list[str] = []
    rows = conn.execute(
        """SELECT d.datname, pg_catalog.shobj_description(d.oid, 'pg_database') IS NOT DISTINCT FROM %s
             FROM pg_catalog.pg_database d WHERE starts_with(d.datname, %s) ORDER BY d.datname""",
        (SCRATCH_MARK, SCRATCH_PREFIX),
    ).fetchall()
    for name, marked in rows:
        age = _scratch_age(name, now)
        if age is None:
            continue
        if not marked:
            if age >= LEFTOVER_AGE:
                problems.append(f"{name} looks like a scratch database but is not marked as one: left alone")
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
            problems.append(f"could not drop leftover scratch database {name}: {first_line(exc)}")
    return dropped, problems


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
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
