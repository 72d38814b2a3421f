"""Renderers of the events the verbs emit: text for people, JSON for scripts, GitHub extras.

`sinks()` picks them for an output mode; each writes only to the streams of the Context.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from dbos_migrate.context import Context
from dbos_migrate.events import Event, Sink
from dbos_migrate.report.github import GithubReporter, in_github_actions
from dbos_migrate.report.json import JsonReporter
from dbos_migrate.report.text import TextReporter


class Fanout:
    """One sink that hands each event to several."""

    def __init__(self, *sinks: Callable[[Event], None]) -> None:
        self.sinks = sinks

    def __call__(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)


def reporting(
    ctx: Context, *, json: bool, quiet: bool = False, verbose: bool = False
) -> tuple[Sink, Context]:
    """The sink for this output mode, and the Context the verb runs with: the same, but with
    the commands' output routed for this mode (to stderr in JSON mode, so stdout stays one
    document; through the spinner on a terminal)."""
    out, err = ctx.out_bytes, ctx.err_bytes
    parts: list[Callable[[Event], None]] = []
    if json:
        parts.append(JsonReporter(ctx.stdout, guard_err=ctx.stderr))
        out = err
    else:
        text = TextReporter(ctx, quiet=quiet, verbose=verbose)
        parts.append(text)
        out, err = text.command_streams(out, err)
    if in_github_actions(ctx.environ):
        parts.append(GithubReporter(ctx.stderr if json else ctx.stdout, ctx.environ))
    return Fanout(*parts), replace(ctx, out_bytes=out, err_bytes=err)


__all__ = ["Fanout", "GithubReporter", "JsonReporter", "TextReporter", "in_github_actions", "reporting"]
