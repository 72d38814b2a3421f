"""The frame every run shares: resolve, take the lock, run commands, record history.

`up`, `down`, `plan` and the rehearsal are bodies run inside `run_steps`, which handles
signals, loads the config, resolves the target and keeps every failure in the report. The
other helpers here (`take_lock`, `maintenance_connection`, `run_commands`, `History`) are
the public pieces those bodies are built from (docs/architecture.md).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from dbos_migrate.context import Context
from dbos_migrate.engine.options import ChangeOptions, CommandOptions, LockOptions, TargetOptions
from dbos_migrate.engine.scrub import SHORT_SECRET, Scrubber
from dbos_migrate.errors import (
    CommandFailed,
    CommandTimeout,
    DatabaseError,
    Interrupted,
    MigrateError,
    UsageError,
)
from dbos_migrate.events import (
    CommandFinished,
    CommandStarted,
    Finished,
    LockAcquired,
    Notice,
    Resolved,
    Sink,
    WaitingForLock,
)
from dbos_migrate.model import CommandResult, HistoryRow, LockHolder, Resolution, RunReport
from dbos_migrate.settings import config as config_mod
from dbos_migrate.settings.config import Config, Text
from dbos_migrate.settings.target import Endpoint, PgUrl, Target, command_env, parse_url, resolve

if TYPE_CHECKING:
    import psycopg

    from dbos_migrate.engine.runner import Interrupts

#: The options record of a run: a helper typed `Run[LockOptions]` takes any verb's run whose
#: record has those fields (covariant: a `Run[UpOptions]` is a `Run[LockOptions]`).
OptionsT_co = TypeVar("OptionsT_co", bound=TargetOptions, covariant=True)
#: The record a function hands back, as it came: prepare's (any verb), run_steps' (a verb that
#: runs commands: the frame reads dry_run) to the verb's body.
OptionsT = TypeVar("OptionsT", bound=TargetOptions)
CommandsT = TypeVar("CommandsT", bound=CommandOptions)


@dataclass
class Run(Generic[OptionsT_co]):
    """One run in progress: the outside world, the verb's options, what was resolved, and the report."""

    ctx: Context
    options: OptionsT_co
    config: Config
    target: Target
    scrub: Scrubber
    report: RunReport
    emit: Sink
    secrets: list[str | None]
    _warned: set[str] = field(default_factory=set)

    def add_secrets(self, secrets: Iterable[str | None]) -> None:
        """Scrub these too from now on (a second instance's password, say)."""
        self.secrets = [*self.secrets, *secrets]
        self.scrub = Scrubber(self.secrets)

    def commands(self, items: tuple[Text, ...], key: str, env: Mapping[str, str]) -> list[tuple[str, str]]:
        """(text to run, text to show) for each command; a ${VAR} without default that `env`
        lacks is an error now, before anything runs."""
        return [
            (self.config.command(item, f"running database.{key}[{i}]", env), self.scrub.text(item.raw))
            for i, item in enumerate(items)
        ]

    def command_env(self, target: Target | None = None) -> dict[str, str]:
        """The environment commands get against `target` (default: the run's own); env: entries
        left out for an unset variable are warned about once."""
        env, skipped = command_env(target or self.target, self.ctx.environ, self.config)
        for problem in skipped:
            text = problem.render()
            if text not in self._warned:
                self._warned.add(text)
                self.emit(Notice(text, "warning"))
        return env

    def ensure_password(self) -> None:
        """When the URL's password was `***` (as `dbos-cloud db url` prints it) and libpq has no
        other (PGPASSWORD, .pgpass, a service file): ask on a terminal, else stop with the fix."""
        if not self.target.password_needed:
            return
        eff = self.target.instance.eff
        who = f"{eff.get('user') or 'the user'} at {eff.describe()}"
        if self.ctx.ask is not None:
            answer = self.ctx.ask(f"Password for {who} (the URL shows ***): ", True)
            if answer:
                self.target = self.target.with_password(answer)
                self.add_secrets([answer])
                return
        raise UsageError(
            f"the URL's password is *** (as `dbos-cloud db url` prints it) and no password for {who} was found "
            "in PGPASSWORD, .pgpass or a service file",
            "export PGPASSWORD, add the password to ~/.pgpass, run on a terminal to be asked for it, "
            "or use the real URL from `dbos-cloud db url -S`",
        )


def load_config(ctx: Context, options: TargetOptions) -> Config:
    """The config, with --schema in place of system_database_schema_name when given."""
    from dataclasses import replace

    cfg = config_mod.load(options.config, ctx.environ)
    return replace(cfg, system_schema=options.schema) if options.schema else cfg


def resolve_target(ctx: Context, cfg: Config | None, options: TargetOptions, notes: list[str] | None = None) -> Target:
    """The target; `notes` receives why a recorded local server was ignored, if it was."""
    return resolve(
        cfg,
        db_url=options.db_url,
        app_db_name=options.app_db_name,
        production=options.production,
        environ=ctx.environ,
        local_server=lambda environ: local_server(environ, notes),
        sys_db_url=options.sys_db_url,
    )


def local_server(environ: Mapping[str, str], notes: list[str] | None = None) -> tuple[PgUrl, str] | None:
    """The server `dbos-migrate postgres start` left running, if any, once proven to be the
    recorded one; else None, and why in `notes` (docs/local-postgres.md)."""
    from dbos_migrate.localpg import running_server

    server = running_server(environ)
    if server is None:
        return None
    from dbos_migrate.localpg.identity import unproven

    why = unproven(server)
    if why is not None:
        if notes is not None:
            notes.append(
                f"the local server recorded by `dbos-migrate postgres start` (port {server.port}) was ignored: {why}"
            )
        return None
    return parse_url(
        server.url, what="the local server's URL"
    ), f"the local server from `dbos-migrate postgres start` (port {server.port})"


def config_secrets(cfg: Config | None, target: Target) -> list[str | None]:
    """Every secret a run knows of: the target's (URL, service file, PGPASSWORD, .pgpass,
    Docker secrets), and the config's legacy password."""
    secrets: list[str | None] = list(target.secrets)
    if cfg is not None and cfg.database.password is not None:
        secrets.append(cfg.database.password.value)
    return secrets


def resolution(ctx: Context, options: TargetOptions, cfg: Config, target: Target) -> Resolution:
    return Resolution(
        config_path=options.config or config_mod.DEFAULT_CONFIG,
        app_name=cfg.name.value if cfg.name is not None else None,
        app_database=target.app_database,
        app_database_source=target.app_database_source,
        target=target.instance.masked(),
        target_source=target.source,
        production=target.production,
        production_reason=target.production_reason,
        connection_detail=target.instance.eff.detail(),
        system_database=target.system.url_text(mask=True),
        system_database_source=target.system.source,
        warnings=list(cfg.warnings),
    )


def announce(
    ctx: Context,
    options: TargetOptions,
    emit: Sink,
    verb: str,
    *,
    dry_run: bool = False,
    early: Resolution | None = None,
) -> tuple[Config, Target, list[str | None], Scrubber, Resolution]:
    """Every verb starts here: load the config, resolve the target, and announce both (with
    the config's warnings and the target's notes), before anything connects. `early` (the
    report's Resolution) keeps the config path and warnings even if the target cannot be
    resolved."""
    if early is not None:
        early.config_path = options.config or config_mod.DEFAULT_CONFIG
    cfg = load_config(ctx, options)
    if early is not None:
        early.warnings.extend(cfg.warnings)
    for warning in cfg.warnings:
        emit(Notice(warning.render(), "warning"))
    notes: list[str] = []
    target = resolve_target(ctx, cfg, options, notes)
    for note in notes:
        emit(Notice(note, "warning"))
    where = resolution(ctx, options, cfg, target)
    emit(Resolved(verb, where, dry_run))
    secrets = config_secrets(cfg, target)
    scrub = Scrubber(secrets)
    warn_weak(scrub, emit)
    return cfg, target, secrets, scrub, where


def prepare(ctx: Context, options: OptionsT, report: RunReport, emit: Sink) -> Run[OptionsT]:
    """The Run of a verb that runs commands, once `announce` has resolved where it goes."""
    cfg, target, secrets, scrub, report.where = announce(
        ctx, options, emit, report.verb, dry_run=report.dry_run, early=report.where
    )
    return Run(ctx, options, cfg, target, scrub, report, emit, secrets)


def warn_weak(scrub: Scrubber, emit: Sink) -> None:
    """Once per run: a password too short to be masked everywhere (docs/security.md)."""
    if scrub.weak:
        emit(
            Notice(
                f"a database password is shorter than {SHORT_SECRET} characters: it is weak, and "
                "output masks it only where it stands alone; use a longer one",
                "warning",
            )
        )


def run_steps(
    verb: str,
    ctx: Context,
    options: CommandsT,
    emit: Sink,
    body: Callable[[Run[CommandsT], Interrupts], None],
    *,
    finish: bool = True,
) -> RunReport:
    """Run `body` inside the shared frame: signals handled, config and target resolved, every
    failure kept in the report, and (unless `finish` is False) the Finished event sent."""
    from dbos_migrate.engine.runner import Interrupts

    report = RunReport(verb, dry_run=options.dry_run)
    run: Run[CommandsT] | None = None
    try:
        with Interrupts() as interrupts:
            run = prepare(ctx, options, report, emit)
            body(run, interrupts)
    except MigrateError as exc:
        report.error = exc
    except KeyboardInterrupt:
        report.error = Interrupted(2)
    except Exception as exc:  # a connection lost where no step expected it: exit 3, still one report
        import sys

        psycopg = sys.modules.get("psycopg")  # only ever raised once the driver is loaded
        if psycopg is None or not isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError)):
            raise
        from dbos_migrate.engine import database as db

        scrub = run.scrub if run is not None else Scrubber([])
        report.error = db.ConnectionLost(
            f"the connection to the database was lost: {db.describe(exc, scrub)}",
            "check the server; rerun when it is back",
        )
    if finish:
        emit(Finished(report))
    return report


# ---------------------------------------------------------------------------- connections and the lock


def maintenance_connection(
    run: Run[LockOptions],
    app_name: str,
    *,
    instance: Endpoint | None = None,
    prefer: str | None = None,
    purpose: str,
    read_only: bool = False,
) -> psycopg.Connection[Any]:
    """A connection to a database other than the app's: `--maintenance-db` if given, else
    `prefer` (a rehearsal instance's own database), then `postgres`, then `template1`."""
    return connect_maintenance(
        instance or run.target.instance,
        run.scrub,
        app_name,
        run.options.maintenance_db,
        prefer=prefer,
        purpose=purpose,
        read_only=read_only,
    )


def connect_maintenance(
    instance: Endpoint,
    scrub: Scrubber,
    app_name: str,
    maintenance_db: str | None,
    *,
    prefer: str | None = None,
    purpose: str,
    read_only: bool = False,
) -> psycopg.Connection[Any]:
    """`maintenance_connection` for a verb with no run and no --maintenance-db (`status`)."""
    from dbos_migrate.engine import database as db

    if maintenance_db:
        names = [maintenance_db]
    else:
        names = list(dict.fromkeys([n for n in (prefer,) if n] + ["postgres", "template1"]))
    last: DatabaseError | None = None
    for name in names:
        try:
            return db.connect(
                instance,
                scrub,
                dbname=name,
                app_name=app_name,
                read_only=read_only,
                where=f"connecting to maintenance database {name!r}",
            )
        except DatabaseError as exc:
            last = exc
    assert last is not None
    raise DatabaseError(
        f"no maintenance database could be reached {purpose}: {last.message}",
        "pass --maintenance-db NAME, or have an admin create the database and use --no-create",
    )


def take_lock(run: Run[TargetOptions], conn: psycopg.Connection[Any], key: int, database: str, deadline: float) -> None:
    """Take the migration lock for `database` on `conn`, reporting who holds it meanwhile."""
    from dbos_migrate.engine import database as db

    start = run.ctx.clock()

    def waiting(holder: LockHolder | None, left: float) -> None:
        run.emit(WaitingForLock(holder, left))

    try:
        db.protect_lock_session(conn)
        db.acquire_lock(conn, key, database, timeout=max(deadline - run.ctx.clock(), 0), on_wait=waiting)
    except Exception as exc:
        if isinstance(exc, MigrateError):
            raise
        import psycopg

        if isinstance(exc, psycopg.Error):
            error = db.classify(exc, run.scrub, where="taking the migration lock")
            if conn.closed:  # the session was lost while waiting: a caller may reconnect
                raise db.ConnectionLost(error.message, error.hint) from None
            raise error from None
        raise
    run.emit(LockAcquired(run.ctx.clock() - start))


# ---------------------------------------------------------------------------- commands


def run_commands(
    run: Run[CommandOptions],
    commands: list[tuple[str, str]],
    interrupts: Interrupts,
    *,
    env: Mapping[str, str],
    on_result: Callable[[CommandResult], None],
    before_each: Callable[[], None] | None = None,
    after_each: Callable[[CommandResult], None] | None = None,
    label: str = "",
    failure_hint: str | None = None,
) -> None:
    """Run (text, shown) commands in order with `up`'s rules: stream, stop at the first failure.

    `on_result` records each result (report, history) before any failure is raised;
    `label` ("rehearsal ") names the kind of command in headers and messages.
    """
    for index, (text, shown) in enumerate(commands, start=1):
        if before_each is not None:
            before_each()
        run_command_with_events(
            run,
            index,
            len(commands),
            text,
            shown,
            interrupts,
            env=env,
            cwd=str(run.config.directory),
            label=label,
            on_result=on_result,
            after_each=after_each,
            failure_hint=failure_hint,
        )


def run_command_with_events(
    run: Run[CommandOptions],
    index: int,
    total: int,
    text: str,
    shown: str,
    interrupts: Interrupts,
    *,
    env: Mapping[str, str],
    cwd: str,
    label: str = "",
    step: str = "",
    ok_codes: tuple[int, ...] = (0,),
    on_result: Callable[[CommandResult], None] | None = None,
    after_each: Callable[[CommandResult], None] | None = None,
    failure_hint: str | None = None,
) -> CommandResult:
    """Run one command the way every command of a run is run (runner.run_command: streamed,
    scrubbed, bounded by --command-timeout, stoppable) between its CommandStarted and
    CommandFinished events, and turn how it ended into the run's error: interrupted (exit
    130/143), stopped (3, or `after_each`'s own error), timed out (124), failed (1).

    A migration command is "command 2 of 3" (`label` "rehearsal " for the rehearsal's); a
    step of `up` that is one command (the system schema's toolchain) is named by `step`
    instead. An exit code in `ok_codes` counts as success. `on_result` records the result
    before any failure is raised; `after_each` checks what must still hold after it.
    """
    from dataclasses import replace

    from dbos_migrate.engine.runner import CommandInterrupted, CommandStopped, run_command

    opts = run.options
    subject = f"{step} command" if step else f"{label}command {index}"
    run.emit(CommandStarted(index, total, f"({label.strip()}) {shown}" if label else shown, step))

    def finished(result: CommandResult) -> None:
        if on_result is not None:
            on_result(result)
        run.emit(CommandFinished(result, total, step))

    try:
        result = run_command(
            index,
            text,
            shown,
            cwd=cwd,
            env=env,
            scrub=run.scrub,
            out=run.ctx.out_bytes,
            err=run.ctx.err_bytes,
            timeout=opts.command_timeout,
            interrupts=interrupts,
            grace=opts.grace,
        )
    except CommandInterrupted as stop:
        finished(stop.result)
        raise Interrupted(stop.signum, f"interrupted during {subject}: {shown}") from None
    except CommandStopped as stopped:  # the lease could not be kept (docs/reliability.md)
        finished(stopped.result)
        if after_each is not None:
            after_each(stopped.result)  # raises the reason's own error
        raise DatabaseError(
            f"{subject} was stopped ({stopped.reason}); no further command was started: {shown}"
        ) from None
    if result.status == "failed" and result.signal is None and result.exit_code in ok_codes:
        result = replace(result, status="succeeded")  # an exit code the caller reads as success
    finished(result)
    if after_each is not None:
        after_each(result)
    if result.status == "timed_out":
        raise CommandTimeout(
            f"{subject} ran past --command-timeout {opts.command_timeout:g}s and was stopped: {shown}",
            "raise --command-timeout, or make the migration faster",
        )
    if not result.ok:
        raise CommandFailed(f"{subject} failed with {result.describe_end()}: {shown}", failure_hint)
    return result


#: Seconds (at least; --wait if longer) a run keeps trying to record history after a lost connection.
HISTORY_RETRY = 10.0


class History:
    """Writes one history row per command; keeps rows it could not write for a later retry."""

    def __init__(self, run: Run[ChangeOptions], conn: psycopg.Connection[Any], run_id: str, direction: str) -> None:
        self.run = run
        self.conn = conn
        self.run_id = run_id
        self.direction = direction
        self.pending: list[HistoryRow] = []
        self.enabled = not run.options.no_history

    def verify(self) -> None:
        """Before any command runs: refuse (exit 3) a history table, schema or sequence the
        tool did not make (docs/security.md, "The tool's own objects")."""
        if not self.enabled:
            return
        from dbos_migrate.engine import database as db

        db.check_history(self.conn, db.check_history_schema(self.run.options.history_schema))

    def record(self, result: CommandResult, note: str | None = None) -> None:
        if not self.enabled:
            return
        notes = "; ".join(n for n in (self.run.options.note, note) if n) or None
        row = HistoryRow(
            run_id=self.run_id,
            direction=self.direction,
            command_index=result.index,
            command=result.command,
            started_at=result.started_at,
            finished_at=result.finished_at,
            exit_code=result.exit_code,
            status=result.status,
            instance=self.run.report.where.target or "",
            note=notes,
        )
        self.pending.append(row)
        self._write(self.conn)

    def amend_last(self, note: str) -> None:
        """Add a note to the last row (kept pending until written): e.g. a lock lost meanwhile."""
        if not self.enabled:
            return
        if self.pending:
            last = self.pending[-1]
            from dataclasses import replace

            self.pending[-1] = replace(last, note="; ".join(n for n in (last.note, note) if n))

    def _write(self, conn: psycopg.Connection[Any]) -> bool:
        import psycopg

        from dbos_migrate.engine import database as db

        try:
            while self.pending:
                db.write_history(conn, self.pending[0], self.run.options.history_schema)
                self.pending.pop(0)
            self.run.report.history_written = True
            return True
        except psycopg.errors.InsufficientPrivilege:
            self.enabled = False
            self.pending.clear()
            self.run.emit(
                Notice(
                    f"history not recorded: the role may not create schema {self.run.options.history_schema} "
                    "(use --no-history to silence)",
                    "warning",
                )
            )
            return True
        except psycopg.Error:
            return False

    def flush(self) -> None:
        """Write what is left; after a lost connection, through a fresh one, retrying while the
        server comes back for at most --wait or HISTORY_RETRY seconds (docs/reliability.md)."""
        if not self.enabled or not self.pending:
            return
        import time

        from dbos_migrate.engine import database as db

        if not self.conn.closed and self._write(self.conn):
            return
        bound = max(self.run.options.wait, HISTORY_RETRY)
        deadline = time.monotonic() + bound
        told: list[bool] = []

        def retrying(left: float, reason: str) -> None:
            if not told:
                told.append(True)
                self.run.emit(
                    Notice(
                        f"history: retrying for up to {bound:g}s to record {len(self.pending)} command(s): {reason}",
                        "warning",
                    )
                )

        problem = ""
        while True:
            left = deadline - time.monotonic()
            try:
                conn = db.connect_waiting(
                    self.run.target.app,
                    self.run.scrub,
                    dbname=None,
                    app_name=db.application_name("history"),
                    wait=max(left, 0),
                    on_retry=retrying,
                    where="reconnecting to record history",
                )
            except MigrateError as exc:
                problem = f": {exc.message}"
                break
            with db.closing(conn):
                if self._write(conn):
                    return
            if time.monotonic() >= deadline:
                break
            retrying(deadline - time.monotonic(), "the connection failed while writing")
            time.sleep(0.2)
        self.run.report.history_written = False  # JSON: not every row made it
        self.run.emit(Notice(f"history not recorded for {len(self.pending)} command(s){problem}", "warning"))
