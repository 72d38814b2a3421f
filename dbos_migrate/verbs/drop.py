"""`drop`: drop the app database (and with `system_db` the system database) of a development
or CI target, like `dbos-cloud db destroy` (docs/behaviour.md, "drop").

The warning comes first, then a typed confirmation (the app database name on a terminal;
`--yes` or `--confirm NAME` without one), before any connection. The drop runs under the
creation lock and, for the app database, the migration lock: no run may be in progress.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dbos_migrate.context import Context
from dbos_migrate.engine.frame import Run, maintenance_connection, prepare, take_lock
from dbos_migrate.engine.options import DropOptions
from dbos_migrate.errors import DatabaseError, Interrupted, MigrateError, UsageError
from dbos_migrate.events import DropWarning, Finished, Notice, Sink
from dbos_migrate.model import DroppedDatabase, DropReport
from dbos_migrate.settings.config import RESERVED_DATABASES, SCRATCH_PREFIX
from dbos_migrate.verbs.confirm import confirm_by_name

if TYPE_CHECKING:
    import psycopg

    from dbos_migrate.settings.target import Endpoint


def drop(ctx: Context, options: DropOptions, emit: Sink) -> DropReport:
    """Drop the app database (and the system database with `system_db`) after the warning and
    the typed confirmation; `force` ends other sessions (DROP DATABASE ... WITH (FORCE))."""
    report = DropReport("drop", forced=options.force)
    try:
        _drop(prepare(ctx, options, report, emit), report, system_db=options.system_db, force=options.force)
    except MigrateError as exc:
        report.error = exc
    except KeyboardInterrupt:
        report.error = Interrupted(2)
    emit(Finished(report))
    return report


def _drop(run: Run[DropOptions], report: DropReport, *, system_db: bool, force: bool) -> None:
    target = run.target
    report.databases = [DroppedDatabase(target.app_database, "app")]
    if system_db:
        if target.system.endpoint is None or target.system.name is None:
            raise UsageError(
                f"--system-db: the system database is not a PostgreSQL database ({target.system.source}); "
                "nothing was dropped"
            )
        report.databases.append(DroppedDatabase(target.system.name, "system"))
    for item in report.databases:
        if item.name in RESERVED_DATABASES or item.name.startswith(SCRATCH_PREFIX):
            raise UsageError(
                f"refusing to drop {item.name!r}: "
                + (
                    "every PostgreSQL instance needs it"
                    if item.name in RESERVED_DATABASES
                    else "it is a rehearsal's scratch database, dropped by the rehearsal itself"
                )
                + "; nothing was dropped"
            )
    run.emit(DropWarning(run.report.where, tuple(d.name for d in report.databases)))
    confirm(run)
    run.ensure_password()
    from dbos_migrate.engine import database as db

    deadline = run.ctx.clock() + run.options.lock_timeout
    app_name = db.application_name("drop")
    key = db.lock_key(target.app_database)
    maint = maintenance_connection(run, app_name, purpose=f"to drop the app database {target.app_database!r}")
    with db.closing(maint):
        db.refuse_standby(maint, run.report.where.target or "")
        take_lock(run, maint, key, maint.info.dbname, deadline)  # the creation lock: no `up` creates it meanwhile
        _drop_app(run, report.databases[0], maint, key, deadline, force=force)
        if system_db:
            assert target.system.endpoint is not None
            _drop_system(run, report.databases[1], maint, target.system.endpoint, app_name, force=force)
        db.release_lock(maint, key)


def _drop_app(
    run: Run[DropOptions],
    item: DroppedDatabase,
    maint: psycopg.Connection[Any],
    key: int,
    deadline: float,
    *,
    force: bool,
) -> None:
    """Under the app database's migration lock (a run in progress holds it): check its other
    sessions, then drop it. With --force the lock is held through the drop; without, the
    plain DROP fails if anyone connected since the check (a run cannot start unseen)."""
    from dbos_migrate.engine import database as db

    item.existed = db.database_exists(maint, item.name)
    if not item.existed:
        run.emit(Notice(f"app database {item.name} does not exist: nothing to drop"))
        return
    conn = db.connect(
        run.target.app,
        run.scrub,
        app_name=db.application_name("drop"),
        where=f"connecting to {run.target.app_url.masked()}",
    )
    with db.closing(conn):
        take_lock(run, conn, key, item.name, deadline)
        _respect_lease(run, conn, item.name, deadline)
        _refuse_other_sessions(maint, item.name, (conn.info.backend_pid,), force=force)
        if not force:
            conn.close()
        db.drop_database(maint, item.name, run.scrub, force=force)
    item.dropped = True
    run.emit(Notice(f"app database {item.name} dropped"))


def _respect_lease(run: Run[DropOptions], conn: psycopg.Connection[Any], name: str, deadline: float) -> None:
    """A run whose lock's session died still holds its lease (docs/reliability.md): wait for
    it like `up` would, within --lock-timeout (exit 4); take none."""
    import time

    from dbos_migrate.engine import database as db
    from dbos_migrate.engine import lease as leases

    left = max(deadline - run.ctx.clock(), 0)
    leases.acquire(
        conn,
        name,
        db.new_run_id(),
        leases.MIN_TTL,
        time.monotonic() + left,
        lambda text, level: run.emit(Notice(text, level)),
        keep=False,
        schema=db.check_history_schema(run.options.history_schema),
    )


def _drop_system(
    run: Run[DropOptions],
    item: DroppedDatabase,
    maint: psycopg.Connection[Any],
    system: Endpoint,
    app_name: str,
    *,
    force: bool,
) -> None:
    """The system database, on its own instance (system_database_url may name another one)."""
    from dbos_migrate.engine import database as db

    other = None
    instance = run.target.instance
    if (system.host, system.port, system.user) != (instance.host, instance.port, instance.user):
        other = maintenance_connection(
            run, app_name, instance=system, purpose=f"to drop the system database {item.name!r}"
        )
        maint = other
    with db.closing(other):
        item.existed = db.database_exists(maint, item.name)
        if not item.existed:
            run.emit(Notice(f"system database {item.name} does not exist: nothing to drop"))
            return
        _refuse_other_sessions(maint, item.name, (), force=force)
        db.drop_database(maint, item.name, run.scrub, force=force)
    item.dropped = True
    run.emit(Notice(f"system database {item.name} dropped"))


def _refuse_other_sessions(maint: psycopg.Connection[Any], name: str, ours: tuple[int, ...], *, force: bool) -> None:
    from dbos_migrate.engine import database as db

    sessions = db.other_sessions(maint, name, ours)
    if sessions and not force:
        raise DatabaseError(
            f"database {name!r} has {len(sessions)} other session(s): {'; '.join(sessions)}; nothing was dropped",
            "end them (stop the app), or pass --force to end them (DROP DATABASE ... WITH (FORCE))",
        )


def confirm(run: Run[DropOptions]) -> None:
    """The typed confirmation `drop` always needs, production or not (docs/behaviour.md):
    the app database name on a terminal; without one, --yes or --confirm NAME; else exit 5."""
    where = "production database" if run.target.production else "database"
    confirm_by_name(run, refusing=f"drop {where}", prompt="drop it", instead="drop it", done="nothing was dropped")
