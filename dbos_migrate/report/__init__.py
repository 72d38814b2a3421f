"""Renderers of the events the verbs emit: text for people, JSON for scripts, GitHub extras.

`reporting()` picks them for an output mode; each writes only to the streams of the Context.
A renderer's module is imported only when its mode is used (a no-op `up` in a terminal
loads neither the JSON nor the GitHub one; `--help` none), see docs/architecture.md,
"Start-up".
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dbos_migrate.context import Context

if TYPE_CHECKING:
    from dbos_migrate.events import Event, Sink
    from dbos_migrate.report.github import GithubReporter
    from dbos_migrate.report.json import JsonReporter
    from dbos_migrate.report.text import TextReporter


def in_github_actions(environ: Mapping[str, str]) -> bool:
    # GitHub's own variable, read as GitHub sets it (docs/behaviour.md, "Yes and no").
    return environ.get("GITHUB_ACTIONS", "").lower() == "true"


class Fanout:
    """One sink that hands each event to several."""

    def __init__(self, *sinks: Callable[[Event], None]) -> None:
        self.sinks = sinks

    def __call__(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)


def reporting(ctx: Context, *, json: bool, quiet: bool = False, verbose: bool = False) -> tuple[Sink, Context]:
    """The sink for this output mode, and the Context the verb runs with: the same, but with
    the commands' output routed for this mode (to stderr in JSON mode, so stdout stays one
    document; through the spinner on a terminal)."""
    out, err = ctx.out_bytes, ctx.err_bytes
    parts: list[Callable[[Event], None]] = []
    if json:
        from dbos_migrate.report.json import JsonReporter

        parts.append(JsonReporter(ctx.stdout, guard_err=ctx.stderr))
        out = err
    else:
        from dbos_migrate.report.text import TextReporter

        text = TextReporter(ctx, quiet=quiet, verbose=verbose)
        parts.append(text)
        out, err = text.command_streams(out, err)
    if in_github_actions(ctx.environ):
        from dbos_migrate.report.github import GithubReporter

        parts.append(GithubReporter(ctx.stderr if json else ctx.stdout, ctx.environ))
    return Fanout(*parts), replace(ctx, out_bytes=out, err_bytes=err)


def __getattr__(name: str) -> Any:
    """The renderers by name, imported on first use (PEP 562)."""
    if name == "TextReporter":
        from dbos_migrate.report.text import TextReporter

        return TextReporter
    if name == "JsonReporter":
        from dbos_migrate.report.json import JsonReporter

        return JsonReporter
    if name == "GithubReporter":
        from dbos_migrate.report.github import GithubReporter

        return GithubReporter
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["Fanout", "GithubReporter", "JsonReporter", "TextReporter", "in_github_actions", "reporting"]
