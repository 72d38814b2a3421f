"""`--print-user-role` and `--print-migrations`: say what `up` (or `down`) would do, as
`dbos migrate` does with the same flags, connecting to no database and changing nothing
(docs/dbos-compatibility.md, "The flags DBOS users type")."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbos_migrate.context import Context
from dbos_migrate.engine.frame import Run, load_config, resolution, resolve_target, run_steps
from dbos_migrate.engine.options import CommandOptions, DownOptions, UpOptions
from dbos_migrate.errors import MigrateError, UsageError
from dbos_migrate.events import Finished, Sink
from dbos_migrate.model import (
    CommandStep,
    DatabaseStep,
    GrantStep,
    PlannedStep,
    RunReport,
    SchemaStep,
    ToolchainStep,
)

if TYPE_CHECKING:
    from dbos_migrate.engine.runner import Interrupts
    from dbos_migrate.engine.sysdb import Toolchain
    from dbos_migrate.settings.config import Text

DEFAULT_SCHEMA = "dbos"


def check_print_options(options: UpOptions | DownOptions) -> None:
    """The combinations `dbos migrate` refuses, refused the same way (exit 2 here)."""
    if isinstance(options, UpOptions) and options.print_user_role:  # `down` has no --print-user-role
        if options.print_migrations is not None:
            raise UsageError("--print-user-role cannot be combined with --print-migrations")
        if not options.app_role:
            raise UsageError("--print-user-role needs the role: -r/--app-role ROLE", "e.g. --print-user-role -r app_rt")
    value = options.print_migrations
    if value is not None and value != "all" and not (value.isdigit() and int(value) >= 1):
        raise UsageError(
            f"--print-migrations {value!r}: expected 'all' or a migration number (1 or more)",
            "e.g. --print-migrations all",
        )


def print_user_role(ctx: Context, options: UpOptions, emit: Sink) -> RunReport:
    """The SQL granting the runtime role what it needs on both databases, as a psql script.

    Only the config and the target are resolved (for the database names): nothing connects."""
    from dbos_migrate.engine.grants import user_role_script

    report = RunReport("up", dry_run=True)
    try:
        check_print_options(options)
        cfg = load_config(ctx, options)
        target = resolve_target(ctx, cfg, options)
        report.where = resolution(ctx, options, cfg, target)
        system = target.system.endpoint
        report.user_role_sql = user_role_script(
            target.app_database,
            system.url.database if system is not None else None,
            options.app_role or "",
            cfg.system_schema or DEFAULT_SCHEMA,
            options.history_schema,
        )
    except MigrateError as exc:
        report.error = exc
    emit(Finished(report))
    return report


def print_migrations(ctx: Context, options: UpOptions | DownOptions, emit: Sink) -> RunReport:
    """What `up` (or `down`) would run, in order, without running it or connecting: the
    databases it would create, the system schema's toolchain (with the SQL it prints for
    `--print-migrations`, when it can), the app database's DBOS provisioning, the commands
    and the grants."""
    verb = "up" if isinstance(options, UpOptions) else "down"
    try:
        check_print_options(options)
    except UsageError as exc:
        report = RunReport(verb, dry_run=True, error=exc)
        emit(Finished(report))
        return report

    def up_body(run: Run[UpOptions], interrupts: Interrupts) -> None:
        run.report.steps = _up_steps(run)

    def down_body(run: Run[DownOptions], interrupts: Interrupts) -> None:
        commands = _commands(run, run.config.database.rollback, "rollback")
        name = run.target.app_database
        run.report.steps = [DatabaseStep("app_database", name, "must exist"), *commands]

    if isinstance(options, UpOptions):
        return run_steps(verb, ctx, options, emit, up_body)
    return run_steps(verb, ctx, options, emit, down_body)


def _commands(run: Run[CommandOptions], items: tuple[Text, ...], key: str) -> list[PlannedStep]:
    """The steps of database.migrate or database.rollback; also the report's `planned`."""
    commands = run.commands(items, key, run.command_env())
    run.report.planned = [shown for _, shown in commands]
    return [CommandStep(index, shown) for index, (_, shown) in enumerate(commands, 1)]


def _up_steps(run: Run[UpOptions]) -> list[PlannedStep]:
    commands = _commands(run, run.config.database.migrate, "migrate")
    name = run.target.app_database
    action = "must exist (--no-create)" if run.options.no_create else "create if missing"
    steps: list[PlannedStep] = [DatabaseStep("app_database", name, action)]
    system_steps, toolchain = _system_steps(run)
    from dbos_migrate.engine.appdb import planned as appdb_planned

    steps += system_steps + appdb_planned(run, toolchain) + commands
    role = run.options.app_role
    if role:
        system = run.target.system.endpoint
        databases = [name, *([system.url.database or ""] if system is not None else [])]
        steps.append(GrantStep(role, tuple(databases), "see --print-user-role -r " + role))
    return steps


def _system_steps(run: Run[UpOptions]) -> tuple[list[PlannedStep], Toolchain | None]:
    from dbos_migrate.engine.appdb import with_app_database
    from dbos_migrate.engine.sysdb import find_toolchain, print_toolchain_migrations

    system = run.target.system
    shown = system.url_text(mask=True)
    if system.endpoint is None:
        return [DatabaseStep("system_database", shown, "not PostgreSQL: left to the app")], None
    if run.options.system_db == "skip":
        return [DatabaseStep("system_database", shown, "left alone (--system-db skip)")], None
    steps: list[PlannedStep] = [DatabaseStep("system_database", system.endpoint.url.database, "create if missing")]
    if run.options.system_db == "create":
        return steps, None
    toolchain, why = find_toolchain(run, system.endpoint, run.config.system_schema)
    if toolchain is None:
        action = f"none found ({why}): the app creates the schema at its first launch"
        steps.append(SchemaStep("system_schema", None, action))
        return steps, None
    toolchain = with_app_database(run, toolchain)
    value = run.options.print_migrations or "all"
    sql = print_toolchain_migrations(run, toolchain, value, run.config.system_schema or DEFAULT_SCHEMA)
    steps.append(ToolchainStep(toolchain.name, run.scrub.text(toolchain.shown), sql))
    return steps, toolchain
