"""The command line's vocabulary: the typer apps, the `option` and `command` helpers, and
every option declared once as an `Annotated` alias (each with its `DBOS_MIGRATE_*` variable)
that the commands reuse (docs/architecture.md, "Where a change goes")."""

from collections.abc import Callable
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Optional, TypeVar

import typer

from dbos_migrate.errors import MigrateError
from dbos_migrate.report.early import ENV_PREFIX

if TYPE_CHECKING:
    from dbos_migrate.context import Context

INTERNAL_ERROR = 70
F = TypeVar("F", bound=Callable[..., Any])

app = typer.Typer(
    name="dbos-migrate",
    help="Run the deploy-time `dbos migrate` step of a DBOS app: validate dbos-config.yaml, create the "
    "app and system databases if missing, and run its migrations under a lock. Every option can also "
    f"be set as {ENV_PREFIX}<OPTION> in the environment (flags win).",
    add_completion=True,  # --install-completion, --show-completion (docs/behaviour.md)
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
ConfigOpt = Annotated[
    Str,
    option(
        "-c",
        "--config",
        metavar="PATH",
        show_default=False,
        help="Path to dbos-config.yaml [default: ./dbos-config.yaml]",
    ),
]
DbUrlOpt = Annotated[
    Str,
    option(
        "-D",
        "--db-url",
        metavar="URL",
        show_default=False,
        help="PostgreSQL instance URL, e.g. the output of `dbos-cloud db url`.",
    ),
]
AppDbOpt = Annotated[
    Str, option("--app-db-name", metavar="NAME", show_default=False, help="App database name (overrides the config).")
]


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
    option(
        "--env-file",
        metavar="PATH",
        show_default=False,
        is_eager=True,
        callback=_env_files,
        help="Load variables, DBOS_MIGRATE_* options included, from this dotenv file first "
        "(repeatable; never overrides the environment or a flag).",
    ),
]
OutputOpt = Annotated[Output, option("--output", "-o", help="text for people, json for scripts and CI.")]
QuietOpt = Annotated[bool, option("-q", "--quiet", help="Only errors, warnings and the commands' own output.")]
VerboseOpt = Annotated[bool, option("-v", "--verbose", help="More detail; tracebacks for internal errors.")]
ProductionOpt = Annotated[bool, option("--production", help="Treat the target as production.")]
MaintOpt = Annotated[
    Str,
    option(
        "--maintenance-db",
        metavar="NAME",
        show_default=False,
        help="Database to connect to when creating one [default: postgres, then template1]",
    ),
]
LockTimeoutOpt = Annotated[
    float, option("--lock-timeout", metavar="SECONDS", min=0, help="Seconds to wait for the migration lock (exit 4).")
]
CommandTimeoutOpt = Annotated[
    Optional[float],  # noqa: UP045
    option(
        "--command-timeout",
        metavar="SECONDS",
        min=0,
        show_default=False,
        help="Stop a command running longer than this many seconds (exit 124).",
    ),
]
KillAfterOpt = Annotated[
    float,
    option(
        "--kill-after",
        metavar="SECONDS",
        min=0,
        help="When a command is stopped (signal, timeout) or leaves processes "
        "running, KILL what is left this long after TERM.",
    ),
]
LeaseTtlOpt = Annotated[
    float,
    option(
        "--lease-ttl",
        metavar="SECONDS",
        min=2,
        hidden=True,
        help="Seconds a run's lease outlives its last renewal (docs/reliability.md).",
    ),
]
WaitOpt = Annotated[
    float,
    option(
        "--wait",
        metavar="SECONDS",
        min=0,
        help="Seconds to keep retrying while the server is not accepting connections.",
    ),
]
RehearseUrlOpt = Annotated[
    Str,
    option(
        "--rehearse-url",
        metavar="URL",
        show_default=False,
        help="Instance to rehearse on [default: the target instance]",
    ),
]
RehearseSharedOpt = Annotated[
    bool,
    option(
        "--rehearse-shared-credentials",
        help="With the rehearsal on the target instance: give its commands this role's "
        "credentials instead of a temporary role's (unsafe for untrusted changes).",
    ),
]
DryRunOpt = Annotated[bool, option("--dry-run", help="Print the plan; change nothing, run nothing.")]
NoHistoryOpt = Annotated[bool, option("--no-history", help="Do not record runs in dbos_migrate.history.")]
HistorySchemaOpt = Annotated[
    str, option("--history-schema", metavar="SCHEMA", help="Schema of the history table (one you own).")
]
NoDataChecksOpt = Annotated[
    bool,
    option(
        "--no-data-checks",
        help="With the rehearsal: do not ask the app database's rows whether a change fails on them.",
    ),
]
DataCheckTimeoutOpt = Annotated[
    float,
    option(
        "--data-check-timeout",
        metavar="SECONDS",
        min=0.001,
        help="With the rehearsal: stop each data or workflow check after this long (it is then unknown).",
    ),
]
NoRollbackCheckOpt = Annotated[
    bool, option("--no-rollback-check", help="With --rehearse: do not rehearse database.rollback after the migrations.")
]
StrictOpt = Annotated[
    bool,
    option(
        "--strict", help="With the rehearsal: fail (exit 6) on any breaking change, even with no unfinished workflows."
    ),
]
NoCreateOpt = Annotated[bool, option("--no-create", help="Fail if the app database is missing instead of creating it.")]
AppRoleOpt = Annotated[
    Str,
    option(
        "-r",
        "--app-role",
        metavar="ROLE",
        show_default=False,
        help="Grant this existing role what the app needs at run time, on both databases.",
    ),
]
SystemDbOpt = Annotated[
    SystemDbMode,
    option(
        "--system-db",
        help="auto: create the DBOS system database if missing and migrate its schema with the "
        "app's DBOS toolchain; create: only create it; skip: leave it alone.",
    ),
]
FailOnBreakingOpt = Annotated[
    bool,
    option("--fail-on-breaking", help="Rehearse first; refuse (exit 6) if a change would break running workflows."),
]
AllowBreakingOpt = Annotated[
    bool, option("--allow-breaking", help="With --fail-on-breaking: go on anyway, and record that in history.")
]

# The flags `dbos migrate` users type (docs/dbos-compatibility.md, "The flags DBOS users type").
SysDbUrlOpt = Annotated[
    Str,
    option(
        "-s",
        "--sys-db-url",
        metavar="URL",
        show_default=False,
        help="The DBOS system database URL [default: system_database_url, then "
        "$DBOS_SYSTEM_DATABASE_URL, then <app_db>_dbos_sys on the target]",
    ),
]
SchemaOpt = Annotated[
    Str,
    option(
        "--schema",
        metavar="NAME",
        show_default=False,
        help="The DBOS system schema [default: system_database_schema_name, else dbos]",
    ),
]
PrintUserRoleOpt = Annotated[
    bool,
    option(
        "--print-user-role",
        help="Print the SQL granting -r ROLE what it needs on both databases; connect to nothing, change nothing.",
    ),
]
PrintMigrationsOpt = Annotated[
    Str,
    option(
        "--print-migrations",
        metavar="all|N",
        show_default=False,
        help="Print what would run, in order (databases, the DBOS toolchain with "
        "the SQL it prints from migration N on, commands, grants); run nothing.",
    ),
]


class DatasourceMode(str, Enum):
    auto = "auto"
    skip = "skip"


DatasourceOpt = Annotated[
    DatasourceMode,
    option(
        "--datasource",
        help="auto: prepare in the app database what the app's own DBOS needs there "
        "(Python 3.x SQLAlchemyDatasource.migrate; Python 1.x-2.x dbos migrate -D); skip: leave it to the app.",
    ),
]


def _printing(print_user_role: bool, print_migrations: str | None) -> Any:
    """The verb of --print-user-role / --print-migrations, or None without them."""
    if not print_user_role and print_migrations is None:
        return None
    from dbos_migrate.verbs import printing

    return printing.print_user_role if print_user_role else printing.print_migrations


ConfirmOpt = Annotated[
    Str,
    option(
        "--confirm",
        metavar="APP_DB_NAME",
        show_default=False,
        help="Confirm a production rollback by naming the app database.",
    ),
]
RehearseOpt = Annotated[
    bool, option("--rehearse", help="Run the migrations on a scratch copy of the schema and classify the changes.")
]
DownRehearseOpt = Annotated[
    bool,
    option(
        "--rehearse",
        help="First rehearse the rollback on a scratch copy of the schema and show "
        "what it would destroy (rows counted read-only).",
    ),
]
RunOpt = Annotated[
    Str,
    option(
        "--run",
        metavar="RUN_ID",
        show_default=False,
        help="Show every command of one run (ids as `history` prints them).",
    ),
]


PathsArg = Annotated[
    Optional[list[str]],  # noqa: UP045
    # Hidden from the Arguments table, whose rendering differs between typer versions
    # (`<list[str]>`); the command's help says what PATH is. Newer typers write the usage
    # line's `[PATH]...` themselves, older ones print the metavar as it is.
    typer.Argument(
        metavar="PATH" if hasattr(typer.core.TyperArgument, "_usage_display_name") else "[PATH]...",
        show_default=False,
        hidden=True,
    ),
]


def _ctx(typer_ctx: typer.Context) -> "Context":
    """The Context main() built, found on the root of typer's context chain."""
    root = typer_ctx.find_root()
    if root.obj is None:  # called through typer's own runner: build it here
        from dbos_migrate.context import Context

        root.obj = Context.from_process()
    return root.obj  # type: ignore[no-any-return]
