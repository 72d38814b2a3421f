"""`status`, `wait`, `history` and `url`: read-only looks at the target, returned as typed results."""

from __future__ import annotations

from dbos_migrate.context import Context
from dbos_migrate.engine.frame import (
    announce,
    connect_maintenance,
    load_config,
    resolve_target,
)
from dbos_migrate.engine.options import HistoryOptions, StatusOptions, TargetOptions, UrlOptions, WaitOptions
from dbos_migrate.errors import DatabaseError, MigrateError, UsageError
from dbos_migrate.events import Finished, Sink
from dbos_migrate.model import HistoryReport, StatusReport
from dbos_migrate.settings.config import Config
from dbos_migrate.settings.target import Target
from dbos_migrate.verbs.recovery import last_run


def status(ctx: Context, options: StatusOptions, emit: Sink) -> StatusReport:
    """Reachability, version, latency, existence, lock holder and recent runs, read-only."""
    from dbos_migrate.engine import database as db

    report = StatusReport()
    try:
        cfg, target, _, scrub, report.where = announce(ctx, options, emit, "status", early=report.where)
        app_name = db.application_name("status")
        start = ctx.clock()
        try:
            conn = db.connect(
                target.app, scrub, app_name=app_name, where="connecting to the app database", read_only=True
            )
            report.exists = True
        except db.DatabaseMissing:
            report.exists = False
            conn = connect_maintenance(
                target.instance, scrub, app_name, None, purpose="to look for the app database", read_only=True
            )
        with db.closing(conn):
            conn.execute("SELECT 1")
            report.latency_ms = round((ctx.clock() - start) * 1000, 1)
            report.reachable = True
            report.server_version = db.server_version(conn)
            report.standby = db.in_recovery(conn)
            report.lock_holder = db.lock_holder(conn, db.lock_key(target.app_database), target.app_database)
            if report.exists:
                report.recent_runs = db.read_history(conn, 10, schema=db.check_history_schema(options.history_schema))
                report.last_run = last_run(report.recent_runs, report.where, options)
        from dbos_migrate.engine.sysdb import inspect

        report.system_database = inspect(target, scrub, app_name, cfg.system_schema if cfg else None)
    except DatabaseError as exc:
        if not report.reachable:
            report.unreachable_reason = exc.message
        report.error = exc
    except MigrateError as exc:
        report.error = exc
    emit(Finished(report))
    return report


def wait(ctx: Context, options: WaitOptions, emit: Sink) -> StatusReport:
    """`wait`: until the target server accepts connections, like dbmate's `wait`, retrying
    with the backoff of `--wait` for at most `options.wait` seconds (docs/behaviour.md).
    A missing app database counts as accepting: `up` creates it. Read-only."""
    from dbos_migrate.engine import database as db
    from dbos_migrate.events import WaitingForServer

    report = StatusReport(verb="wait")
    try:
        _, target, _, scrub, report.where = announce(ctx, options, emit, "wait", early=report.where)
        start = ctx.clock()
        try:
            conn = db.connect_waiting(
                target.app,
                scrub,
                dbname=None,
                app_name=db.application_name("wait"),
                wait=options.wait,
                on_retry=lambda left, reason: emit(WaitingForServer(left, reason)),
                where=f"waiting for {target.app_url.masked()}",
            )
        except db.DatabaseMissing:
            report.exists = False
        else:
            with db.closing(conn):
                report.exists = True
                report.server_version = db.server_version(conn)
        report.reachable = True
        report.latency_ms = round((ctx.clock() - start) * 1000, 1)
    except DatabaseError as exc:
        report.unreachable_reason = exc.message
        report.error = exc
    except MigrateError as exc:
        report.error = exc
    emit(Finished(report))
    return report


def history(ctx: Context, options: HistoryOptions, emit: Sink) -> HistoryReport:
    """Recent history rows, newest first; with `run_id`, every row of that one run."""
    from dbos_migrate.engine import database as db

    limit, run_id = options.limit, options.run_id
    report = HistoryReport(run_id=run_id)
    try:
        _, target, _, scrub, report.where = announce(ctx, options, emit, "history", early=report.where)
        try:
            conn = db.connect(
                target.app,
                scrub,
                app_name=db.application_name("history"),
                where="connecting to the app database",
                read_only=True,
            )
        except db.DatabaseMissing:
            raise DatabaseError(f"app database {target.app_database!r} does not exist: no history") from None
        with db.closing(conn):
            report.exists = True
            schema = db.check_history_schema(options.history_schema)
            report.runs = db.read_history(conn, limit, run_id=run_id, schema=schema)
        if run_id is not None and not report.runs:
            raise UsageError(f"no run {run_id!r} in the history of {target.app_database}", "list runs with `history`")
    except MigrateError as exc:
        report.error = exc
    emit(Finished(report))
    return report


def resolve_only(ctx: Context, options: TargetOptions) -> Target:
    """The target for `url`; a missing config file is fine when the command line names the database."""
    cfg: Config | None
    try:
        cfg = load_config(ctx, options)
    except UsageError as exc:
        if getattr(exc, "problems", None) or not (options.db_url or options.app_db_name):
            raise
        cfg = None
    return resolve_target(ctx, cfg, options)


def url(ctx: Context, options: UrlOptions) -> str:
    """The app database URL, like `dbos-cloud db url`: password masked unless asked for."""
    target = resolve_only(ctx, options)
    app = target.app_url
    password = target.instance.eff.password
    if password is not None and app.password is None:
        app = app.with_password(password)  # from PGPASSWORD, .pgpass or a service file
    return app.masked() if not options.show_password else app.text
