"""The command line: typer argument parsing, nothing else (docs/architecture.md).

Three modules: `options` declares every option once (each with its `DBOS_MIGRATE_<OPTION>`
variable; flags win) and the typer apps; `commands` turns options into its verb's options
record (engine/options.py), picks the reporter of the --output mode, calls a verb and exits
with the code of the error the verb returned; this one runs a command line, `main(argv, ctx) -> exit status`, and is the console
script's `console()`. Heavy modules are imported inside the commands so that `--help` and
`validate` never load the database driver.
"""

import contextlib
import os
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import typer

from dbos_migrate.cli import commands as _commands  # noqa: F401 - registers the commands on `app`
from dbos_migrate.cli.options import INTERNAL_ERROR, app
from dbos_migrate.errors import MigrateError
from dbos_migrate.report.early import stopped_early, wants_json

if TYPE_CHECKING:
    from dbos_migrate.context import Context

__all__ = ["app", "console", "main"]

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
