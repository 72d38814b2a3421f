"""The lease: what keeps two runs of one app apart when the lock's session dies.

The advisory lock lives and dies with one session; a server that ends that backend, or a
proxy that drops the connection, frees it while the holder's command is still running. So
the holder also keeps a row in `dbos_migrate.lease` (in the app database, next to the
history), which it renews every TTL/6 seconds from a thread of its own, on a connection of
its own. A new holder, once it has the advisory lock, respects a lease of another run until
that run releases it or it expires; a holder that cannot renew stops its command (TERM, a
short grace, KILL) long before its lease can expire. Expiry is judged by the server's clock
only. The design and its timing bounds are in docs/reliability.md ("The lease").
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psycopg
from psycopg import sql

from dbos_migrate.engine import database as db
from dbos_migrate.engine.scrub import Scrubber
from dbos_migrate.errors import DatabaseError, LockTimeout
from dbos_migrate.settings.target import Endpoint

if TYPE_CHECKING:
    from dbos_migrate.engine.runner import Interrupts

DEFAULT_TTL = 30.0
MIN_TTL = 2.0


def table(schema: str) -> str:
    """The lease table of the history's schema, quoted (docs/reliability.md, section 1b)."""
    return '"' + schema.replace('"', '""') + '".lease'


LEASE_DDL = """
CREATE SCHEMA IF NOT EXISTS {schema};
CREATE TABLE IF NOT EXISTS {table} (
    app_database text PRIMARY KEY,
    run_id       uuid NOT NULL,
    host         text NOT NULL,
    pid          integer NOT NULL,
    host_id      text NOT NULL,
    proc_start   text NOT NULL,
    acquired_at  timestamptz NOT NULL,
    expires_at   timestamptz NOT NULL
);
"""

#: The columns the tool created, by name and type: anything else is not its table.
LEASE_COLUMNS = {
    "app_database": "text",
    "run_id": "uuid",
    "host": "text",
    "pid": "integer",
    "host_id": "text",
    "proc_start": "text",
    "acquired_at": "timestamp with time zone",
    "expires_at": "timestamp with time zone",
}


class LeaseLost(db.ConnectionLost):
    """The lease could not be renewed in time (or was taken over): the command was stopped."""

    code = "lease_lost"


@dataclass(frozen=True)
class Holder:
    """Who holds a lease, as its row says, and how long it has left by the server's clock."""

    run_id: str
    host: str
    pid: int
    host_id: str
    proc_start: str
    live: bool
    seconds_left: float

    def describe(self) -> str:
        return f"run {self.run_id} held by {self.host}/pid {self.pid}"

    def gone(self) -> bool:
        """Whether the holder is a process on this very machine (same boot, same pid namespace)
        that no longer exists: its command died with it (docs/reliability.md, section 3)."""
        if self.host_id != host_id():
            return False
        return process_start(self.pid) != self.proc_start


def host_id() -> str:
    """This machine's boot and pid namespace: two runs with equal ids see the same processes."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return f"unknown:{socket.gethostname()}:{os.getpid()}"  # never equal to another run's
    return f"{boot}:{namespace}"


def process_start(pid: int) -> str:
    """A process's start time in clock ticks since boot, or '' when it is gone (pid reuse safe)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return fields[19] if len(fields) > 19 and fields[0] not in ("Z", "X") else ""


def _channel(app_database: str) -> str:
    return f"dbos_migrate_lease_{db.lock_key(app_database)}"


def _verify_lease_table(conn: psycopg.Connection[Any], schema: str = "dbos_migrate") -> None:
    """Check that dbos_migrate.lease is the tool's own table before using it: its owner and
    schema owner, its kind (a plain table), exactly its columns and types, and no trigger,
    rule, policy or inheritance (engine/ownership.py); otherwise exit 3 naming it and its
    owner."""
    from dbos_migrate.engine.ownership import verify_owned_table

    verify_owned_table(conn, schema, "lease", list(LEASE_COLUMNS.items()))


def _holder(conn: psycopg.Connection[Any], app_database: str, lease_table: str) -> Holder | None:
    row = conn.execute(
        f"""SELECT run_id::text, host, pid, host_id, proc_start, expires_at > pg_catalog.clock_timestamp(),
                   extract(epoch FROM expires_at - pg_catalog.clock_timestamp())::float8
              FROM {lease_table} WHERE app_database = %s""",
        (app_database,),
    ).fetchone()
    if row is None:
        return None
    return Holder(str(row[0]), str(row[1]), int(row[2]), str(row[3]), str(row[4]), bool(row[5]), float(row[6]))


def prepare_table(conn: psycopg.Connection[Any], schema: str = "dbos_migrate") -> bool:
    """Create the lease table on first use and verify it; False when the role may not create
    the schema (the run then relies on the lock session alone, and says so)."""
    try:
        exists = conn.execute("SELECT pg_catalog.to_regclass(%s)", (table(schema),)).fetchone()
        if not exists or exists[0] is None:
            from dbos_migrate.engine.ownership import verify_schema

            verify_schema(conn, schema)  # never create a table in a schema another role planted
            quoted = table(schema).rpartition(".")[0]
            conn.execute(LEASE_DDL.format(schema=quoted, table=table(schema)))
    except psycopg.errors.InsufficientPrivilege:
        return False
    _verify_lease_table(conn, schema)
    return True


_TAKE = """
INSERT INTO {table} AS l (app_database, run_id, host, pid, host_id, proc_start, acquired_at, expires_at)
VALUES (%(db)s, %(run)s, %(host)s, %(pid)s, %(host_id)s, %(start)s, pg_catalog.clock_timestamp(),
        pg_catalog.clock_timestamp() + %(ttl)s * interval '1 second')
ON CONFLICT (app_database) DO UPDATE
   SET run_id = excluded.run_id, host = excluded.host, pid = excluded.pid, host_id = excluded.host_id,
       proc_start = excluded.proc_start, acquired_at = excluded.acquired_at, expires_at = excluded.expires_at
 WHERE l.expires_at <= pg_catalog.clock_timestamp() OR l.run_id = excluded.run_id OR l.run_id::text = %(gone)s
RETURNING extract(epoch FROM l.expires_at - pg_catalog.clock_timestamp())::float8
"""

_RENEW = """
UPDATE {table} SET expires_at = pg_catalog.clock_timestamp() + %s * interval '1 second'
 WHERE app_database = %s AND run_id = %s AND expires_at > pg_catalog.clock_timestamp()
RETURNING extract(epoch FROM expires_at - pg_catalog.clock_timestamp())::float8
"""


def acquire(
    conn: psycopg.Connection[Any],
    app_database: str,
    run_id: str,
    ttl: float,
    deadline: float,
    on_notice: Callable[[str, str], None],
    *,
    keep: bool = True,
    schema: str = "dbos_migrate",
) -> float | None:
    """Take the lease for `app_database` on `conn` (which holds the advisory lock), waiting
    while another run's lease is live. Returns the seconds it has left by the server's clock,
    or None when the role cannot keep a lease. `deadline` (time.monotonic) bounds the wait
    like --lock-timeout: past it, exit 4 naming the lease's holder. With `keep` False
    (--no-history: nothing of the tool's is created in the app database) another run's live
    lease is still waited for, if the table exists, but none is taken."""
    if not _table_ready(conn, schema, keep, on_notice):
        return None
    start = time.monotonic()
    waited_for: Holder | None = None
    listening = False
    params = {
        "db": app_database,
        "run": run_id,
        "host": socket.gethostname()[:64],
        "pid": os.getpid(),
        "host_id": host_id(),
        "start": process_start(os.getpid()),
        "ttl": ttl,
        "gone": "",
    }
    while True:
        holder = _holder(conn, app_database, table(schema))
        gone = holder is not None and holder.live and holder.run_id != run_id and holder.gone()
        if holder is None or not holder.live or holder.run_id == run_id or gone:
            if not keep:
                return None
            params["gone"] = holder.run_id if gone and holder else ""
            row = conn.execute(_TAKE.format(table=table(schema)), params).fetchone()
            if row is not None:
                if listening:
                    conn.execute(sql.SQL("UNLISTEN {}").format(sql.Identifier(_channel(app_database))))
                if waited_for is not None:
                    how = "its process is gone" if gone else "it was released" if holder is None else "it expired"
                    on_notice(
                        f"waited {time.monotonic() - start:.1f}s for the lease of {waited_for.describe()} ({how})",
                        "info",
                    )
                elif gone and holder is not None:
                    on_notice(f"took over the lease of {holder.describe()}: its process is gone", "info")
                return float(row[0])
            continue
        if not listening:
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(_channel(app_database))))
            listening = True
            continue
        if waited_for is None or waited_for.run_id != holder.run_id:
            waited_for = holder
            on_notice(
                f"waiting for the lease of {holder.describe()} (it expires in {holder.seconds_left:.0f}s "
                "unless renewed): its command may still be running",
                "warning",
            )
        _wait_for_release(conn, app_database, holder, deadline)


def _table_ready(conn: psycopg.Connection[Any], schema: str, keep: bool, on_notice: Callable[[str, str], None]) -> bool:
    """Whether there is a lease table to wait on: with `keep`, prepared (False, with a warning,
    when the role may not create it); without, only one that already exists, verified."""
    if not keep:
        found = conn.execute("SELECT pg_catalog.to_regclass(%s)", (table(schema),)).fetchone()
        if not found or found[0] is None:
            return False
        _verify_lease_table(conn, schema)
    elif not prepare_table(conn, schema):
        on_notice(
            f"no lease kept: the role may not create schema {schema}; runs are kept apart by the lock's "
            "session alone (docs/reliability.md)",
            "warning",
        )
        return False
    return True


def _wait_for_release(conn: psycopg.Connection[Any], app_database: str, holder: Holder, deadline: float) -> None:
    """Wait (at most a second, and no longer than the lease's own time left) for the holder's
    release NOTIFY; past `deadline`, exit 4 naming the holder."""
    now = time.monotonic()
    if now >= deadline:
        raise LockTimeout(
            f"could not take the lease for {app_database!r} in time: the lease of {holder.describe()} "
            "is still live (its command may still be running)",
            "wait for that run to finish; a run whose machine is gone frees the app when its lease expires",
        )
    pause = max(min(1.0, holder.seconds_left + 0.05, deadline - now), 0.01)
    for _ in conn.notifies(timeout=pause, stop_after=1):
        pass


class Lease:
    """A held lease, renewed every TTL/6 seconds from a thread on a connection of its own.

    When the lease has less than half its TTL left (three renewals missed), or a renewal finds
    it gone, the running command is stopped through the runner (TERM, a grace of at most TTL/6,
    KILL), so it is over before the lease expires; `check` then stops the run with exit 3.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        scrub: Scrubber,
        app_database: str,
        run_id: str,
        ttl: float,
        seconds_left: float,
        interrupts: Interrupts,
        grace: float,
        schema: str = "dbos_migrate",
    ) -> None:
        self.table = table(schema)
        self.endpoint, self.scrub, self.app_database, self.run_id, self.ttl = (
            endpoint,
            scrub,
            app_database,
            run_id,
            ttl,
        )
        self.period = ttl / 6
        self.grace = min(grace, self.period)
        self.interrupts = interrupts
        self._valid_until = time.monotonic() + seconds_left  # local bound of the server's expires_at
        self._lost: str | None = None
        self._conn: psycopg.Connection[Any] | None = None
        self._done = threading.Event()
        self._cond = threading.Condition()
        self._threads = [
            threading.Thread(target=self._renew_loop, name="dbos-migrate lease", daemon=True),
            threading.Thread(target=self._guard_loop, name="dbos-migrate lease guard", daemon=True),
        ]

    def start(self) -> Lease:
        for thread in self._threads:
            thread.start()
        return self

    @property
    def lost(self) -> str | None:
        return self._lost

    def held_throughout(self) -> bool:
        return self._lost is None and time.monotonic() < self._valid_until

    def check(self, during: str | None = None) -> None:
        """Stop the run (exit 3) if the lease was lost or is too close to expiry to start a command."""
        reason = self._lost
        if reason is None and time.monotonic() > self._valid_until - self.ttl / 2:
            reason = "it could not be renewed in time"
        if reason is None:
            return
        if during is not None:
            raise LeaseLost(
                f"the migration lease was lost while {during} ran ({reason}); the command was stopped before "
                "the lease could expire, so no other run overlapped it; no further command was started",
                "check the server and the network; rerun when they are back (migrations must be idempotent "
                "or resumable)",
            )
        raise LeaseLost(
            f"the migration lease was lost ({reason}); no further command was started",
            "check the server and the network; rerun when they are back",
        )

    # -- the renewal thread

    def _connect(self) -> psycopg.Connection[Any]:
        timeout = max(int(self.period), 1)
        conn = db.connect(
            self.endpoint,
            self.scrub,
            app_name=db.application_name("lease"),
            where="renewing the migration lease",
            extra={"connect_timeout": str(timeout), "tcp_user_timeout": str(timeout * 1000)},
        )
        db.protect_lock_session(conn)
        return conn

    def _renew_once(self) -> None:
        sent = time.monotonic()
        try:
            if self._conn is None or self._conn.closed:
                db.closing_now(self._conn)
                self._conn = self._connect()
            row = self._conn.execute(
                _RENEW.format(table=self.table), (self.ttl, self.app_database, self.run_id)
            ).fetchone()
        except (psycopg.Error, DatabaseError):
            db.closing_now(self._conn)
            self._conn = None
            return
        with self._cond:
            if row is None:
                self._lose("another run took it over after it expired")
            else:
                self._valid_until = sent + float(row[0])
            self._cond.notify_all()

    def _renew_loop(self) -> None:
        while not self._done.wait(self.period if self._conn is not None else min(self.period, 1.0)):
            self._renew_once()

    def _guard_loop(self) -> None:
        """Stops the command when the lease is about to be too short to stop it safely."""
        with self._cond:
            while not self._done.is_set() and self._lost is None:
                left = self._valid_until - self.ttl / 2 - time.monotonic()
                if left <= 0:
                    self._lose(f"not renewed for {self.ttl / 2:g}s of its {self.ttl:g}s")
                    return
                self._cond.wait(min(left, self.period))

    def _lose(self, reason: str) -> None:
        if self._lost is None:
            self._lost = reason
            self.interrupts.stop(reason, self.grace)

    def release(self, lock_conn: psycopg.Connection[Any] | None = None) -> None:
        """Stop renewing and delete the row (waking a waiting run), through the lock's session
        while it lives, else the renewal connection, else a new one; if all fail, the lease
        simply expires."""
        self._done.set()
        with self._cond:
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=self.period + 2)
        conn = self._conn
        try:
            if lock_conn is not None and not lock_conn.closed:
                db.closing_now(conn)
                conn = lock_conn
            elif conn is None or conn.closed:
                conn = self._connect()
            conn.execute(
                f"DELETE FROM {self.table} WHERE app_database = %s AND run_id = %s",
                (self.app_database, self.run_id),
            )
            conn.execute("SELECT pg_catalog.pg_notify(%s, '')", (_channel(self.app_database),))
        except (psycopg.Error, DatabaseError):
            if conn is lock_conn:  # the lock's session failed just now: one more try, on a new connection
                with suppress(psycopg.Error, DatabaseError):
                    retry = self._connect()
                    with db.closing(retry):
                        retry.execute(
                            f"DELETE FROM {self.table} WHERE app_database = %s AND run_id = %s",
                            (self.app_database, self.run_id),
                        )
        finally:
            if conn is not lock_conn:
                db.closing_now(conn)
            self._conn = None
