"""Ensure a database: open it, or create it under the creation lock when it is missing.

The one way `up` reaches both of its databases, the app database and the DBOS system
database (docs/behaviour.md, "up, step by step", steps 2 to 5), so both get the same
--wait, the same checks before anything is created and the same exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from dbos_migrate.engine.options import ChangeOptions, UpOptions
from dbos_migrate.errors import UsageError
from dbos_migrate.events import DatabaseReady, WaitingForServer

if TYPE_CHECKING:
    import psycopg

    from dbos_migrate.engine.frame import Run
    from dbos_migrate.settings.target import Endpoint


@dataclass
class Ensured:
    """An open connection to the ensured database (holding its migration lock with
    `keep_lock`), and whether it had to be created."""

    conn: psycopg.Connection[Any]
    #: It was there when first connected to (else it was missing, and created unless a
    #: concurrent run created it first).
    existed: bool
    created: bool


def check_server(run: Run[ChangeOptions], conn: psycopg.Connection[Any], server: str) -> None:
    """What must hold on a server before anything is created on it: it accepts writes (a
    standby is exit 3), and the runtime role exists there (exit 2: dbos-migrate grants, it
    never creates roles). `server` names it in the messages."""
    from dbos_migrate.engine import database as db

    db.refuse_standby(conn, server)
    role = run.options.app_role if isinstance(run.options, UpOptions) else None  # down grants nothing
    if role and not db.role_exists(conn, role):
        raise UsageError(
            f"--app-role {role!r}: no such role on {server}; dbos-migrate grants privileges but does not "
            "create roles; nothing was changed",
            f"create it first, e.g. CREATE ROLE {role} LOGIN PASSWORD '...'",
        )


def _connect_waiting(run: Run[ChangeOptions], endpoint: Endpoint, app_name: str) -> psycopg.Connection[Any]:
    """`endpoint`'s database, retried while its server is not accepting connections, for at
    most --wait seconds (docs/behaviour.md, step 2); DatabaseMissing when it does not exist."""
    from dbos_migrate.engine import database as db

    def retrying(left: float, reason: str) -> None:
        run.emit(WaitingForServer(left, reason))

    where = f"connecting to {endpoint.masked()}"
    return db.connect_waiting(
        endpoint,
        run.scrub,
        dbname=None,
        app_name=app_name,
        wait=run.options.wait,
        on_retry=retrying,
        where=where,
    )


def server_of(run: Run[ChangeOptions], endpoint: Endpoint, kind: str) -> tuple[bool, str]:
    """Whether `endpoint` is on the run's own server, and how messages name its server."""
    if endpoint.eff == run.target.instance.eff:
        return True, run.target.instance.masked()
    return False, f"the {kind} database's server {endpoint.masked()}"


def check_other_server(run: Run[ChangeOptions], endpoint: Endpoint, *, kind: str, verb: str) -> None:
    """check_server on `endpoint`'s server when it is not the run's own, before anything is
    created anywhere (docs/behaviour.md, "up, step by step", step 3): through its database,
    or a maintenance database when that is missing. Waits for --wait like ensure_database."""
    from dbos_migrate.engine import database as db
    from dbos_migrate.engine.frame import maintenance_connection

    same_server, server = server_of(run, endpoint, kind)
    if same_server:
        return
    app_name = db.application_name(verb)
    try:
        conn = _connect_waiting(run, endpoint, app_name)
    except db.DatabaseMissing:
        conn = maintenance_connection(run, app_name, instance=endpoint, purpose=f"to check {server}")
    with db.closing(conn):
        check_server(run, conn, server)


def ensure_database(
    run: Run[ChangeOptions],
    endpoint: Endpoint,
    *,
    kind: str,
    verb: str,
    deadline: float,
    create: bool = True,
    keep_lock: bool = False,
) -> Ensured:
    """Connect to `endpoint`'s database (retrying for --wait while the server is not
    accepting connections) and check its server; when it does not exist, create it from a
    maintenance database of the same server under the creation lock, with the same checks
    first. `kind` ("app", "system") names it in messages and in the DatabaseReady event.

    With `keep_lock`, the migration lock of the database is taken on the returned connection,
    before the creation lock is released: there is no gap for another run. With `create`
    False, a missing database raises database.DatabaseMissing for the caller to word.
    """
    from dbos_migrate.engine import database as db
    from dbos_migrate.engine.frame import maintenance_connection, take_lock

    name = endpoint.url.database or ""
    key = db.lock_key(name)
    app_name = db.application_name(verb)
    where = f"connecting to {endpoint.masked()}"
    same_server, server = server_of(run, endpoint, kind)

    def opened(conn: psycopg.Connection[Any]) -> psycopg.Connection[Any]:
        if keep_lock:
            try:
                take_lock(run, conn, key, name, deadline)
            except BaseException:
                conn.close()
                raise
        return conn

    try:
        existing = _connect_waiting(run, endpoint, app_name)
    except db.DatabaseMissing:
        if not create:
            raise
    else:
        try:
            check_server(run, existing, server)
        except BaseException:
            existing.close()
            raise
        conn = opened(existing)
        run.emit(DatabaseReady(name, False, kind))
        return Ensured(conn, True, False)
    purpose = f"to create the {kind} database {name!r}, which does not exist"
    maint = maintenance_connection(run, app_name, instance=None if same_server else endpoint, purpose=purpose)
    with db.closing(maint):
        check_server(run, maint, server)
        take_lock(run, maint, key, maint.info.dbname, deadline)
        created = False
        if not db.database_exists(maint, name):
            created = db.create_database(maint, name, run.scrub, template0=maint.info.dbname == "template1")
        conn = opened(db.connect(endpoint, run.scrub, app_name=app_name, where=where))
        try:
            db.release_lock(maint, key)
        except BaseException:
            conn.close()
            raise
    run.emit(DatabaseReady(name, created, kind))
    return Ensured(conn, False, created)
