"""The command line: typer argument parsing, nothing else (docs/architecture.md).

Each command turns its options into `verbs.Options`, picks the reporter of its --output
mode, calls a verb, and exits with the code of the error the verb returned. Every option
can also come from an environment variable `DBOS_MIGRATE_<OPTION>` (flags win), and every
command takes `--env-file`. Heavy modules are imported inside the commands so that
`--help` and `validate` never load the database driver.
"""

import contextlib
import os
import sys
from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer

from dbos_migrate import __version__
from dbos_migrate.errors import MigrateError
from dbos_migrate.report.early import ENV_PREFIX, stopped_early, wants_json

if TYPE_CHECKING:
    from dbos_migrate.context import Context

INTERNAL_ERROR = 70
F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="dbos-migrate",
    help="Run the deploy-time `dbos migrate` step of a DBOS app: validate dbos-config.yaml, create the "
    "app and system databases if missing, and run its migrations under a lock. Every option can also "
    f"be set as {ENV_PREFIX}<OPTION> in the environment (flags win).",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
postgres_app = typer.Typer(
    help="Run a local development PostgreSQL (user postgres, password dbos).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(
    postgres_app,
    name="postgres",
    short_help="Run a local development PostgreSQL (user postgres, password dbos).",
)


class Output(str, Enum):
    text = "text"
    json = "json"


class SystemDbMode(str, Enum):
    auto = "auto"
    create = "create"
    skip = "skip"


def option(*decls: str, **kwargs: Any) -> Any:
    """A typer option that also reads DBOS_MIGRATE_<LONG_NAME> from the environment."""
    long = next(d for d in decls if d.startswith("--"))
    kwargs.setdefault("envvar", ENV_PREFIX + long[2:].upper().replace("-", "_"))
    return typer.Option(*decls, **kwargs)


def command(name: str | None = None, *, parent: typer.Typer = app, **kwargs: Any) -> Callable[[F], F]:
    """@app.command with the docstring's first line as the full, uncut summary in --help."""

    def register(fn: F) -> F:
        kwargs.setdefault("short_help", (fn.__doc__ or "").strip().splitlines()[0])
        parent.command(name, **kwargs)(fn)
        return fn

    return register


Str = Optional[str]  # noqa: UP045 - typer needs Optional on 3.10
ConfigOpt = Annotated[Str, option("-c", "--config", metavar="PATH", show_default=False,
                                  help="Path to dbos-config.yaml [default: ./dbos-config.yaml]")]  # fmt: skip
DbUrlOpt = Annotated[Str, option("-D", "--db-url", metavar="URL", show_default=False,
                                 help="PostgreSQL instance URL, e.g. the output of `dbos-cloud db url`.")]  # fmt: skip
AppDbOpt = Annotated[Str, option("--app-db-name", metavar="NAME", show_default=False,
                                 help="App database name (overrides the config).")]  # fmt: skip


def _env_files(typer_ctx: typer.Context, paths: Optional[list[str]]) -> list[str]:  # noqa: UP045
    """--env-file is eager: its variables join the Context's environment, and those of the
    options (DBOS_MIGRATE_*) become option defaults, before any other option is read."""
    if not paths:
        return []
    from dbos_migrate.settings import envfile

    ctx = _ctx(typer_ctx)
    try:
        added = envfile.added(paths, ctx.environ)
    except MigrateError as exc:
        error = typer.BadParameter(exc.message + (f" ({exc.hint})" if exc.hint else ""))
        if typer_ctx.parent is None:  # before the command: raised by _root, once click knows which
            typer_ctx.meta[_ENV_FILE_ERROR] = error
            return []
        raise error from None
    ctx.environ = {**ctx.environ, **added}
    typer_ctx.default_map = _option_defaults(typer_ctx.command, added, typer_ctx.default_map)
    return paths


_ENV_FILE_ERROR = "dbos_migrate.env_file_error"


def _option_defaults(command: Any, variables: dict[str, str], into: Any) -> dict[str, Any]:
    """click's default_map for `command` and the commands below it: each option whose
    variable is in `variables` (and not already set by an earlier file) gets its value."""
    out: dict[str, Any] = dict(into or {})
    for param in command.params:
        if isinstance(param.envvar, str) and param.envvar in variables and param.name != "env_file":
            out.setdefault(param.name, variables[param.envvar])
    for name, sub in getattr(command, "commands", {}).items():
        out[name] = _option_defaults(sub, variables, out.get(name))
    return out


EnvFileOpt = Annotated[
    Optional[list[str]],  # noqa: UP045
    option("--env-file", metavar="PATH", show_default=False, is_eager=True, callback=_env_files,
           help="Load variables, DBOS_MIGRATE_* options included, from this dotenv file first "
           "(repeatable; never overrides the environment or a flag)."),
]  # fmt: skip
OutputOpt = Annotated[Output, option("--output", "-o", help="text for people, json for scripts and CI.")]
QuietOpt = Annotated[
    bool, option("-q", "--quiet", help="Only errors, warnings and the commands' own output.")
]
VerboseOpt = Annotated[bool, option("-v", "--verbose", help="More detail; tracebacks for internal errors.")]
ProductionOpt = Annotated[bool, option("--production", help="Treat the target as production.")]
MaintOpt = Annotated[Str, option("--maintenance-db", metavar="NAME", show_default=False,
                                 help="Database to connect to when creating one [default: postgres, then template1]")]  # fmt: skip
LockTimeoutOpt = Annotated[float, option("--lock-timeout", metavar="SECONDS", min=0,
                                         help="Seconds to wait for the migration lock (exit 4).")]  # fmt: skip
CommandTimeoutOpt = Annotated[
    Optional[float],  # noqa: UP045
    option("--command-timeout", metavar="SECONDS", min=0, show_default=False,
           help="Stop a command running longer than this many seconds (exit 124)."),
]  # fmt: skip
KillAfterOpt = Annotated[float, option("--kill-after", metavar="SECONDS", min=0,
                                       help="When a command is stopped (signal, timeout) or leaves processes "
                                       "running, KILL what is left this long after TERM.")]  # fmt: skip
LeaseTtlOpt = Annotated[float, option("--lease-ttl", metavar="SECONDS", min=2, hidden=True,
                                     help="Seconds a run's lease outlives its last renewal (docs/reliability.md).")]  # fmt: skip
WaitOpt = Annotated[float, option("--wait", metavar="SECONDS", min=0,
                                  help="Seconds to keep retrying while the server is not accepting connections.")]  # fmt: skip
RehearseUrlOpt = Annotated[Str, option("--rehearse-url", metavar="URL", show_default=False,
                                       help="Instance to rehearse on [default: the target instance]")]  # fmt: skip
RehearseSharedOpt = Annotated[bool, option("--rehearse-shared-credentials",
                                           help="With the rehearsal on the target instance: give its commands this role's "
                                           "credentials instead of a temporary role's (unsafe for untrusted changes).")]  # fmt: skip
DryRunOpt = Annotated[bool, option("--dry-run", help="Print the plan; change nothing, run nothing.")]
NoHistoryOpt = Annotated[bool, option("--no-history", help="Do not record runs in dbos_migrate.history.")]
HistorySchemaOpt = Annotated[str, option("--history-schema", metavar="SCHEMA",
                                         help="Schema of the history table (one you own).")]  # fmt: skip
NoDataChecksOpt = Annotated[bool, option("--no-data-checks",
                                         help="With the rehearsal: do not ask the app database's rows whether a change fails on them.")]  # fmt: skip
DataCheckTimeoutOpt = Annotated[float, option("--data-check-timeout", metavar="SECONDS", min=0.001,
                                              help="With the rehearsal: stop each data or workflow check after this long (it is then unknown).")]  # fmt: skip
NoRollbackCheckOpt = Annotated[bool, option("--no-rollback-check",
                                            help="With --rehearse: do not rehearse database.rollback after the migrations.")]  # fmt: skip
StrictOpt = Annotated[bool, option("--strict",
                                   help="With the rehearsal: fail (exit 6) on any breaking change, even with no unfinished workflows.")]  # fmt: skip
NoCreateOpt = Annotated[
    bool, option("--no-create", help="Fail if the app database is missing instead of creating it.")
]
AppRoleOpt = Annotated[Str, option("-r", "--app-role", metavar="ROLE", show_default=False,
                                   help="Grant this existing role what the app needs at run time, on both databases.")]  # fmt: skip
SystemDbOpt = Annotated[
    SystemDbMode,
    option("--system-db", help="auto: create the DBOS system database if missing and migrate its schema with the "
           "app's DBOS toolchain; create: only create it; skip: leave it alone."),
]  # fmt: skip
FailOnBreakingOpt = Annotated[bool, option("--fail-on-breaking",
                                           help="Rehearse first; refuse (exit 6) if a change would break running workflows.")]  # fmt: skip
AllowBreakingOpt = Annotated[bool, option("--allow-breaking",
                                          help="With --fail-on-breaking: go on anyway, and record that in history.")]  # fmt: skip

# The flags `dbos migrate` users type (docs/dbos-compatibility.md, "The flags DBOS users type").
SysDbUrlOpt = Annotated[Str, option("-s", "--sys-db-url", metavar="URL", show_default=False,
                                    help="The DBOS system database URL [default: system_database_url, then "
                                    "$DBOS_SYSTEM_DATABASE_URL, then <app_db>_dbos_sys on the target]")]  # fmt: skip
SchemaOpt = Annotated[Str, option("--schema", metavar="NAME", show_default=False,
                                  help="The DBOS system schema [default: system_database_schema_name, else dbos]")]  # fmt: skip
PrintUserRoleOpt = Annotated[bool, option("--print-user-role",
                                          help="Print the SQL granting -r ROLE what it needs on both databases; "
                                          "connect to nothing, change nothing.")]  # fmt: skip
PrintMigrationsOpt = Annotated[Str, option("--print-migrations", metavar="all|N", show_default=False,
                                           help="Print what would run, in order (databases, the DBOS toolchain with "
                                           "the SQL it prints from migration N on, commands, grants); run nothing.")]  # fmt: skip


class DatasourceMode(str, Enum):
    auto = "auto"
    skip = "skip"


DatasourceOpt = Annotated[
    DatasourceMode,
    option("--datasource", help="auto: prepare in the app database what the app's own DBOS needs there "
           "(Python 3.x SQLAlchemyDatasource.migrate; Python 1.x-2.x dbos migrate -D); skip: leave it to the app."),
]  # fmt: skip


def _printing(print_user_role: bool, print_migrations: str | None, verb: str) -> tuple[Any, dict[str, Any]]:
    """The verb of --print-user-role / --print-migrations, or (None, {}) without them."""
    if not print_user_role and print_migrations is None:
        return None, {}
    from dbos_migrate.verbs import printing

    fn = printing.print_user_role if print_user_role else printing.print_migrations
    return fn, {"verb": verb}


ConfirmOpt = Annotated[Str, option("--confirm", metavar="APP_DB_NAME", show_default=False,
                                   help="Confirm a production rollback by naming the app database.")]  # fmt: skip
RehearseOpt = Annotated[bool, option("--rehearse",
                                     help="Run the migrations on a scratch copy of the schema and classify the changes.")]  # fmt: skip
DownRehearseOpt = Annotated[bool, option("--rehearse",
                                         help="First rehearse the rollback on a scratch copy of the schema and show "
                                         "what it would destroy (rows counted read-only).")]  # fmt: skip
RunOpt = Annotated[Str, option("--run", metavar="RUN_ID", show_default=False,
                               help="Show every command of one run (ids as `history` prints them).")]  # fmt: skip


PathsArg = Annotated[
    Optional[list[str]],  # noqa: UP045
    # Hidden from the Arguments table, whose rendering differs between typer versions
    # (`<list[str]>`); the command's help says what PATH is. Newer typers write the usage
    # line's `[PATH]...` themselves, older ones print the metavar as it is.
    typer.Argument(metavar="PATH" if hasattr(typer.core.TyperArgument, "_usage_display_name") else "[PATH]...",
                   show_default=False, hidden=True),
]  # fmt: skip


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


def _ctx(typer_ctx: typer.Context) -> "Context":
    """The Context main() built, found on the root of typer's context chain."""
    root = typer_ctx.find_root()
    if root.obj is None:  # called through typer's own runner: build it here
        from dbos_migrate.context import Context

        root.obj = Context.from_process()
    return root.obj  # type: ignore[no-any-return]


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


def _run(
    typer_ctx: typer.Context, verb: Any, output: Output, quiet: bool, verbose: bool, **kwargs: Any
) -> None:
    """Run `verb` with the reporter of this output mode; exit with its error's code."""
    from dbos_migrate.report import reporting
    from dbos_migrate.verbs import Options

    kwargs.pop("env_file", None)  # read by its eager callback, _env_files
    sink, run_ctx = reporting(_ctx(typer_ctx), json=output is Output.json, quiet=quiet, verbose=verbose)
    extra = kwargs.pop("verb_kwargs", {})
    result = verb(run_ctx, Options(**kwargs), sink, **extra)
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

    verb: Any = verbs.up
    verb_kwargs: dict[str, Any] = {}
    if fail_on_breaking:
        from dbos_migrate.verbs.rehearsal import gated_up

        verb = gated_up
        verb_kwargs = {"allow_breaking": allow_breaking, "rehearse_url": rehearse_url}
    printer, printer_kwargs = _printing(print_user_role, print_migrations, "up")
    if printer is not None:
        verb, verb_kwargs = printer, printer_kwargs
    _run(
        typer_ctx, verb, output, quiet, verbose, verb_kwargs=verb_kwargs, env_file=env_file,
        config=config, db_url=db_url, app_db_name=app_db_name, dry_run=dry_run, no_create=no_create,
        app_role=app_role, wait=wait, lock_timeout=lock_timeout, command_timeout=command_timeout,
        grace=kill_after, lease_ttl=lease_ttl, maintenance_db=maintenance_db, no_history=no_history,
        production=production, history_schema=history_schema, system_db=system_db.value,
        data_checks=not no_data_checks, data_check_timeout=data_check_timeout,
        strict=strict, sys_db_url=sys_db_url, schema=schema, print_user_role=print_user_role,
        print_migrations=print_migrations, datasource=datasource.value,
        rehearse_shared_credentials=rehearse_shared_credentials,
    )  # fmt: skip


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

    printer, verb_kwargs = _printing(False, print_migrations, "down")
    verb: Any = printer or verbs.down
    if rehearse and printer is None:
        from dbos_migrate.verbs.rehearsal import down as rehearsed_down

        verb, verb_kwargs = rehearsed_down, {"rehearse_url": rehearse_url}
    _run(
        typer_ctx, verb, output, quiet, verbose, verb_kwargs=verb_kwargs, env_file=env_file,
        config=config, db_url=db_url, app_db_name=app_db_name, yes=yes, confirm=confirm, production=production,
        dry_run=dry_run, wait=wait, lock_timeout=lock_timeout, command_timeout=command_timeout,
        grace=kill_after, lease_ttl=lease_ttl, no_history=no_history, history_schema=history_schema,
        sys_db_url=sys_db_url, print_migrations=print_migrations, data_check_timeout=data_check_timeout,
    )  # fmt: skip


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
    verb_kwargs: dict[str, Any] = {}
    if rehearse:
        from dbos_migrate.verbs.rehearsal import plan as rehearse_plan

        verb = rehearse_plan
        verb_kwargs = {"rehearse_url": rehearse_url}
    _run(typer_ctx, verb, output, quiet, verbose, verb_kwargs=verb_kwargs, env_file=env_file, config=config,
         db_url=db_url, app_db_name=app_db_name, dry_run=not rehearse, command_timeout=command_timeout,
         grace=kill_after, data_checks=not no_data_checks, data_check_timeout=data_check_timeout,
         strict=strict, rollback_check=not no_rollback_check, sys_db_url=sys_db_url, schema=schema,
         rehearse_shared_credentials=rehearse_shared_credentials)  # fmt: skip


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

    _run(typer_ctx, verbs.status, output, quiet, verbose, env_file=env_file, config=config, db_url=db_url,
         app_db_name=app_db_name, production=production, history_schema=history_schema,
         sys_db_url=sys_db_url, schema=schema)  # fmt: skip


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

    _run(typer_ctx, verbs.wait, output, quiet, verbose, env_file=env_file, config=config, db_url=db_url,
         app_db_name=app_db_name, wait=wait)  # fmt: skip


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

    _run(typer_ctx, verbs.history, output, quiet, verbose, verb_kwargs={"limit": limit, "run_id": run},
         env_file=env_file, config=config, db_url=db_url, app_db_name=app_db_name,
         history_schema=history_schema)  # fmt: skip


@command()
def url(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    show_password: Annotated[
        bool, option("--show-password", help="Print the password instead of ***.")
    ] = False,
    env_file: EnvFileOpt = None,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,  # the URL is the output: -q changes nothing
    verbose: VerboseOpt = False,
) -> None:
    """Print the app database URL, like `dbos-cloud db url` (password masked unless asked)."""
    from dbos_migrate import verbs

    ctx = _ctx(typer_ctx)
    options = verbs.Options(config=config, db_url=db_url, app_db_name=app_db_name)
    if output is Output.text:
        ctx.stdout.write(verbs.url(ctx, options, show_password=show_password) + "\n")
        return
    from dbos_migrate.report.json import print_json, url_document

    try:
        found = verbs.url(ctx, options, show_password=show_password)
    except MigrateError as exc:
        print_json(url_document(None, exc), ctx.stdout)
        raise typer.Exit(exc.exit_code) from None
    print_json(url_document(found, None), ctx.stdout)


# ---------------------------------------------------------------------------- the local server

PortOpt = Annotated[
    Optional[int],  # noqa: UP045
    option("--port", "-p", metavar="PORT", min=1, max=65535, show_default=False,
           help="TCP port on 127.0.0.1 [default: $PGPORT, else the server start recorded, else 5432]"),
]  # fmt: skip


PgVersionOpt = Annotated[
    Optional[int],  # noqa: UP045
    option("--pg-version", metavar="MAJOR", min=10, show_default=False,
           help="PostgreSQL major version of a new server, e.g. 16 as on DBOS Cloud, where its binaries "
           "exist [default: the newest found; Docker: 16]"),
]  # fmt: skip


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


def _postgres(
    typer_ctx: typer.Context, action: str, output: Output, port: int | None, **kwargs: Any
) -> Any | None:
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
        out.write("\nuser postgres, password dbos. dbos-migrate finds it by itself; point your app at it with:\n"
                  f"  export DBOS_DATABASE_URL={server.url}/postgres\n")  # fmt: skip


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
    out.write(
        f"PostgreSQL on port {server.port}: " + ("stopped" if server.changed else "was not running") + "\n"
    )


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


# ---------------------------------------------------------------------------- entry point


def _usage_error_base() -> type[Exception]:
    """click's ClickException, vendored or not: typer 0.12 uses click, newer ones carry a copy."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _usage_failed(exc: Exception, args: list[str], ctx: "Context") -> int:
    """A usage error (bad option, bad value): the message on stderr, in words of our own
    (report/usage.py), and in JSON mode the same as one document on stdout, naming the
    command click was parsing."""
    from dbos_migrate.report import usage

    message = usage.reworded(exc)
    if message is not None:
        exc.format_message = lambda: message  # type: ignore[attr-defined]
    exc.show(file=ctx.stderr)  # type: ignore[attr-defined]
    code: int = exc.exit_code  # type: ignore[attr-defined]
    if wants_json(args, ctx.environ):
        from dbos_migrate.errors import UsageError
        from dbos_migrate.report.json import document, print_json, usage_result

        error = UsageError(exc.format_message(), usage.help_hint(exc))  # type: ignore[attr-defined]
        print_json(document(usage_result(usage.command_name(exc), error)), ctx.stdout)
    return code


def _interrupt(signum: int, frame: object) -> None:
    from dbos_migrate.errors import Interrupted

    raise Interrupted(signum)


def main(argv: list[str], ctx: "Context") -> int:
    """Run the command line `argv` in `ctx` and return the exit status (httpie's
    `main(args, env)`): one clear message and the right code, whatever happens.

    Usage errors exit 2 (as one JSON document too with -o json); our own error kinds and
    any internal bug become a message here, never a raw traceback. Tests call this with an
    in-memory Context; `console()` calls it with the real process.
    """
    args = list(argv)
    verbose = "-v" in args or "--verbose" in args
    code = 0
    try:
        # click and rich print help and usage to sys.stdout/sys.stderr: point those at the Context.
        with contextlib.redirect_stdout(ctx.stdout), contextlib.redirect_stderr(ctx.stderr):
            returned = app(args=args, prog_name="dbos-migrate", obj=ctx, standalone_mode=False)
        code = returned if isinstance(returned, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except typer.Exit as exc:
        code = exc.exit_code
    except MigrateError as exc:  # one no verb reported: a signal before or after the verb ran
        code = stopped_early(exc, args, ctx.stdout, ctx.stderr, ctx.environ)
    except Exception as exc:  # an internal bug: never a raw traceback unless asked
        if isinstance(exc, _usage_error_base()):
            code = _usage_failed(exc, args, ctx)
        elif isinstance(exc, typer.Abort):
            ctx.stderr.write("Aborted!\n")
            code = 1
        else:
            if verbose:  # the traceback, with any password it quotes masked
                import traceback

                from dbos_migrate.engine.scrub import Scrubber

                known = (ctx.environ.get(k) for k in ("PGPASSWORD", "DBOS_DBPASSWORD"))
                ctx.stderr.write(Scrubber(known).text(traceback.format_exc()))
            ctx.stderr.write(
                f"internal error: {type(exc).__name__}; rerun with -v for a traceback and report it as a bug\n"
            )
            code = INTERNAL_ERROR
    ctx.stdout.flush()
    ctx.stderr.flush()
    return code


def console(handler: Callable[[int, Any], None] | None = None) -> None:
    """The `dbos-migrate` console script: the real process's Context, SIGINT and SIGTERM
    turned into an orderly stop (the command ended, the run recorded), then `main`.
    `__main__.main` installs its `handler` before importing this module."""
    import signal

    from dbos_migrate.context import Context

    signal.signal(signal.SIGINT, handler or _interrupt)
    signal.signal(signal.SIGTERM, handler or _interrupt)
    try:
        ctx = Context.from_process()
    except MigrateError as exc:  # a signal this early: nothing has been printed yet
        sys.exit(stopped_early(exc, sys.argv[1:], sys.stdout, sys.stderr, dict(os.environ)))
    try:
        code = main(sys.argv[1:], ctx)
    except MigrateError as exc:  # a signal while main was printing an error: print it once
        code = stopped_early(exc, sys.argv[1:], ctx.stdout, ctx.stderr, ctx.environ)
    for sig in (signal.SIGINT, signal.SIGTERM):  # the outcome is printed: a late signal changes nothing
        signal.signal(sig, signal.SIG_IGN)
    ctx.silence_broken_stdout()
    sys.exit(code)
