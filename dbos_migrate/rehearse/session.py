"""One rehearsal: scratch database, schema copy, the commands, two snapshots, the diff, the drop.

The real app database is only read (pg_dump or catalog queries, under the migration lock
so that a concurrent `up` is not copied half-way). Whatever happens, the scratch database
is dropped before this returns (docs/rehearsal.md).
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING

import psycopg

from dbos_migrate.engine import database as db
from dbos_migrate.engine.frame import Run, maintenance_connection, run_commands, take_lock
from dbos_migrate.engine.options import RehearseOptions
from dbos_migrate.engine.scrub import Scrubber
from dbos_migrate.errors import DatabaseError, MigrateError, UsageError, first_line
from dbos_migrate.events import Notice
from dbos_migrate.model import CommandResult
from dbos_migrate.rehearse import copy, live, sandbox, scratch
from dbos_migrate.rehearse import rollback as undo
from dbos_migrate.rehearse.catalog import Conn, Snapshot, snapshot
from dbos_migrate.rehearse.dataplan import Check
from dbos_migrate.rehearse.diff import diff
from dbos_migrate.rehearse.result import Rehearsal
from dbos_migrate.rehearse.rollback import Loss
from dbos_migrate.settings.conninfo import effective
from dbos_migrate.settings.target import Endpoint, SystemDatabase, Target, parse_url, pg_vars

if TYPE_CHECKING:
    from dbos_migrate.engine.runner import Interrupts


def rehearse(
    run: Run[RehearseOptions],
    interrupts: Interrupts,
    rehearse_url: str | None,
    *,
    record: bool,
    direction: str = "up",
) -> Rehearsal:
    """Copy, run, diff, drop. `record` puts the rehearsal's command results into the report's
    own `commands` (plan); otherwise they stay under `rehearsal.commands` (gated up).
    `direction` "down" rehearses database.rollback instead (rehearse/rollback.py)."""
    run.ensure_password()
    real, real_urls = _real(run)  # taken before --rehearse-url's secrets join the run's
    instance, scratch_target = _scratch_target(run, rehearse_url)
    name = scratch_target.app_database
    listed = "migrate" if direction == "up" else "rollback"
    box = sandbox.prepare(
        scratch_target, rehearse_url=bool(rehearse_url), shared=run.options.rehearse_shared_credentials
    )
    run.add_secrets(box.target.secrets)
    env = sandbox.setup_env(run, box, real, real_urls)
    commands = run.commands(getattr(run.config.database, listed), listed, env)
    run.report.planned = [shown for _, shown in commands]
    rehearsal = Rehearsal(name, instance.masked())
    rehearsal.credentials = box.credentials()
    run.report.rehearsal = rehearsal
    if not commands:
        rehearsal.copy_method = f"skipped: database.{listed} lists no commands"
        run.emit(Notice(f"rehearsal: database.{listed} lists no commands, so there is nothing to rehearse"))
        return rehearsal
    limits = live.settings(run)  # a bad $DBOS_MIGRATE_LARGE_TABLE stops the run before anything starts
    app_name = db.application_name("rehearse")
    other = instance if rehearse_url else None
    maint = _maintenance(run, app_name, other, "for the rehearsal")
    checks: list[Check] = []
    losses: list[Loss] = []
    try:
        _check_server(maint)
        _prepare(run, maint, name, rehearsal)
        try:  # from here on, the finally drops the scratch database (IF EXISTS), whatever happens
            sandbox.create(run, maint, box)
            _create(run, maint, name, rehearse_url)
            rehearsal.created = True
            where = "" if rehearse_url is None else f" on {instance.masked()}"
            run.emit(Notice(f"rehearsal: scratch database {name}{where}"))
            _copy(run, scratch_target, rehearsal)
            sandbox.after_copy(run, maint, box, scratch_target)
            before = _snapshot(run, scratch_target)
            _run(run, commands, env, interrupts, rehearsal, record, box)
            after = _snapshot(run, scratch_target)
            rehearsal.changes = diff(before, after)
            checks = live.plan_checks(run, scratch_target, before, after, rehearsal, limits)
            if direction == "up" and undo.wanted(run):
                rehearsal.rollback = undo.rehearse_rollback(
                    run, scratch_target, before, interrupts, lambda: _snapshot(run, scratch_target), env
                )
            if direction == "down":
                losses = undo.plan_losses(before, rehearsal.changes)
        finally:
            rehearsal.dropped = _drop(run, maint, other, name, app_name)
            sandbox.drop(run, maint, box)  # after the database it owned
            rehearsal.credentials = box.credentials()
    finally:
        with contextlib.suppress(psycopg.Error):
            maint.close()
    # What the empty copy cannot tell, asked of the real databases, read-only (docs/rehearsal.md).
    live.run_checks(run, rehearsal, checks)
    if direction == "down":
        rehearsal.destroys = undo.count_losses(run, losses)
    live.read_workflows(run, rehearsal)
    return rehearsal


def _real(run: Run[RehearseOptions]) -> tuple[Scrubber, list[str]]:
    """The real target's secrets and URLs: none of them may reach the commands (docs/rehearsal.md)."""
    real_urls = [run.target.app_url.without_secrets().text]
    if run.target.system.endpoint is not None:
        real_urls.append(run.target.system.endpoint.url.without_secrets().text)
    return Scrubber(list(run.secrets)), real_urls


def _scratch_target(run: Run[RehearseOptions], rehearse_url: str | None) -> tuple[Endpoint, Target]:
    """The instance the rehearsal runs on (--rehearse-url's, or the target's) and the target the
    commands get: the scratch database, and never the real system database."""
    instance = run.target.instance
    if rehearse_url:
        url = parse_url(rehearse_url, what="--rehearse-url")
        instance = Endpoint(url, effective(url, run.ctx.environ))
        run.add_secrets(instance.eff.secrets)
    name = scratch.scratch_name(run.target.app_database)
    system = SystemDatabase("the scratch database", instance.at(name))
    return instance, replace(run.target, instance=instance, app_database=name, system=system)


def _maintenance(run: Run[RehearseOptions], app_name: str, instance: Endpoint | None, purpose: str) -> Conn:
    """A maintenance connection to --rehearse-url's instance (its own database first), or to
    the target's instance when `instance` is None."""
    prefer = instance.url.database if instance else None
    return maintenance_connection(run, app_name, instance=instance, prefer=prefer, purpose=purpose)


def _check_server(conn: Conn) -> None:
    if conn.info.server_version < 120000:
        raise UsageError(
            f"the rehearsal needs PostgreSQL 12 or later (the server is {db.server_version(conn)})",
            "pass --rehearse-url with a newer instance",
        )


def _prepare(run: Run[RehearseOptions], maint: Conn, name: str, rehearsal: Rehearsal) -> None:
    """Hold this rehearsal's scratch lock, then remove what killed rehearsals left behind."""
    try:
        scratch.hold_scratch_lock(maint, name)
        dropped, problems = scratch.remove_leftovers(maint)
    except psycopg.Error as exc:
        raise db.classify(exc, run.scrub, where="preparing the rehearsal") from None
    try:
        roles, role_problems = sandbox.remove_leftover_roles(
            maint, scratch.REHEARSE_LOCK_CLASS, scratch.scratch_lock_key
        )
    except psycopg.Error as exc:
        roles, role_problems = [], [first_line(exc)]
    dropped += [f"role {r}" for r in roles]
    problems += role_problems
    rehearsal.leftovers_removed = dropped
    for left in dropped:
        what = "rehearsal " + left if left.startswith("role ") else "scratch database " + left
        run.emit(Notice(f"rehearsal: removed leftover {what} (from an interrupted run)"))
    for problem in problems:
        rehearsal.warnings.append(run.scrub.text(problem))
        run.emit(Notice(run.scrub.text(f"rehearsal: {problem}"), "warning"))


def _create(run: Run[RehearseOptions], maint: Conn, name: str, rehearse_url: str | None) -> None:
    try:
        created = db.create_database(maint, name, run.scrub, template0=True)
    except DatabaseError as exc:
        if rehearse_url is None:
            exc.hint = (exc.hint + "; " if exc.hint else "") + (
                "or pass --rehearse-url with an instance where this role may create databases"
            )
        raise
    if not created:
        raise DatabaseError(f"scratch database {name!r} already exists (name clash); retry")
    try:
        scratch.mark(maint, name)
    except psycopg.Error as exc:
        raise db.classify(exc, run.scrub, where=f"marking scratch database {name!r}") from None


def _drop(run: Run[RehearseOptions], maint: Conn, instance: Endpoint | None, name: str, app_name: str) -> bool:
    """Drop the scratch database, through a fresh connection if ours broke. Never raises."""
    with scratch.signals_held():
        errors: list[str] = []
        for attempt in range(2):
            conn = maint
            try:
                if attempt:
                    conn = _maintenance(run, app_name, instance, "to drop the scratch database")
                try:
                    conn.execute(scratch.drop_statement(conn, name))
                    return True
                finally:
                    if attempt:
                        conn.close()
            except (psycopg.Error, MigrateError) as exc:
                errors.append(run.scrub.text(first_line(exc)))
    run.emit(
        Notice(
            f"rehearsal: could not drop scratch database {name} ({'; '.join(errors)}); the next rehearsal removes it",
            "warning",
        )
    )
    return False


def _copy(run: Run[RehearseOptions], scratch_target: Target, rehearsal: Rehearsal) -> None:
    """Copy the real app database's schema (and version-table rows) into the scratch one."""
    target = run.target
    app_name = db.application_name("rehearse")
    try:
        src = db.connect(target.app, run.scrub, app_name=app_name, where="reading the app database", read_only=True)
    except db.DatabaseMissing:
        rehearsal.copy_method = "none: the app database does not exist yet (first deploy)"
        run.emit(Notice("rehearsal: the app database does not exist yet: the scratch database starts empty"))
        return
    key = db.lock_key(target.app_database)
    deadline = run.ctx.clock() + run.options.lock_timeout
    with db.closing(src):
        take_lock(run, src, key, target.app_database, deadline)  # a concurrent `up` is not copied half-way
        try:
            dst = db.connect(scratch_target.app, run.scrub, app_name=app_name, where="opening the scratch database")
            with db.closing(dst):
                rehearsal.copy_method = _copy_schema(run, src, dst, rehearsal, deadline)
                copied, problems = copy.copy_version_tables(src, dst)
                rehearsal.version_tables = copied
                rehearsal.copy_warnings += [run.scrub.text(p) for p in problems]
        except psycopg.Error as exc:
            raise db.classify(exc, run.scrub, where="copying the schema into the scratch database") from None
        finally:
            db.release_lock(src, key)
    for problem in rehearsal.copy_warnings:
        run.emit(Notice(f"rehearsal copy: {problem}", "warning"))
    tables = ", ".join(rehearsal.version_tables) or "none found"
    run.emit(Notice(f"rehearsal: schema copied with {rehearsal.copy_method}; version table rows: {tables}"))


def _copy_schema(run: Run[RehearseOptions], src: Conn, dst: Conn, rehearsal: Rehearsal, deadline: float) -> str:
    environ = run.ctx.environ
    mode = (environ.get(copy.COPY_MODE_ENV) or "auto").strip().lower()
    if mode not in ("auto", "pg_dump", "catalog"):
        raise UsageError(f"${copy.COPY_MODE_ENV} must be auto, pg_dump or catalog, not {mode!r}")
    if mode != "catalog":
        server_major = src.info.server_version // 10000
        dump = copy.find_pg_dump(server_major, environ)
        if dump is None:
            if mode == "pg_dump":
                raise UsageError(
                    f"no pg_dump of major version >= {server_major} found (PATH, /usr/lib/postgresql/*/bin, ...)",
                    f"install the PostgreSQL {server_major} client tools, set ${copy.PG_DUMP_ENV}, "
                    f"or unset ${copy.COPY_MODE_ENV}",
                )
            run.emit(Notice(f"rehearsal: no pg_dump >= {server_major} found: copying the schema from the catalogs"))
        else:
            env = {k: v for k, v in environ.items() if k != "PGSERVICE"}
            env.update(pg_vars(run.target.instance.eff, run.target.app_database))
            env["PGAPPNAME"] = db.application_name("rehearse")
            env.setdefault("PGCONNECT_TIMEOUT", str(db.DEFAULT_CONNECT_TIMEOUT))
            wait_ms = int(max(deadline - run.ctx.clock(), 1) * 1000)
            try:
                copy.restore_script(dst, copy.dump_schema(dump, run.target.app_url, env, run.scrub, wait_ms))
                return f"pg_dump {dump.version} ({dump.path})"
            except copy.CopyFailed as exc:
                if mode == "pg_dump":
                    raise DatabaseError(f"copying the schema with pg_dump failed: {run.scrub.text(str(exc))}") from None
                run.emit(
                    Notice(
                        f"rehearsal: pg_dump copy failed ({run.scrub.text(str(exc))}): "
                        "copying the schema from the catalogs instead",
                        "warning",
                    )
                )
    problems = copy.catalog_copy(src, dst)
    rehearsal.copy_warnings += [run.scrub.text(f"not copied: {p}") for p in problems]
    return "catalog"


def _snapshot(run: Run[RehearseOptions], scratch_target: Target) -> Snapshot:
    conn = db.connect(
        scratch_target.app, run.scrub, app_name=db.application_name("rehearse"), where="reading the scratch database"
    )
    with db.closing(conn):
        try:
            return snapshot(conn)
        except psycopg.Error as exc:
            raise db.classify(exc, run.scrub, where="reading the scratch database's catalogs") from None


def _run(
    run: Run[RehearseOptions],
    commands: list[tuple[str, str]],
    env: dict[str, str],
    interrupts: Interrupts,
    rehearsal: Rehearsal,
    record: bool,
    box: sandbox.Sandbox,
) -> None:
    """The migrate commands against the scratch database, with `up`'s streaming and failure rules."""

    def finished(result: CommandResult) -> None:
        rehearsal.commands.append(result)
        if record:
            run.report.commands.append(result)

    hint = (
        "it failed on a copy of the current schema, so it would fail on the real database too; "
        "the real database was not touched"
    )
    if box.mode == "temporary-role":
        hint += (
            f" (the commands ran as the temporary role {box.role}: a failure on a privilege the deploy "
            "role has and it lacks is a limit of the rehearsal, see rehearsal.credentials.limits)"
        )
    run_commands(
        run,
        commands,
        interrupts,
        env=env,
        on_result=finished,
        label="rehearsal ",
        failure_hint=hint,
    )
