"""The commands: each turns its options into its verb's options record (engine/options.py),
picks the reporter of its --output mode, calls a verb, and exits with the code of the error
the verb returned. Heavy modules are imported inside the commands so that `--help` and
`validate` never load the database driver."""

import os
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from dbos_migrate import __version__
from dbos_migrate.cli.options import (
    _ENV_FILE_ERROR,
    AllowBreakingOpt,
    AppDbOpt,
    AppRoleOpt,
    CommandTimeoutOpt,
    ConfigOpt,
    ConfirmOpt,
    DataCheckTimeoutOpt,
    DatasourceMode,
    DatasourceOpt,
    DbUrlOpt,
    DownRehearseOpt,
    DryRunOpt,
    EnvFileOpt,
    FailOnBreakingOpt,
    HistorySchemaOpt,
    KillAfterOpt,
    LeaseTtlOpt,
    LockTimeoutOpt,
    MaintOpt,
    NoCreateOpt,
    NoDataChecksOpt,
    NoHistoryOpt,
    NoRollbackCheckOpt,
    Output,
    OutputOpt,
    PathsArg,
    PrintMigrationsOpt,
    PrintUserRoleOpt,
    ProductionOpt,
    QuietOpt,
    RehearseOpt,
    RehearseSharedOpt,
    RehearseUrlOpt,
    RunOpt,
    SchemaOpt,
    Str,
    StrictOpt,
    SysDbUrlOpt,
    SystemDbMode,
    SystemDbOpt,
    VerboseOpt,
    WaitOpt,
    _ctx,
    _printing,
    app,
    command,
    option,
    postgres_app,
)
from dbos_migrate.errors import MigrateError
from dbos_migrate.report.early import ENV_PREFIX

if TYPE_CHECKING:
    pass


def _version(typer_ctx: typer.Context, value: bool) -> None:
    if value:
        _ctx(typer_ctx).stdout.write(f"dbos-migrate {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    typer_ctx: typer.Context,
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
    env_file: EnvFileOpt = None,
) -> None:
    """dbos-migrate."""
    error = typer_ctx.meta.pop(_ENV_FILE_ERROR, None)
    if error is not None:  # now the usage error names the command (report/usage.py)
        error.ctx = typer_ctx
        error.param = next(p for p in typer_ctx.command.params if p.name == "env_file")
        raise error
    _check_flag_variables(typer_ctx)


# ---------------------------------------------------------------------------- plumbing


def _check_flag_variables(typer_ctx: typer.Context) -> None:
    """A flag's variable (DBOS_MIGRATE_YES...) must say yes or no in a documented spelling
    (settings/booleans.py): `on` or `y` is a usage error, not a silent yes."""
    from dbos_migrate.settings.booleans import SPELLINGS, parse_bool

    commands = [typer_ctx.command]
    name = typer_ctx.invoked_subcommand
    group: Any = typer_ctx.command
    while name is not None and hasattr(group, "get_command"):
        group = group.get_command(typer_ctx, name)
        if group is None:
            break
        commands.append(group)
        sub = getattr(group, "commands", None)  # a group (postgres): check all of its commands
        commands += list(sub.values()) if sub else []
        name = None
    for cmd in commands:
        for param in getattr(cmd, "params", []):
            envvar = getattr(param, "envvar", None)
            if getattr(param, "is_flag", False) and isinstance(envvar, str):
                value = os.environ.get(envvar)
                if value and parse_bool(value) is None:
                    raise typer.BadParameter(f"{envvar}={value!r} is not yes or no: write {SPELLINGS}")


def _run(typer_ctx: typer.Context, verb: Any, options: Any, output: Output, quiet: bool, verbose: bool) -> None:
    """Run `verb` with its options record and the reporter of this output mode; exit with its
    error's code. (--env-file was read by its eager callback, _env_files.)"""
    from dbos_migrate.report import reporting

    sink, run_ctx = reporting(_ctx(typer_ctx), json=output is Output.json, quiet=quiet, verbose=verbose)
    result = verb(run_ctx, options, sink)
    if result.error is not None:
        raise typer.Exit(result.error.exit_code)


# ---------------------------------------------------------------------------- commands


@command()
def validate(
    typer_ctx: typer.Context,
    paths: PathsArg = None,
    config: ConfigOpt = None,
    cloud: Annotated[bool, option("--cloud", help="Also check the DBOS Cloud rules.")] = False,
    env_file: EnvFileOpt = None,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Check dbos-config.yaml without touching a database (exit 0 valid, 2 invalid).

    PATH...: the config files to check, as pre-commit passes them [default: the -c file].
    """
    from dbos_migrate import verbs
    from dbos_migrate.events import Finished
    from dbos_migrate.report import reporting

    ctx = _ctx(typer_ctx)
    sink, _ = reporting(ctx, json=output is Output.json, quiet=quiet, verbose=verbose)
    files: list[str | None] = list(paths) if paths else [config]
    results = [verbs.validate(path, cloud=cloud, environ=ctx.environ) for path in files]
    if output is Output.json and len(results) > 1:
        results = [verbs.merge_validations(results)]  # stdout stays one document
    for result in results:
        sink(Finished(result))
    raise typer.Exit(0 if all(r.ok for r in results) else 2)


@command()
def up(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    dry_run: DryRunOpt = False,
    no_create: NoCreateOpt = False,
    app_role: AppRoleOpt = None,
    system_db: SystemDbOpt = SystemDbMode.auto,
    sys_db_url: SysDbUrlOpt = None,
    schema: SchemaOpt = None,
    print_user_role: PrintUserRoleOpt = False,
    print_migrations: PrintMigrationsOpt = None,
    datasource: DatasourceOpt = DatasourceMode.auto,
    wait: WaitOpt = 0.0,
    lock_timeout: LockTimeoutOpt = 300.0,
    command_timeout: CommandTimeoutOpt = None,
    kill_after: KillAfterOpt = 5.0,
    lease_ttl: LeaseTtlOpt = 30.0,
    maintenance_db: MaintOpt = None,
    no_history: NoHistoryOpt = False,
    history_schema: HistorySchemaOpt = "dbos_migrate",
    production: ProductionOpt = False,
    fail_on_breaking: FailOnBreakingOpt = False,
    allow_breaking: AllowBreakingOpt = False,
    rehearse_url: RehearseUrlOpt = None,
    rehearse_shared_credentials: RehearseSharedOpt = False,
    env_file: EnvFileOpt = None,
    no_data_checks: NoDataChecksOpt = False,
    data_check_timeout: DataCheckTimeoutOpt = 5.0,
    strict: StrictOpt = False,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Create the app and system databases if missing, then run database.migrate in order."""
    from dbos_migrate import verbs

    verb = _up_verb(fail_on_breaking, print_user_role, print_migrations)
    options = verbs.UpOptions(
        config=config,
        db_url=db_url,
        app_db_name=app_db_name,
        dry_run=dry_run,
        no_create=no_create,
        app_role=app_role,
        wait=wait,
        lock_timeout=lock_timeout,
        command_timeout=command_timeout,
        grace=kill_after,
        lease_ttl=lease_ttl,
        maintenance_db=maintenance_db,
        no_history=no_history,
        production=production,
        history_schema=history_schema,
        system_db=system_db.value,
        data_checks=not no_data_checks,
        data_check_timeout=data_check_timeout,
        strict=strict,
        sys_db_url=sys_db_url,
        schema=schema,
        print_user_role=print_user_role,
        print_migrations=print_migrations,
        datasource=datasource.value,
        allow_breaking=allow_breaking,
        rehearse_url=rehearse_url,
        rehearse_shared_credentials=rehearse_shared_credentials,
    )
    _run(typer_ctx, verb, options, output, quiet, verbose)


def _up_verb(fail_on_breaking: bool, print_user_role: bool, print_migrations: str | None) -> Any:
    """The verb `up` calls: the printer of --print-user-role or --print-migrations (which wins),
    the gated up with --fail-on-breaking, else the plain up."""
    printer = _printing(print_user_role, print_migrations)
    if printer is not None:
        return printer
    if fail_on_breaking:
        from dbos_migrate.verbs.rehearsal import gated_up

        return gated_up
    from dbos_migrate import verbs

    return verbs.up


@command()
def down(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    yes: Annotated[bool, option("--yes", "-y", help="Skip the production confirmation.")] = False,
    confirm: ConfirmOpt = None,
    production: ProductionOpt = False,
    dry_run: DryRunOpt = False,
    rehearse: DownRehearseOpt = False,
    rehearse_url: RehearseUrlOpt = None,
    rehearse_shared_credentials: RehearseSharedOpt = False,
    data_check_timeout: DataCheckTimeoutOpt = 5.0,
    wait: WaitOpt = 0.0,
    lock_timeout: LockTimeoutOpt = 300.0,
    command_timeout: CommandTimeoutOpt = None,
    kill_after: KillAfterOpt = 5.0,
    lease_ttl: LeaseTtlOpt = 30.0,
    no_history: NoHistoryOpt = False,
    history_schema: HistorySchemaOpt = "dbos_migrate",
    sys_db_url: SysDbUrlOpt = None,
    print_migrations: PrintMigrationsOpt = None,
    env_file: EnvFileOpt = None,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run database.rollback in listed order (recovery), behind the production guard."""
    from dbos_migrate import verbs

    printer = _printing(False, print_migrations)
    verb: Any = printer or verbs.down
    if rehearse and printer is None:
        from dbos_migrate.verbs.rehearsal import down as rehearsed_down

        verb = rehearsed_down
    options = verbs.DownOptions(
        config=config,
        db_url=db_url,
        app_db_name=app_db_name,
        yes=yes,
        confirm=confirm,
        production=production,
        dry_run=dry_run,
        wait=wait,
        lock_timeout=lock_timeout,
        command_timeout=command_timeout,
        grace=kill_after,
        lease_ttl=lease_ttl,
        no_history=no_history,
        history_schema=history_schema,
        sys_db_url=sys_db_url,
        print_migrations=print_migrations,
        data_check_timeout=data_check_timeout,
        rehearse_url=rehearse_url,
        rehearse_shared_credentials=rehearse_shared_credentials,
    )
    _run(typer_ctx, verb, options, output, quiet, verbose)


command("migrate", short_help="Same as `up`: the word DBOS users type.")(up)
command("rollback", short_help="Same as `down`: the word DBOS users type.")(down)


@command()
def plan(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    rehearse: RehearseOpt = False,
    rehearse_url: RehearseUrlOpt = None,
    sys_db_url: SysDbUrlOpt = None,
    schema: SchemaOpt = None,
    rehearse_shared_credentials: RehearseSharedOpt = False,
    no_data_checks: NoDataChecksOpt = False,
    data_check_timeout: DataCheckTimeoutOpt = 5.0,
    strict: StrictOpt = False,
    no_rollback_check: NoRollbackCheckOpt = False,
    command_timeout: CommandTimeoutOpt = None,
    kill_after: KillAfterOpt = 5.0,
    env_file: EnvFileOpt = None,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Show what `up` would do; with --rehearse, find breaking changes first."""
    from dbos_migrate import verbs

    verb: Any = verbs.plan
    if rehearse:
        from dbos_migrate.verbs.rehearsal import plan as rehearse_plan

        verb = rehearse_plan
    options = verbs.PlanOptions(
        config=config,
        db_url=db_url,
        app_db_name=app_db_name,
        dry_run=not rehearse,
        command_timeout=command_timeout,
        grace=kill_after,
        data_checks=not no_data_checks,
        data_check_timeout=data_check_timeout,
        strict=strict,
        rollback_check=not no_rollback_check,
        sys_db_url=sys_db_url,
        schema=schema,
        rehearse_url=rehearse_url,
        rehearse_shared_credentials=rehearse_shared_credentials,
    )
    _run(typer_ctx, verb, options, output, quiet, verbose)


@command()
def status(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    production: ProductionOpt = False,
    history_schema: HistorySchemaOpt = "dbos_migrate",
    sys_db_url: SysDbUrlOpt = None,
    schema: SchemaOpt = None,
    env_file: EnvFileOpt = None,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Report the target, the server, both databases, the lock holder and recent runs."""
    from dbos_migrate import verbs

    options = verbs.StatusOptions(
        config=config,
        db_url=db_url,
        app_db_name=app_db_name,
        production=production,
        history_schema=history_schema,
        sys_db_url=sys_db_url,
        schema=schema,
    )
    _run(typer_ctx, verbs.status, options, output, quiet, verbose)


@command("wait")
def wait_command(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    wait: WaitOpt = 60.0,
    env_file: EnvFileOpt = None,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Wait until the target accepts connections (exit 0), at most --wait seconds (else exit 3)."""
    from dbos_migrate import verbs

    options = verbs.WaitOptions(config=config, db_url=db_url, app_db_name=app_db_name, wait=wait)
    _run(typer_ctx, verbs.wait, options, output, quiet, verbose)


@command()
def drop(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    # Not DBOS_MIGRATE_SYSTEM_DB: that variable holds up's auto|create|skip.
    system_db: Annotated[
        bool,
        option("--system-db", envvar=ENV_PREFIX + "DROP_SYSTEM_DB", help="Also drop the DBOS system database."),
    ] = False,
    force: Annotated[
        bool,
        option(
            "--force",
            help="End the databases' other sessions (DROP DATABASE ... WITH (FORCE)) instead of refusing (exit 3).",
        ),
    ] = False,
    yes: Annotated[bool, option("--yes", "-y", help="Skip the typed confirmation.")] = False,
    confirm: Annotated[
        Str,
        option("--confirm", metavar="APP_DB_NAME", show_default=False, help="Confirm by naming the app database."),
    ] = None,
    production: ProductionOpt = False,
    maintenance_db: MaintOpt = None,
    lock_timeout: LockTimeoutOpt = 300.0,
    history_schema: HistorySchemaOpt = "dbos_migrate",
    env_file: EnvFileOpt = None,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Drop the app database (--system-db: and the system one) of a dev or CI target, after a typed confirmation."""
    from dbos_migrate import verbs

    options = verbs.DropOptions(
        config=config,
        db_url=db_url,
        app_db_name=app_db_name,
        yes=yes,
        confirm=confirm,
        production=production,
        maintenance_db=maintenance_db,
        lock_timeout=lock_timeout,
        history_schema=history_schema,
        system_db=system_db,
        force=force,
    )
    _run(typer_ctx, verbs.drop, options, output, quiet, verbose)


@command()
def init(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    yes: Annotated[bool, option("--yes", "-y", help="Write without asking (needed without a terminal).")] = False,
    dry_run: Annotated[bool, option("--dry-run", help="Only print the diff.")] = False,
    env_file: EnvFileOpt = None,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Write or complete the database: section of dbos-config.yaml from alembic, knex, prisma or drizzle."""
    from dbos_migrate.report import reporting
    from dbos_migrate.verbs.init import init as init_verb

    sink, run_ctx = reporting(_ctx(typer_ctx), json=output is Output.json, quiet=quiet, verbose=verbose)
    result = init_verb(run_ctx, config, sink, yes=yes, dry_run=dry_run)
    if result.error is not None:
        raise typer.Exit(result.error.exit_code)


@command()
def history(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    limit: Annotated[int, option("--limit", "-n", metavar="N", min=1, help="How many rows.")] = 20,
    run: RunOpt = None,
    history_schema: HistorySchemaOpt = "dbos_migrate",
    env_file: EnvFileOpt = None,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """List recent runs from dbos_migrate.history, newest first, with their run ids."""
    from dbos_migrate import verbs

    options = verbs.HistoryOptions(
        config=config, db_url=db_url, app_db_name=app_db_name, history_schema=history_schema, limit=limit, run_id=run
    )
    _run(typer_ctx, verbs.history, options, output, quiet, verbose)


@command()
def url(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    show_password: Annotated[bool, option("--show-password", help="Print the password instead of ***.")] = False,
    env_file: EnvFileOpt = None,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,  # the URL is the output: -q changes nothing
    verbose: VerboseOpt = False,
) -> None:
    """Print the app database URL, like `dbos-cloud db url` (password masked unless asked)."""
    from dbos_migrate import verbs

    ctx = _ctx(typer_ctx)
    options = verbs.UrlOptions(config=config, db_url=db_url, app_db_name=app_db_name, show_password=show_password)
    if output is Output.text:
        ctx.stdout.write(verbs.url(ctx, options) + "\n")
        return
    from dbos_migrate.report.json import print_json, url_document

    try:
        found = verbs.url(ctx, options)
    except MigrateError as exc:
        print_json(url_document(None, exc), ctx.stdout)
        raise typer.Exit(exc.exit_code) from None
    print_json(url_document(found, None), ctx.stdout)


# ---------------------------------------------------------------------------- the local server

PortOpt = Annotated[
    Optional[int],  # noqa: UP045
    option(
        "--port",
        "-p",
        metavar="PORT",
        min=1,
        max=65535,
        show_default=False,
        help="TCP port on 127.0.0.1 [default: $PGPORT, else the server start recorded, else 5432]",
    ),
]


PgVersionOpt = Annotated[
    Optional[int],  # noqa: UP045
    option(
        "--pg-version",
        metavar="MAJOR",
        min=10,
        show_default=False,
        help="PostgreSQL major version of a new server, e.g. 16 as on DBOS Cloud, where its binaries "
        "exist [default: the newest found; Docker: 16]",
    ),
]


def _local(typer_ctx: typer.Context, action: str, port: int | None, **kwargs: Any) -> Any:
    """Run a localpg action on `port`, else $PGPORT, else None: the server `postgres start`
    recorded, or the default port (its errors exit 3). The home comes from the Context's
    environment, so DBOS_MIGRATE_HOME in an --env-file counts."""
    from dbos_migrate import localpg

    environ = _ctx(typer_ctx).environ
    if port is None:
        env_port = environ.get("PGPORT", "")
        port = int(env_port) if env_port.isdigit() and 0 < int(env_port) < 65536 else None
    return getattr(localpg, action)(port, localpg.default_home(environ), **kwargs)


def _postgres(typer_ctx: typer.Context, action: str, output: Output, port: int | None, **kwargs: Any) -> Any | None:
    """`_local`, and with -o json its one document (an error included); None when printed."""
    if output is Output.text:
        return _local(typer_ctx, action, port, **kwargs)
    from dbos_migrate.report.json import local_server_document, print_json

    out = _ctx(typer_ctx).stdout
    try:
        server = _local(typer_ctx, action, port, **kwargs)
    except MigrateError as exc:
        print_json(local_server_document(action, None, exc), out)
        raise typer.Exit(exc.exit_code) from None
    print_json(local_server_document(action, server, None), out)
    if action == "status" and not server.running:
        raise typer.Exit(1)
    return None


@command("start", parent=postgres_app)
def postgres_start(
    typer_ctx: typer.Context,
    port: PortOpt = None,
    pg_version: PgVersionOpt = None,
    output: OutputOpt = Output.text,
    quiet: Annotated[
        bool, option("-q", "--quiet", help="Only errors, and the line to paste when the port is not 5432.")
    ] = False,
    verbose: VerboseOpt = False,
) -> None:
    """Start the local development PostgreSQL (or find it running) and print its URL."""
    from dbos_migrate.localpg.base import version_note

    out = _ctx(typer_ctx).stdout
    server = _postgres(typer_ctx, "start", output, port, major=pg_version)
    if server is None:
        return
    if quiet:
        if server.port != 5432:
            out.write(f"export DBOS_DATABASE_URL={server.url}/postgres\n")
        return
    if server.moved_from is not None:
        out.write(
            f"Port {server.moved_from} is taken by a server dbos-migrate did not start; "
            f"using port {server.port} instead.\n\n"
        )
    out.write(server.describe() + "\n")
    if not server.changed:
        out.write("  (it was already running)\n")
    note = version_note(server.version)
    if note:
        out.write(f"\n{note}\n")
    if server.port == 5432:
        out.write("\nuser postgres, password dbos: the default target works, e.g. `dbos-migrate up`\n")
    else:
        out.write(
            "\nuser postgres, password dbos. dbos-migrate finds it by itself; point your app at it with:\n"
            f"  export DBOS_DATABASE_URL={server.url}/postgres\n"
        )


@command("stop", parent=postgres_app)
def postgres_stop(
    typer_ctx: typer.Context,
    port: PortOpt = None,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Stop the local development PostgreSQL."""
    out = _ctx(typer_ctx).stdout
    server = _postgres(typer_ctx, "stop", output, port)
    if server is None or quiet:
        return
    if server.foreign:
        out.write(server.describe() + "\n")
        return
    out.write(f"PostgreSQL on port {server.port}: " + ("stopped" if server.changed else "was not running") + "\n")


@command("status", parent=postgres_app)
def postgres_status(
    typer_ctx: typer.Context,
    port: PortOpt = None,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Say whether the local development PostgreSQL is running (exit 0) or not (exit 1)."""
    server = _postgres(typer_ctx, "status", output, port)
    if server is None:
        return
    if not quiet:
        _ctx(typer_ctx).stdout.write(server.describe() + "\n")
    raise typer.Exit(0 if server.running else 1)
