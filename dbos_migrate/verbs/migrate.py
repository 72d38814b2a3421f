"""`up`, `down` and `plan`: ensure the app database, run the commands under the lock.

The steps are those of docs/behaviour.md ("up, step by step", "down", "The production
guard"); each verb is a body for the shared frame in frame.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeGuard

from dbos_migrate.context import Context
from dbos_migrate.engine.frame import History, Run, maintenance_connection, run_commands, run_steps
from dbos_migrate.engine.options import (
    ChangeOptions,
    ConfirmOptions,
    DownOptions,
    LockOptions,
    PlanOptions,
    TargetOptions,
    UpOptions,
)
from dbos_migrate.errors import DatabaseError, UsageError
from dbos_migrate.events import GuardWarning, Notice, Sink, WaitingForServer
from dbos_migrate.model import CommandResult, RunReport
from dbos_migrate.settings.config import Config
from dbos_migrate.verbs.confirm import confirm_by_name

if TYPE_CHECKING:
    import psycopg

    from dbos_migrate.engine.lease import Lease
    from dbos_migrate.engine.runner import Interrupts


def up(ctx: Context, options: UpOptions, emit: Sink) -> RunReport:
    """Create the app database if missing, then run `database.migrate` in order, under the lock."""
    return run_steps("up", ctx, options, emit, _up)


def down(ctx: Context, options: DownOptions, emit: Sink) -> RunReport:
    """Run `database.rollback` in order against an existing app database, behind the guard."""
    return run_steps("down", ctx, options, emit, _down)


def plan(ctx: Context, options: PlanOptions, emit: Sink) -> RunReport:
    """What `up` would do, without doing it: `up --dry-run` under another name."""
    return run_steps("plan", ctx, replace(options, dry_run=True), emit, _plan)


def _plan(run: Run[PlanOptions], interrupts: Interrupts) -> None:
    commands = run.commands(run.config.database.migrate, "migrate", run.command_env())
    run.report.planned = [shown for _, shown in commands]
    run.ensure_password()
    _dry_run(run, create=True)


def _up(run: Run[UpOptions], interrupts: Interrupts) -> None:
    commands = run.commands(run.config.database.migrate, "migrate", run.command_env())
    run.report.planned = [shown for _, shown in commands]
    run.ensure_password()
    if run.options.dry_run:
        _dry_run(run, create=not run.options.no_create, system_db=run.options.system_db)
        return
    if run.target.production:
        run.emit(Notice(f"target is PRODUCTION ({run.target.production_reason}): {run.report.where.target}", "warning"))
    if not commands:
        run.emit(Notice("database.migrate lists no commands: only the app database is ensured"))
    execute(run, commands, "up", interrupts, create=not run.options.no_create)


def require_rollback(run: Run[TargetOptions]) -> None:
    if not run.config.database.rollback:
        raise UsageError(
            f"{run.config.file} declares no rollback commands (database.rollback is missing or empty)",
            "declare them in the order they should run, e.g.\n"
            "      database:\n        rollback:\n          - " + rollback_example(run.config),
        )


def require_app_database(run: Run[TargetOptions]) -> None:
    """`down` needs an existing app database: connect once to learn that (exit 3 if missing)."""
    from dbos_migrate.engine import database as db

    run.ensure_password()
    try:
        db.connect(
            run.target.app, run.scrub, app_name=db.application_name("down"), where="checking the app database"
        ).close()
    except db.DatabaseMissing:
        raise DatabaseError(f"app database {run.target.app_database!r} does not exist: nothing to roll back") from None


def _down(run: Run[DownOptions], interrupts: Interrupts) -> None:
    require_rollback(run)
    down_body(run, interrupts)


def down_body(run: Run[DownOptions], interrupts: Interrupts) -> None:
    """The rollback itself: the commands, the dry run or the guard, then the run under the lock."""
    commands = run.commands(run.config.database.rollback, "rollback", run.command_env())
    run.report.planned = [shown for _, shown in commands]
    if run.options.dry_run:
        run.ensure_password()
        _dry_run(run, create=False)
        return
    guard(run)
    run.ensure_password()
    execute(run, commands, "down", interrupts, create=False)


def rollback_example(cfg: Config) -> str:
    """A rollback command in the app's own toolchain, for the hint of a missing rollback list."""
    if cfg.language in ("node", "typescript") or (cfg.language is None and cfg.package_name is not None):
        return (
            "npx knex migrate:rollback   (or: npx prisma migrate resolve / npx typeorm migration:revert / drizzle-kit)"
        )
    return "alembic downgrade -1"


def guard(run: Run[ConfirmOptions]) -> None:
    """On production, `down` needs the app database name typed, --confirm NAME, or --yes."""
    if not run.target.production:
        return
    run.emit(GuardWarning(run.report.where, tuple(run.report.planned)))
    confirm_by_name(
        run, refusing="roll back production database", prompt="roll it back", instead="run it", done="nothing was run"
    )


def _dry_run(run: Run[LockOptions], *, create: bool, system_db: str = "auto") -> None:
    """Report the plan; connect only to learn whether the app database exists."""
    from dbos_migrate.engine import database as db

    try:
        conn = db.connect(
            run.target.app,
            run.scrub,
            app_name=db.application_name("dry-run"),
            where="checking the app database",
            read_only=True,
        )
        run.report.exists = True
    except db.DatabaseMissing:
        run.report.exists = False
        conn = maintenance_connection(run, db.application_name("dry-run"), purpose="to check the server")
    with db.closing(conn):  # a standby would refuse the real run: the dry run says so, the same way
        db.refuse_standby(conn, run.report.where.target or "")
    going_up = run.report.verb in ("up", "plan")
    name = run.target.app_database
    if run.report.exists:
        run.emit(Notice(f"dry run: app database {name!r} exists"))
    elif going_up and create:
        run.emit(Notice(f"dry run: app database {name!r} does not exist and would be created"))
    else:
        raise DatabaseError(
            f"app database {name!r} does not exist" + (" (--no-create)" if going_up else ": nothing to roll back"),
        )
    if going_up:
        _dry_run_system_database(run, system_db)
    for i, shown in enumerate(run.report.planned, 1):
        run.emit(Notice(f"  would run [{i}/{len(run.report.planned)}] {shown}"))
    run.emit(Notice(f"dry run: {len(run.report.planned)} command(s) would run; nothing was changed"))


def _dry_run_system_database(run: Run[TargetOptions], system_db: str) -> None:
    """What `up` would do to the system database, from a read-only look at it."""
    from dbos_migrate.engine import database as db
    from dbos_migrate.engine.sysdb import inspect

    seen = inspect(run.target, run.scrub, db.application_name("dry-run"), run.config.system_schema)
    run.report.system_database = seen
    if seen.kind != "postgresql":
        text = f"system database {seen.url} is not PostgreSQL: left to the app"
    elif system_db == "skip":
        text = f"system database {seen.url}: left alone (--system-db skip)"
    elif seen.exists is False:
        text = f"system database {seen.url} does not exist and would be created"
    elif seen.exists:
        text = f"system database {seen.url} exists, DBOS schema version {seen.schema_version or 'none yet'}"
    else:
        text = f"system database {seen.url}: {seen.action}"
    run.emit(Notice(f"dry run: {text}"))


def open_app_database(
    run: Run[ChangeOptions], verb: str, create: bool, lock_deadline: float
) -> psycopg.Connection[Any]:
    """The app database, ensured (engine/ensure.py) with the migration lock held on the
    returned connection; what is verb-specific here is the refusal of a missing database."""
    from dbos_migrate.engine import database as db
    from dbos_migrate.engine.ensure import ensure_database

    target = run.target
    try:
        ensured = ensure_database(
            run, target.app, kind="app", verb=verb, deadline=lock_deadline, create=create, keep_lock=True
        )
    except db.DatabaseMissing:
        hint = "drop --no-create to let dbos-migrate create it" if verb == "up" else None
        raise DatabaseError(
            f"app database {target.app_database!r} does not exist"
            + (": nothing to roll back" if verb == "down" else " and --no-create was given"),
            hint,
        ) from None
    run.report.created = ensured.created
    return ensured.conn


def _locked(
    run: Run[ChangeOptions], direction: str, create: bool, lock_deadline: float, run_id: str
) -> tuple[psycopg.Connection[Any], float | None]:
    """Open the app database, take the lock, then the lease (docs/reliability.md). Until
    then nothing has run, so a connection lost meanwhile (a server restart) is ridden out:
    reconnect and wait again, each outage within --wait, the whole within --lock-timeout.
    Returns the lock's connection and the lease's seconds left (None: no lease kept)."""
    import time

    from dbos_migrate.engine import database as db
    from dbos_migrate.engine import lease as leases

    opts, name = run.options, run.target.app_database
    while True:
        conn: psycopg.Connection[Any] | None = None
        try:
            conn = open_app_database(run, direction, create, lock_deadline)
            if not opts.no_history:  # the history's objects first: the lease lives in its schema
                db.check_history(conn, db.check_history_schema(opts.history_schema))
            deadline = time.monotonic() + max(lock_deadline - run.ctx.clock(), 0)
            left = leases.acquire(
                conn,
                name,
                run_id,
                max(opts.lease_ttl, leases.MIN_TTL),
                deadline,
                lambda text, level: run.emit(Notice(text, level)),
                keep=not opts.no_history,
                schema=opts.history_schema,
            )
            return conn, left
        except Exception as exc:
            import psycopg

            # Lost after connecting (not a failure to connect: connect_waiting had its --wait).
            lost = isinstance(exc, db.ConnectionLost) or (conn is not None and conn.closed)
            db.closing_now(conn)
            if not lost or opts.wait <= 0 or run.ctx.clock() >= lock_deadline:
                if isinstance(exc, psycopg.Error):
                    raise db.classify(exc, run.scrub, where="taking the migration lock") from None
                raise exc from None
            reason = exc.message if isinstance(exc, DatabaseError) else db.describe(exc, run.scrub)
            run.emit(WaitingForServer(opts.wait, f"the connection was lost while waiting for the lock ({reason})"))
        except BaseException:
            db.closing_now(conn)
            raise


def execute(
    run: Run[ChangeOptions],
    commands: list[tuple[str, str]],
    direction: str,
    interrupts: Interrupts,
    *,
    create: bool,
) -> None:
    """Open (or create) the app database, take the lock and the lease, provision the system
    database (up), run the commands with the lock and lease verified before and after each,
    record history."""
    from dbos_migrate.engine import database as db
    from dbos_migrate.engine.lease import Lease

    opts = run.options
    if _is_up(run):
        from dbos_migrate.engine.sysdb import check_server_first

        check_server_first(run)
    lock_deadline = run.ctx.clock() + opts.lock_timeout
    run_id = db.new_run_id()
    conn, left = _locked(run, direction, create, lock_deadline, run_id)
    key = db.lock_key(run.target.app_database)
    lease = None
    if left is not None:
        lease = Lease(
            run.target.app,
            run.scrub,
            run.target.app_database,
            run_id,
            max(opts.lease_ttl, 2.0),
            left,
            interrupts,
            opts.grace,
            opts.history_schema,
        ).start()
    with db.closing(conn):
        try:
            _execute_locked(run, commands, direction, interrupts, conn, key, run_id, lease)
        finally:
            if lease is not None:
                lease.release(conn)
            db.release_lock(conn, key)


def _execute_locked(
    run: Run[ChangeOptions],
    commands: list[tuple[str, str]],
    direction: str,
    interrupts: Interrupts,
    conn: psycopg.Connection[Any],
    key: int,
    run_id: str,
    lease: Lease | None,
) -> None:
    from dbos_migrate.engine import database as db
    from dbos_migrate.engine.grants import grant_app_role

    opts = run.options
    run.report.exists = True
    ups = run if _is_up(run) else None  # `up` provisions the databases and grants; `down` neither
    if ups is not None:
        from dbos_migrate.engine import appdb
        from dbos_migrate.engine.sysdb import provision

        toolchain = provision(ups, interrupts, lambda found: appdb.with_app_database(ups, found))
        appdb.provision(ups, interrupts, toolchain)
    run.report.run_id = run_id
    history = History(run, conn, run_id, direction)
    history.verify()

    def finished(result: CommandResult) -> None:
        run.report.commands.append(result)
        history.record(result)

    def before() -> None:
        db.verify_lock(conn, key, run.scrub)
        if lease is not None:
            lease.check()

    after = _after_each(conn, key, run, history, lease)

    # A first run whose commands all exit 0 but change nothing may hide a swallowed failure.
    hist = opts.history_schema
    first = direction == "up" and bool(commands) and not db.has_history(conn, hist)
    fingerprint = db.schema_fingerprint(conn, hist) if first else None
    try:
        run_commands(
            run,
            commands,
            interrupts,
            env=run.command_env(),
            before_each=before,
            on_result=finished,
            after_each=after,
        )
        if fingerprint is not None and db.schema_fingerprint(conn, hist) == fingerprint:
            run.report.schema_unchanged = True
            run.emit(
                Notice(
                    f"the migrations changed nothing: every command exited 0, but the schema of {run.target.app_database!r}, "
                    "which had no history, is the same as before; a command may have swallowed its own failure "
                    "(see its output above)",
                    "warning",
                )
            )
        role = ups.options.app_role if ups is not None else None
        if role:
            schemas = grant_app_role(conn, run.target.app_database, role, run.scrub, opts.history_schema)
            run.emit(Notice(f"granted role {role!r} runtime privileges on schemas: {', '.join(schemas) or '(none)'}"))
    finally:
        history.flush()


def _is_up(run: Run[ChangeOptions]) -> TypeGuard[Run[UpOptions]]:
    """`execute` serves `up` and `down`; only `up`'s record has the system database, the
    datasource and the runtime role to provision and grant."""
    return isinstance(run.options, UpOptions)


def _after_each(
    conn: psycopg.Connection[Any], key: int, run: Run[TargetOptions], history: History, lease: Lease | None
) -> Callable[[CommandResult], None]:
    """After each command: the lease was renewed and the lock is still held; otherwise no
    further command starts, and the command's history row says whether another run could
    have overlapped (docs/reliability.md)."""
    from dbos_migrate.engine import database as db

    def after(result: CommandResult) -> None:
        during = f"command {result.index}"
        if lease is not None:
            try:
                lease.check(during)
            except db.ConnectionLost:
                history.amend_last("stopped: the migration lease could not be renewed; no other run overlapped it")
                raise
        try:
            db.verify_lock(conn, key, run.scrub, during=during)
        except db.LockLost as lost:
            if lease is not None and lease.held_throughout():
                history.amend_last(
                    "the migration lock's session was lost while this command ran; the lease was held "
                    "throughout, so no other run overlapped it"
                )
                raise db.LockLost(
                    f"the migration lock was lost while {during} ran (its session ended); the lease was held throughout, "
                    "so no other run overlapped it; no further command was started",
                    lost.hint,
                ) from None
            history.amend_last("the migration lock was lost while this command ran; another run may have overlapped")
            raise

    return after
