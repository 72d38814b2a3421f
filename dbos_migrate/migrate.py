"""The verbs: `up`, `down`, `plan`, `status`, `history`, `url`, as plain functions.

They orchestrate config → target → database/runner and emit events; they never print.
Each returns a RunReport (or a status/history result) whose `error` holds the failure,
so a caller gets the partial record of a failed run as well as its exit code.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, BinaryIO

from dbos_migrate import config as config_mod
from dbos_migrate.config import Config, Text
from dbos_migrate.errors import (
    CommandFailed,
    CommandTimeout,
    DatabaseError,
    GuardRefused,
    Interrupted,
    MigrateError,
    UsageError,
)
from dbos_migrate.events import (
    CommandFinished,
    CommandStarted,
    DatabaseReady,
    Finished,
    GuardWarning,
    LockAcquired,
    LockHolder,
    Notice,
    Resolved,
    RunReport,
    Sink,
    WaitingForLock,
    WaitingForServer,
)
from dbos_migrate.scrub import Scrubber
from dbos_migrate.target import Target, command_env, resolve

if TYPE_CHECKING:
    import psycopg

    from dbos_migrate.runner import CommandResult, Interrupts

Ask = Callable[[str], "str | None"]


@dataclass(frozen=True)
class Options:
    """Everything a verb needs from the command line, plus the environment it runs in."""

    config: str | None = None
    db_url: str | None = None
    app_db_name: str | None = None
    production: bool = False
    maintenance_db: str | None = None
    lock_timeout: float = 300.0
    command_timeout: float | None = None
    wait: float = 0.0
    dry_run: bool = False
    no_create: bool = False
    no_history: bool = False
    app_role: str | None = None
    yes: bool = False
    confirm: str | None = None
    note: str | None = None
    grace: float = 5.0
    environ: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))
    stdout: BinaryIO | None = None
    stderr: BinaryIO | None = None
    # A gate.StartGate the caller already entered (the CLI does, before loading anything
    # heavy); without one, the run enters its own just before loading the driver.
    gate: Any = None


@dataclass
class _Context:
    options: Options
    config: Config
    target: Target
    scrub: Scrubber
    report: RunReport
    emit: Sink
    gate: Any = None  # a gate.StartGate while this run is starting up


def load_config(options: Options) -> Config:
    return config_mod.load(options.config, options.environ)


def _resolve(cfg: Config | None, options: Options) -> Target:
    return resolve(
        cfg,
        db_url=options.db_url,
        app_db_name=options.app_db_name,
        production=options.production,
        environ=options.environ,
    )


def _prepare(options: Options, report: RunReport, emit: Sink) -> _Context:
    report.config_path = options.config or config_mod.DEFAULT_CONFIG
    cfg = load_config(options)
    report.warnings.extend(cfg.warnings)
    for warning in cfg.warnings:
        emit(Notice(warning.render(), "warning"))
    target = _resolve(cfg, options)
    secrets: list[str | None] = list(target.secrets)
    if cfg.database.password is not None:
        secrets.append(cfg.database.password.value)
    scrub = Scrubber(secrets)
    report.extra["app_name"] = cfg.name.value if cfg.name is not None else None
    report.app_database = target.app_database
    report.app_database_source = target.app_database_source
    report.target = target.instance.masked()
    report.target_source = target.source
    report.production = target.production
    report.production_reason = target.production_reason
    emit(Resolved(report))
    return _Context(options, cfg, target, scrub, report, emit)


def _commands(ctx: _Context, items: tuple[Text, ...], key: str) -> list[tuple[str, str]]:
    """(text to run, text to show) for each command; an unset ${VAR} in one is an error now."""
    out = []
    for i, item in enumerate(items):
        text = item.require(ctx.config.file, f"running database.{key}[{i}]")
        out.append((text, ctx.scrub.text(item.raw)))
    return out


# ---------------------------------------------------------------------------- up / down


def up(options: Options, emit: Sink) -> RunReport:
    """Create the app database if missing, then run `database.migrate` in order, under the lock."""
    return _run_verb("up", options, emit, None)


def down(options: Options, emit: Sink, ask: Ask | None = None) -> RunReport:
    """Run `database.rollback` in order against an existing app database, behind the guard.

    `ask` prompts a person on a terminal; None means nobody can answer (CI, pipes).
    """
    return _run_verb("down", options, emit, ask)


def _run_verb(verb: str, options: Options, emit: Sink, ask: Ask | None) -> RunReport:
    def body(ctx: _Context, interrupts: Interrupts) -> None:
        if verb in ("up", "plan"):
            _up(ctx, interrupts)
        else:
            _down(ctx, interrupts, ask)

    return run_steps(verb, options, emit, body)


def run_steps(
    verb: str,
    options: Options,
    emit: Sink,
    body: Callable[[_Context, Interrupts], None],
    *,
    finish: bool = True,
) -> RunReport:
    """The frame every run shares: signals handled, config and target resolved, every
    failure kept in the report, and (unless `finish` is False) the Finished event sent."""
    from dbos_migrate.runner import Interrupts

    report = RunReport(verb, dry_run=options.dry_run)
    try:
        with Interrupts() as interrupts:
            body(_prepare(options, report, emit), interrupts)
    except MigrateError as exc:
        report.error = exc
    except KeyboardInterrupt:
        report.error = Interrupted(2)
    if finish:
        emit(Finished(report))
    return report


def _up(ctx: _Context, interrupts: Interrupts) -> None:
    commands = _commands(ctx, ctx.config.database.migrate, "migrate")
    ctx.report.planned = [shown for _, shown in commands]
    if ctx.options.dry_run:
        _dry_run(ctx, create=not ctx.options.no_create)
        return
    if ctx.target.production:
        ctx.emit(
            Notice(f"target is PRODUCTION ({ctx.target.production_reason}): {ctx.report.target}", "warning")
        )
    if not commands:
        ctx.emit(Notice("database.migrate lists no commands: only the app database is ensured"))
    _execute(ctx, commands, "up", interrupts, create=not ctx.options.no_create)


def _down(ctx: _Context, interrupts: Interrupts, ask: Ask | None) -> None:
    if not ctx.config.database.rollback:
        raise UsageError(
            f"{ctx.config.file} declares no rollback commands (database.rollback is missing or empty)",
            "declare them in the order they should run, e.g.\n"
            "      database:\n        rollback:\n          - alembic downgrade -1",
        )
    commands = _commands(ctx, ctx.config.database.rollback, "rollback")
    ctx.report.planned = [shown for _, shown in commands]
    if ctx.options.dry_run:
        _dry_run(ctx, create=False)
        return
    _guard(ctx, ask)
    _execute(ctx, commands, "down", interrupts, create=False)


def _guard(ctx: _Context, ask: Ask | None) -> None:
    """SPEC §6: on production, down needs the app database name typed, --confirm NAME, or --yes."""
    if not ctx.target.production:
        return
    name = ctx.target.app_database
    ctx.emit(GuardWarning(ctx.report, tuple(ctx.report.planned)))
    how = f"pass --confirm {name} (or --yes) to run it without a prompt"
    if ctx.options.confirm is not None:
        if ctx.options.confirm == name:
            return
        raise GuardRefused(
            f"--confirm {ctx.options.confirm!r} does not match the app database {name!r}; nothing was run",
            how,
        )
    if ctx.options.yes:
        return
    if ask is None:
        raise GuardRefused(
            f"refusing to roll back production database {name!r} without confirmation (no terminal to ask on); "
            "nothing was run",
            how,
        )
    if ctx.options.gate is not None:
        ctx.options.gate.release()  # nobody else waits on a person typing
    answer = ask(f"Type the app database name ({name}) to roll it back: ")
    if answer is None or answer.strip() != name:
        raise GuardRefused("confirmation did not match the app database name; nothing was run", how)


def _dry_run(ctx: _Context, *, create: bool) -> None:
    """Report the plan; connect only to learn whether the app database exists."""
    from dbos_migrate import database as db

    try:
        conn = db.connect(
            ctx.target.app_url,
            ctx.scrub,
            app_name=db.application_name("dry-run"),
            where="checking the app database",
        )
        conn.close()
        ctx.report.exists = True
    except db.DatabaseMissing:
        ctx.report.exists = False
    going_up = ctx.report.verb in ("up", "plan")
    if ctx.report.exists:
        ctx.emit(Notice(f"dry run: app database {ctx.target.app_database!r} exists"))
    elif going_up and create:
        ctx.emit(
            Notice(f"dry run: app database {ctx.target.app_database!r} does not exist and would be created")
        )
    else:
        raise DatabaseError(
            f"app database {ctx.target.app_database!r} does not exist"
            + (" (--no-create)" if going_up else ": nothing to roll back"),
        )
    for i, shown in enumerate(ctx.report.planned, 1):
        ctx.emit(Notice(f"  would run [{i}/{len(ctx.report.planned)}] {shown}"))
    ctx.emit(Notice(f"dry run: {len(ctx.report.planned)} command(s) would run; nothing was changed"))


def _open_app_database(
    ctx: _Context, verb: str, create: bool, lock_deadline: float
) -> tuple[psycopg.Connection[Any], bool]:
    """Connect to the app database, creating it under the creation lock when missing.

    Returns the connection and whether the migration lock is already held on it.
    """
    from dbos_migrate import database as db

    target, scrub, opts = ctx.target, ctx.scrub, ctx.options
    app_name = db.application_name(verb)

    def retrying(left: float, reason: str) -> None:
        ctx.emit(WaitingForServer(left, reason))

    try:
        existing = db.connect_waiting(
            target.app_url, scrub, dbname=None, app_name=app_name, wait=opts.wait,
            on_retry=retrying, where=f"connecting to {target.app_url.masked()}",
        )  # fmt: skip
        return existing, False
    except db.DatabaseMissing:
        if not create:
            hint = None
            if verb == "up":
                hint = "drop --no-create to let dbos-migrate create it"
            raise DatabaseError(
                f"app database {target.app_database!r} does not exist"
                + (": nothing to roll back" if verb == "down" else " and --no-create was given"),
                hint,
            ) from None
    maint = _maintenance_connection(ctx, app_name)
    key = db.lock_key(target.app_database)
    with db.closing(maint):
        _take_lock(ctx, maint, key, maint.info.dbname, lock_deadline)
        created = False
        if not db.database_exists(maint, target.app_database):
            created = db.create_database(
                maint, target.app_database, scrub, template0=maint.info.dbname == "template1"
            )
        ctx.report.created = created
        conn = db.connect(
            target.app_url, scrub, app_name=app_name, where=f"connecting to {target.app_url.masked()}"
        )
        # Take the app database lock before giving up the creation lock: no gap to race into.
        try:
            _take_lock(ctx, conn, key, target.app_database, lock_deadline)
        except BaseException:
            conn.close()
            raise
        db.release_lock(maint, key)
    ctx.emit(DatabaseReady(target.app_database, created))
    return conn, True


def _maintenance_connection(ctx: _Context, app_name: str) -> psycopg.Connection[Any]:
    from dbos_migrate import database as db

    names = [ctx.options.maintenance_db] if ctx.options.maintenance_db else ["postgres", "template1"]
    last: DatabaseError | None = None
    for name in names:
        try:
            return db.connect(
                ctx.target.instance,
                ctx.scrub,
                dbname=name,
                app_name=app_name,
                where=f"connecting to maintenance database {name!r}",
            )
        except DatabaseError as exc:
            last = exc
    assert last is not None
    raise DatabaseError(
        f"the app database {ctx.target.app_database!r} does not exist, and no maintenance database could be "
        f"reached to create it: {last.message}",
        "pass --maintenance-db NAME, or have an admin create the database and use --no-create",
    )


def _release_gates(ctx: _Context) -> None:
    """Leave the start-up gate(s): the run has reached the lock, start-up is over."""
    for gate in (ctx.gate, ctx.options.gate):
        if gate is not None:
            gate.release()


def _take_lock(
    ctx: _Context, conn: psycopg.Connection[Any], key: int, database: str, deadline: float
) -> None:
    from dbos_migrate import database as db

    start = time.monotonic()

    def waiting(holder: LockHolder | None, left: float) -> None:
        ctx.emit(WaitingForLock(holder, left))

    try:
        db.acquire_lock(
            conn, key, database, timeout=max(deadline - time.monotonic(), 0), on_wait=waiting,
            on_first_attempt=lambda: _release_gates(ctx),
        )  # fmt: skip
    except Exception as exc:
        if isinstance(exc, MigrateError):
            raise
        import psycopg

        if isinstance(exc, psycopg.Error):
            raise db.classify(exc, ctx.scrub, where="taking the migration lock") from None
        raise
    ctx.emit(LockAcquired(time.monotonic() - start))


def _execute(
    ctx: _Context, commands: list[tuple[str, str]], direction: str, interrupts: Interrupts, *, create: bool
) -> None:
    from dbos_migrate.gate import StartGate

    opts = ctx.options
    lock_deadline = time.monotonic() + opts.lock_timeout
    instance = ctx.target.instance
    ctx.gate = (
        opts.gate or StartGate(f"{instance.effective_host}:{instance.port}/{ctx.target.app_database}").enter()
    )
    try:
        from dbos_migrate import database as db  # loads the driver: after the gate, on purpose

        conn, locked = _open_app_database(ctx, direction, create, lock_deadline)
    finally:
        _release_gates(ctx)
        ctx.gate = None

    key = db.lock_key(ctx.target.app_database)
    with db.closing(conn):
        if not locked:
            _take_lock(ctx, conn, key, ctx.target.app_database, lock_deadline)
            ctx.emit(DatabaseReady(ctx.target.app_database, False))
        ctx.report.exists = True
        if opts.app_role and not db.role_exists(conn, opts.app_role):
            raise UsageError(
                f"--app-role {opts.app_role!r}: no such role; dbos-migrate grants privileges but does not create roles",
                f"create it first, e.g. CREATE ROLE {opts.app_role} LOGIN PASSWORD '...'",
            )
        run_id = db.new_run_id()
        ctx.report.run_id = run_id
        history = _History(ctx, conn, run_id, direction)

        def finished(result: CommandResult) -> None:
            ctx.report.commands.append(result)
            history.record(result)

        try:
            run_commands(
                ctx, commands, interrupts, env=command_env(ctx.target, opts.environ, ctx.config.env_map),
                before_each=lambda: db.check_alive(conn, ctx.scrub), on_result=finished,
            )  # fmt: skip
            if opts.app_role:
                schemas = db.grant_app_role(conn, ctx.target.app_database, opts.app_role, ctx.scrub)
                ctx.emit(
                    Notice(
                        f"granted role {opts.app_role!r} runtime privileges on schemas: {', '.join(schemas) or '(none)'}"
                    )
                )
        finally:
            history.flush()
            db.release_lock(conn, key)


def run_commands(
    ctx: _Context,
    commands: list[tuple[str, str]],
    interrupts: Interrupts,
    *,
    env: Mapping[str, str],
    on_result: Callable[[CommandResult], None],
    before_each: Callable[[], None] | None = None,
    label: str = "",
    failure_hint: str | None = None,
) -> None:
    """Run (text, shown) commands in order with `up`'s rules: stream, stop at the first failure.

    `on_result` records each result (report, history) before any failure is raised;
    `label` ("rehearsal ") names the kind of command in headers and messages.
    """
    from dbos_migrate.runner import CommandInterrupted, run_command

    opts = ctx.options
    out = opts.stdout or sys.stdout.buffer
    err = opts.stderr or sys.stderr.buffer
    total = len(commands)
    for index, (text, shown) in enumerate(commands, start=1):
        if before_each is not None:
            before_each()
        ctx.emit(CommandStarted(index, total, f"({label.strip()}) {shown}" if label else shown))
        try:
            result = run_command(
                index, text, shown, cwd=str(ctx.config.directory), env=env, scrub=ctx.scrub,
                out=out, err=err, timeout=opts.command_timeout, interrupts=interrupts, grace=opts.grace,
            )  # fmt: skip
        except CommandInterrupted as stop:
            on_result(stop.result)
            ctx.emit(CommandFinished(stop.result, total))
            raise Interrupted(stop.signum, f"interrupted during {label}command {index}: {shown}") from None
        on_result(result)
        ctx.emit(CommandFinished(result, total))
        if result.status == "timed_out":
            raise CommandTimeout(
                f"{label}command {index} ran past --command-timeout {opts.command_timeout:g}s and was stopped: {shown}",
                "raise --command-timeout, or make the migration faster",
            )
        if not result.ok:
            raise CommandFailed(
                f"{label}command {index} failed with {result.describe_end()}: {shown}", failure_hint
            )


class _History:
    """Writes one history row per command; keeps rows it could not write for a later retry."""

    def __init__(self, ctx: _Context, conn: psycopg.Connection[Any], run_id: str, direction: str) -> None:
        self.ctx = ctx
        self.conn = conn
        self.run_id = run_id
        self.direction = direction
        self.pending: list[Any] = []
        self.enabled = not ctx.options.no_history

    def record(self, result: CommandResult) -> None:
        if not self.enabled:
            return
        from dbos_migrate import database as db

        row = db.HistoryRow(
            run_id=self.run_id,
            direction=self.direction,
            command_index=result.index,
            command=result.command,
            started_at=result.started_at,
            finished_at=result.finished_at,
            exit_code=result.exit_code,
            status=result.status,
            instance=self.ctx.report.target or "",
            note=self.ctx.options.note,
        )
        self.pending.append(row)
        self._write(self.conn)

    def _write(self, conn: psycopg.Connection[Any]) -> bool:
        import psycopg

        from dbos_migrate import database as db

        try:
            while self.pending:
                db.write_history(conn, self.pending[0])
                self.pending.pop(0)
            self.ctx.report.history_written = True
            return True
        except psycopg.errors.InsufficientPrivilege:
            self.enabled = False
            self.pending.clear()
            self.ctx.emit(
                Notice(
                    "history not recorded: the role may not create schema dbos_migrate (use --no-history to silence)",
                    "warning",
                )
            )
            return True
        except psycopg.Error:
            return False

    def flush(self) -> None:
        """Write what is left; after a lost connection, through a fresh one if the server is back."""
        if not self.enabled or not self.pending:
            return
        from dbos_migrate import database as db

        if not self.conn.closed and self._write(self.conn):
            return
        try:
            conn = db.connect(
                self.ctx.target.app_url,
                self.ctx.scrub,
                app_name=db.application_name("history"),
                where="reconnecting to record history",
            )
        except MigrateError as exc:
            self.ctx.report.history_written = False  # JSON: not every row made it
            self.ctx.emit(
                Notice(f"history not recorded for {len(self.pending)} command(s): {exc.message}", "warning")
            )
            return
        with db.closing(conn):
            if not self._write(conn):
                self.ctx.report.history_written = False
                self.ctx.emit(Notice(f"history not recorded for {len(self.pending)} command(s)", "warning"))


# ---------------------------------------------------------------------------- status, history, url


def resolve_only(options: Options) -> tuple[Config | None, Target, Scrubber]:
    """Resolve the target for `url`; a missing config file is fine when a URL names the database."""
    cfg: Config | None
    try:
        cfg = load_config(options)
    except UsageError as exc:
        if getattr(exc, "problems", None) or not (options.db_url or options.app_db_name):
            raise
        cfg = None
    target = _resolve(cfg, options)
    return cfg, target, Scrubber(target.secrets)


def status(options: Options, emit: Sink) -> RunReport:
    """Reachability, version, latency, existence, lock holder and recent runs, read-only."""
    report = RunReport("status")
    report.extra.update(
        reachable=False, server_version=None, latency_ms=None, lock_holder=None, recent_runs=[]
    )
    try:
        ctx = _prepare(options, report, emit)
        _status(ctx, report)
    except MigrateError as exc:
        report.error = exc
    emit(Finished(report))
    return report


def _status(ctx: _Context, report: RunReport) -> None:
    from dbos_migrate import database as db

    extra = report.extra
    app_name = db.application_name("status")
    start = time.monotonic()
    conn = None
    try:
        conn = db.connect(
            ctx.target.app_url, ctx.scrub, app_name=app_name, where="connecting to the app database"
        )
        report.exists = True
    except db.DatabaseMissing:
        report.exists = False
        conn = _maintenance_connection(ctx, app_name)
    except DatabaseError as exc:
        extra["unreachable_reason"] = exc.message
        return
    with db.closing(conn):
        conn.execute("SELECT 1")
        extra["latency_ms"] = round((time.monotonic() - start) * 1000, 1)
        extra["reachable"] = True
        extra["server_version"] = db.server_version(conn)
        holder = db.lock_holder(conn, db.lock_key(ctx.target.app_database), ctx.target.app_database)
        extra["lock_holder"] = holder.as_dict() if holder else None
        if report.exists:
            extra["recent_runs"] = [r.as_dict() for r in db.read_history(conn, 10)]


def history(options: Options, emit: Sink, limit: int = 20) -> RunReport:
    """Recent history rows, newest first, in report.extra['runs']."""
    from dbos_migrate import database as db

    report = RunReport("history")
    report.extra["runs"] = []
    try:
        ctx = _prepare(options, report, emit)
        try:
            conn = db.connect(
                ctx.target.app_url,
                ctx.scrub,
                app_name=db.application_name("history"),
                where="connecting to the app database",
            )
        except db.DatabaseMissing:
            raise DatabaseError(
                f"app database {ctx.target.app_database!r} does not exist: no history"
            ) from None
        with db.closing(conn):
            report.exists = True
            report.extra["runs"] = [r.as_dict() for r in db.read_history(conn, limit)]
    except MigrateError as exc:
        report.error = exc
    emit(Finished(report))
    return report


def plan(options: Options, emit: Sink) -> RunReport:
    """What `up` would do, without doing it: `up --dry-run` under another name."""
    return _run_verb("plan", replace(options, dry_run=True), emit, None)


@dataclass
class Validation:
    """The outcome of `validate`: problems are errors, warnings do not fail it."""

    config_path: str
    errors: list[Any] = field(default_factory=list)
    warnings: list[Any] = field(default_factory=list)
    error: MigrateError | None = None

    @property
    def valid(self) -> bool:
        return self.error is None

    def as_json(self) -> dict[str, Any]:
        from dbos_migrate.events import error_json

        return {
            "valid": self.valid,
            "config": self.config_path,
            "errors": [p.as_dict() for p in self.errors],
            "warnings": [p.as_dict() for p in self.warnings],
            "error": error_json(self.error),
        }


def validate(config_path: str | None, *, cloud: bool, environ: Mapping[str, str]) -> Validation:
    """Load and check a config without touching any database."""
    from dbos_migrate.errors import ConfigError

    path = config_path or config_mod.DEFAULT_CONFIG
    result = Validation(path)
    try:
        cfg = config_mod.load(path, environ)
    except ConfigError as exc:
        result.errors, result.warnings, result.error = list(exc.problems), list(exc.warnings), exc
        return result
    except MigrateError as exc:
        from dbos_migrate.errors import Problem

        result.errors = [Problem(path, 1, 1, "", exc.message, exc.hint)]
        result.error = exc
        return result
    result.warnings = list(cfg.warnings)
    problems = _app_db_name_problems(cfg)
    if problems and cfg.database.app_db_name is None:
        # A name derived from `name` is only used when the URL names no database: warn.
        result.warnings += [
            replace(p, message=p.message + " (used when the URL names no database)") for p in problems
        ]
        problems = []
    if cloud:
        from dbos_migrate.cloud import cloud_problems

        problems += cloud_problems(cfg)
    if problems:
        result.errors = problems
        result.error = ConfigError(problems, result.warnings)
    return result


def _app_db_name_problems(cfg: Config) -> list[Any]:
    """The app database name `up` would use when the URL names none: caught here, before a deploy."""
    from dbos_migrate.errors import Problem
    from dbos_migrate.target import PgUrl, resolve_app_database

    source = cfg.database.app_db_name if cfg.database.app_db_name is not None else cfg.name
    if source is None or source.missing:
        return []
    try:
        resolve_app_database(cfg, None, PgUrl())
    except UsageError as exc:
        return [Problem(cfg.file, source.line, source.column, source.path, exc.message, exc.hint)]
    return []
