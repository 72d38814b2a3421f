"""The command line: typer argument parsing and rendering, nothing else.

Each command builds `migrate.Options`, picks a reporter for --output, calls a verb and
exits with the code of the error kind it returned. Heavy modules are imported inside the
commands so that `--help`, `--version` and `validate` stay fast.
"""

import os
import sys
from enum import Enum
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from dbos_migrate import __version__
from dbos_migrate.errors import MigrateError

if TYPE_CHECKING:
    from dbos_migrate.context import Context

INTERNAL_ERROR = 70

app = typer.Typer(
    name="dbos-migrate",
    help="Run the deploy-time `dbos migrate` step of a DBOS app: validate dbos-config.yaml, "
    "create the app database if missing, and run its migrations under a lock.",
    add_completion=False,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
postgres_app = typer.Typer(
    help="Run a local development PostgreSQL (user postgres, password dbos).",
    no_args_is_help=True,
    rich_markup_mode=None,
)
app.add_typer(postgres_app, name="postgres")


class Output(str, Enum):
    text = "text"
    json = "json"


class SystemDbMode(str, Enum):
    auto = "auto"
    create = "create"
    skip = "skip"


ConfigOpt = Annotated[
    Optional[str],  # noqa: UP045 - typer needs Optional on 3.10
    typer.Option(
        "-c",
        "--config",
        metavar="PATH",
        help="Path to dbos-config.yaml [default: ./dbos-config.yaml]",
        show_default=False,
    ),
]
DbUrlOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "-D",
        "--db-url",
        metavar="URL",
        help="PostgreSQL instance URL, e.g. the output of `dbos-cloud db url`.",
        show_default=False,
    ),
]
AppDbOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--app-db-name", metavar="NAME", help="App database name (overrides the config).", show_default=False
    ),
]
OutputOpt = Annotated[
    Output, typer.Option("--output", "-o", help="text for people, json for scripts and CI.")
]
QuietOpt = Annotated[bool, typer.Option("-q", "--quiet", help="Only errors and warnings.")]
VerboseOpt = Annotated[
    bool, typer.Option("-v", "--verbose", help="More detail; tracebacks for internal errors.")
]
ProductionOpt = Annotated[bool, typer.Option("--production", help="Treat the target as production.")]
MaintOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--maintenance-db",
        metavar="NAME",
        help="Database to connect to when creating the app database [default: postgres, then template1]",
        show_default=False,
    ),
]
LockTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--lock-timeout", metavar="SECONDS", min=0, help="Seconds to wait for the migration lock (exit 4)."
    ),
]
CommandTimeoutOpt = Annotated[
    Optional[float],  # noqa: UP045
    typer.Option(
        "--command-timeout",
        metavar="SECONDS",
        min=0,
        help="Stop a command running longer than this many seconds (exit 124).",
        show_default=False,
    ),
]
WaitOpt = Annotated[
    float,
    typer.Option(
        "--wait",
        metavar="SECONDS",
        min=0,
        help="Seconds to keep retrying while the server is not accepting connections.",
    ),
]
RehearseUrlOpt = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option(
        "--rehearse-url", metavar="URL", show_default=False,
        help="Instance to rehearse on [default: the target instance]",
    ),
]  # fmt: skip
KillAfterOpt = Annotated[
    float,
    typer.Option(
        "--kill-after", metavar="SECONDS", min=0,
        help="When a command is stopped (signal, --command-timeout), send KILL this long after TERM.",
    ),
]  # fmt: skip
NoDataChecksOpt = Annotated[
    bool,
    typer.Option(
        "--no-data-checks",
        help="With the rehearsal: do not ask the app database's rows whether a change fails on them.",
    ),
]
DataCheckTimeoutOpt = Annotated[
    float,
    typer.Option(
        "--data-check-timeout", metavar="SECONDS", min=0.001,
        help="With the rehearsal: stop each data or workflow check after this long (it is then unknown).",
    ),
]  # fmt: skip
StrictOpt = Annotated[
    bool,
    typer.Option(
        "--strict",
        help="With the rehearsal: fail (exit 6) on any breaking change, even with no unfinished workflows.",
    ),
]
DryRunOpt = Annotated[bool, typer.Option("--dry-run", help="Print the plan; change nothing, run nothing.")]
NoHistoryOpt = Annotated[
    bool, typer.Option("--no-history", help="Do not record runs in dbos_migrate.history.")
]


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dbos-migrate {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """dbos-migrate."""


# ---------------------------------------------------------------------------- plumbing


def _ctx(typer_ctx: typer.Context) -> "Context":
    """The Context main() built, found on the root of typer's context chain."""
    obj = typer_ctx.find_root().obj
    if obj is None:  # called through typer's own runner (tests): build it here
        from dbos_migrate.context import Context

        obj = Context.from_process()
        typer_ctx.find_root().obj = obj
    return obj  # type: ignore[no-any-return]


def _run(
    typer_ctx: typer.Context, verb: Any, output: Output, quiet: bool, verbose: bool, **kwargs: Any
) -> None:
    """Run `verb` with the reporter of this output mode; exit with its error's code."""
    from dbos_migrate.report import reporting
    from dbos_migrate.verbs import Options

    ctx = _ctx(typer_ctx)
    sink, run_ctx = reporting(ctx, json=output is Output.json, quiet=quiet, verbose=verbose)
    extra = kwargs.pop("verb_kwargs", {})
    result = verb(run_ctx, Options(**kwargs), sink, **extra)
    if result.error is not None:
        raise typer.Exit(result.error.exit_code)


# ---------------------------------------------------------------------------- commands


@app.command()
def validate(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    cloud: Annotated[bool, typer.Option("--cloud", help="Also check the DBOS Cloud rules.")] = False,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
) -> None:
    """Validate dbos-config.yaml against the schema (exit 0 valid, 2 invalid)."""
    from dbos_migrate import verbs
    from dbos_migrate.events import Finished
    from dbos_migrate.report import reporting

    ctx = _ctx(typer_ctx)
    sink, _ = reporting(ctx, json=output is Output.json, quiet=quiet)
    result = verbs.validate(config, cloud=cloud, environ=ctx.environ)
    sink(Finished(result))
    raise typer.Exit(0 if result.ok else 2)


@app.command()
def up(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    dry_run: DryRunOpt = False,
    no_create: Annotated[
        bool, typer.Option("--no-create", help="Fail if the app database is missing instead of creating it.")
    ] = False,
    app_role: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--app-role",
            metavar="ROLE",
            help="Grant this existing role runtime privileges on the app database.",
            show_default=False,
        ),
    ] = None,
    wait: WaitOpt = 0.0,
    lock_timeout: LockTimeoutOpt = 300.0,
    command_timeout: CommandTimeoutOpt = None,
    kill_after: KillAfterOpt = 5.0,
    maintenance_db: MaintOpt = None,
    no_history: NoHistoryOpt = False,
    production: ProductionOpt = False,
    fail_on_breaking: Annotated[
        bool,
        typer.Option(
            "--fail-on-breaking",
            help="Rehearse first; refuse (exit 6) if a change would break running workflows.",
        ),
    ] = False,
    allow_breaking: Annotated[
        bool,
        typer.Option(
            "--allow-breaking", help="With --fail-on-breaking: go on anyway, and record that in history."
        ),
    ] = False,
    rehearse_url: RehearseUrlOpt = None,
    no_data_checks: NoDataChecksOpt = False,
    data_check_timeout: DataCheckTimeoutOpt = 5.0,
    strict: StrictOpt = False,
    system_db: Annotated[
        SystemDbMode,
        typer.Option(
            "--system-db",
            help="auto: create the DBOS system database if missing and migrate its schema with the app's DBOS "
            "toolchain; create: only create it; skip: leave it alone.",
        ),
    ] = SystemDbMode.auto,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Create the app and system databases if missing, then run database.migrate in order."""
    from dbos_migrate import verbs

    verb: Any = verbs.up
    verb_kwargs: dict[str, Any] = {}
    if fail_on_breaking:
        from dbos_migrate.rehearse.verbs import gated_up

        verb = gated_up
        verb_kwargs = {"allow_breaking": allow_breaking, "rehearse_url": rehearse_url}
    _run(
        typer_ctx, verb, output, quiet, verbose, verb_kwargs=verb_kwargs,
        config=config, db_url=db_url, app_db_name=app_db_name, dry_run=dry_run, no_create=no_create,
        app_role=app_role, wait=wait, lock_timeout=lock_timeout, command_timeout=command_timeout,
        grace=kill_after, maintenance_db=maintenance_db, no_history=no_history, production=production,
        system_db=system_db.value, data_checks=not no_data_checks, data_check_timeout=data_check_timeout,
        strict=strict,
    )  # fmt: skip


@app.command()
def down(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Skip the production confirmation.")] = False,
    confirm: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--confirm",
            metavar="APP_DB_NAME",
            help="Confirm a production rollback by naming the app database.",
            show_default=False,
        ),
    ] = None,
    production: ProductionOpt = False,
    dry_run: DryRunOpt = False,
    wait: WaitOpt = 0.0,
    lock_timeout: LockTimeoutOpt = 300.0,
    command_timeout: CommandTimeoutOpt = None,
    kill_after: KillAfterOpt = 5.0,
    no_history: NoHistoryOpt = False,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Run database.rollback in listed order (recovery), behind the production guard."""
    from dbos_migrate import verbs

    _run(
        typer_ctx, verbs.down, output, quiet, verbose,
        config=config, db_url=db_url, app_db_name=app_db_name, yes=yes, confirm=confirm, production=production,
        dry_run=dry_run, wait=wait, lock_timeout=lock_timeout, command_timeout=command_timeout,
        grace=kill_after, no_history=no_history,
    )  # fmt: skip


app.command("migrate", help="Same as `up` (the word DBOS users type).")(up)
app.command("rollback", help="Same as `down` (the word DBOS users type).")(down)


@app.command()
def plan(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    rehearse: Annotated[
        bool,
        typer.Option(
            "--rehearse", help="Run the migrations on a scratch copy of the schema and classify the changes."
        ),
    ] = False,
    rehearse_url: RehearseUrlOpt = None,
    no_data_checks: NoDataChecksOpt = False,
    data_check_timeout: DataCheckTimeoutOpt = 5.0,
    strict: StrictOpt = False,
    command_timeout: CommandTimeoutOpt = None,
    kill_after: KillAfterOpt = 5.0,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Show what `up` would do; with --rehearse, find breaking changes first."""
    from dbos_migrate import verbs

    verb: Any = verbs.plan
    verb_kwargs: dict[str, Any] = {}
    if rehearse:
        from dbos_migrate.rehearse.verbs import plan as rehearse_plan

        verb = rehearse_plan
        verb_kwargs = {"rehearse_url": rehearse_url}
    _run(typer_ctx, verb, output, quiet, verbose, verb_kwargs=verb_kwargs, config=config, db_url=db_url,
         app_db_name=app_db_name, dry_run=not rehearse, command_timeout=command_timeout,
         grace=kill_after, data_checks=not no_data_checks, data_check_timeout=data_check_timeout,
         strict=strict)  # fmt: skip


@app.command()
def status(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    production: ProductionOpt = False,
    output: OutputOpt = Output.text,
    quiet: QuietOpt = False,
) -> None:
    """Report the target, the server, the app database, the lock holder and recent runs."""
    from dbos_migrate import verbs

    _run(typer_ctx, verbs.status, output, quiet, False, config=config, db_url=db_url, app_db_name=app_db_name,
         production=production)  # fmt: skip


@app.command()
def history(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    limit: Annotated[int, typer.Option("--limit", "-n", metavar="N", min=1, help="How many rows.")] = 20,
    run: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--run", metavar="RUN_ID", help="Show every command of one run.", show_default=False),
    ] = None,
    output: OutputOpt = Output.text,
) -> None:
    """List recent runs from dbos_migrate.history, newest first."""
    from dbos_migrate import verbs

    _run(typer_ctx, verbs.history, output, False, False, verb_kwargs={"limit": limit, "run_id": run},
         config=config, db_url=db_url, app_db_name=app_db_name)  # fmt: skip


@app.command()
def url(
    typer_ctx: typer.Context,
    config: ConfigOpt = None,
    db_url: DbUrlOpt = None,
    app_db_name: AppDbOpt = None,
    show_password: Annotated[
        bool, typer.Option("--show-password", help="Print the password instead of ***.")
    ] = False,
) -> None:
    """Print the app database URL (password masked unless --show-password)."""
    from dbos_migrate import verbs

    ctx = _ctx(typer_ctx)
    options = verbs.Options(config=config, db_url=db_url, app_db_name=app_db_name)
    ctx.stdout.write(verbs.url(ctx, options, show_password=show_password) + "\n")


PortOpt = Annotated[
    Optional[int],  # noqa: UP045
    typer.Option(
        "--port", "-p", metavar="PORT", min=1, max=65535, show_default=False,
        help="TCP port on 127.0.0.1 [default: $PGPORT, else the server start recorded, else 5432]",
    ),
]  # fmt: skip


def _local(action: str, port: int | None) -> Any:
    """Run a localpg action on `port`, else $PGPORT, else None: the server `postgres start`
    recorded, or the default port (its errors exit 3)."""
    from dbos_migrate import localpg

    if port is None:
        env_port = os.environ.get("PGPORT", "")
        port = int(env_port) if env_port.isdigit() and 0 < int(env_port) < 65536 else None
    return getattr(localpg, action)(port)


@postgres_app.command("start")
def postgres_start(port: PortOpt = None) -> None:
    """Start the local development PostgreSQL (or find it running) and print its URL."""
    server = _local("start", port)
    if server.moved_from is not None:
        typer.echo(
            f"Port {server.moved_from} is taken by a server dbos-migrate did not start; "
            f"using port {server.port} instead.\n"
        )
    typer.echo(server.describe())
    if not server.changed:
        typer.echo("  (it was already running)")
    if server.port == 5432:
        typer.echo("\nuser postgres, password dbos: the default target works, e.g. `dbos-migrate up`")
    else:
        typer.echo(
            "\nuser postgres, password dbos. Point your app and dbos-migrate at it with:\n"
            f"  export DBOS_DATABASE_URL={server.url}/postgres"
        )


@postgres_app.command("stop")
def postgres_stop(port: PortOpt = None) -> None:
    """Stop the local development PostgreSQL."""
    server = _local("stop", port)
    if server.foreign:
        typer.echo(server.describe())
        return
    typer.echo(f"PostgreSQL on port {server.port}: " + ("stopped" if server.changed else "was not running"))


@postgres_app.command("status")
def postgres_status(port: PortOpt = None) -> None:
    """Say whether the local development PostgreSQL is running (exit 0) or not (exit 1)."""
    server = _local("status", port)
    typer.echo(server.describe())
    raise typer.Exit(0 if server.running else 1)


# ---------------------------------------------------------------------------- entry point


def _usage_error_base() -> type[Exception]:
    """click's ClickException, vendored or not: typer 0.12 uses click, newer ones carry a copy."""
    return next(c for c in typer.BadParameter.__mro__ if c.__name__ == "ClickException")


def _interrupt(signum: int, frame: object) -> None:
    from dbos_migrate.errors import Interrupted

    raise Interrupted(signum)


def main(argv: list[str] | None = None) -> None:
    """Console-script entry: one clear message and the right exit code, whatever happens.

    typer (in standalone mode) handles usage errors (exit 2) and --help; our own error
    kinds and any internal bug are turned into a message here, never a raw traceback.
    """
    import signal

    from dbos_migrate.context import Context

    args = sys.argv[1:] if argv is None else argv
    verbose = "-v" in args or "--verbose" in args
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    ctx = Context.from_process()
    code = 0
    try:
        returned = app(args=args, prog_name="dbos-migrate", obj=ctx, standalone_mode=False)
        code = returned if isinstance(returned, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except typer.Exit as exc:
        code = exc.exit_code
    except MigrateError as exc:
        from dbos_migrate.report.style import Style
        from dbos_migrate.report.text import render_error

        render_error(exc, ctx.stderr, Style(False))
        code = exc.exit_code
    except Exception as exc:  # an internal bug: never a raw traceback unless asked
        if isinstance(exc, _usage_error_base()):
            exc.show(file=ctx.stderr)  # type: ignore[attr-defined]
            code = exc.exit_code  # type: ignore[attr-defined]
        elif isinstance(exc, typer.Abort):
            ctx.stderr.write("Aborted!\n")
            code = 1
        else:
            if verbose:
                import traceback

                traceback.print_exc()
            ctx.stderr.write(
                f"internal error: {type(exc).__name__}; rerun with -v for a traceback and report it as a bug\n"
            )
            code = INTERNAL_ERROR
    ctx.stdout.flush()
    ctx.stderr.flush()
    ctx.silence_broken_stdout()
    sys.exit(code)
