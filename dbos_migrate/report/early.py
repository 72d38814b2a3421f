"""The outcome no verb reported: a signal before the command line was loaded or after the
verb ended, as a message on stderr and, with `-o json`, the one JSON document
(docs/reliability.md, "One JSON document from the first instant")."""

from __future__ import annotations

from typing import Any

from dbos_migrate.context import TextWriter
from dbos_migrate.errors import MigrateError

ENV_PREFIX = "DBOS_MIGRATE_"


def wants_json(args: list[str], environ: dict[str, str] | Any) -> bool:
    """Whether -o/--output json was asked for, read from the raw arguments: for when they could
    not be parsed, or no verb ran, so that even then stdout is one JSON document."""
    for i, arg in enumerate(args):
        if arg in ("-o", "--output") and i + 1 < len(args):
            return args[i + 1] == "json"
        if arg.startswith("--output="):
            return arg.partition("=")[2] == "json"
        if arg.startswith("-o") and not arg.startswith("--") and len(arg) > 2:
            return arg[2:] == "json"
    return bool(environ.get(ENV_PREFIX + "OUTPUT") == "json")


def stopped_early(exc: MigrateError, args: list[str], stdout: TextWriter, stderr: TextWriter, environ: Any) -> int:
    """The error on stderr and, in JSON mode when stdout is still empty, the document; the
    exit code."""
    from dbos_migrate.report.style import Style
    from dbos_migrate.report.text import render_error

    render_error(exc, stderr, Style(False))
    if wants_json(args, environ) and not getattr(stdout, "written", False):
        from dbos_migrate.report.json import document, print_json, usage_result

        verb = next((a for a in args if not a.startswith("-")), None)
        print_json(document(usage_result(verb, exc)), stdout)
    stdout.flush()
    stderr.flush()
    return exc.exit_code
