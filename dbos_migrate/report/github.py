"""Extras under GitHub Actions: `::error` annotations and the Markdown step summary."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping

from dbos_migrate.context import TextWriter
from dbos_migrate.errors import MigrateError, Problem
from dbos_migrate.events import Event, Finished
from dbos_migrate.model import RunReport, Validation


def in_github_actions(environ: Mapping[str, str]) -> bool:
    return environ.get("GITHUB_ACTIONS", "").lower() == "true"


def escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def write_annotations(error: MigrateError | None, warnings: list[Problem], out: TextWriter) -> None:
    """`::error file=..,line=..,col=..::` lines that GitHub shows on the pull request."""
    for w in warnings:
        out.write(f"::warning file={escape(w.file, prop=True)},line={w.line},col={w.column}::"
                  f"{escape(w.path + ': ' + w.message)}\n")  # fmt: skip
    if error is None:
        return
    problems: list[Problem] = getattr(error, "problems", [])
    for p in problems:
        msg = f"{p.path}: {p.message}" + (f" ({p.hint})" if p.hint else "")
        out.write(f"::error file={escape(p.file, prop=True)},line={p.line},col={p.column}::{escape(msg)}\n")
    if not problems:
        out.write(f"::error title=dbos-migrate {error.code}::{escape(error.message)}\n")
    out.flush()


def summary(report: RunReport) -> str:
    """The Markdown appended to $GITHUB_STEP_SUMMARY."""
    ok = "✅ succeeded" if report.ok else f"❌ failed ({report.error.code if report.error else ''})"
    w = report.where
    lines = [
        f"### dbos-migrate {report.verb}: {ok}",
        "",
        f"- **Target:** `{w.target}` ({w.target_source})",
        f"- **App database:** `{w.app_database}` ({w.app_database_source})",
        f"- **Created:** {'yes' if report.created else 'no'}",
        f"- **Production:** {'yes' if w.production else 'no'}",
    ]
    if report.commands:
        lines += ["", "| # | Command | Status | Exit | Duration |", "|---|---|---|---|---|"]
        for c in report.commands:
            cmd = c.command.replace("|", "\\|").replace("\n", " ")
            code = c.exit_code if c.exit_code is not None else "-"
            lines.append(f"| {c.index} | `{cmd}` | {c.status} | {code} | {c.duration_s:.2f}s |")
    if report.error is not None:
        lines += ["", f"**Error:** {report.error.message}"]
    return "\n".join(lines) + "\n"


def append_summary(path: str, text: str) -> None:
    """Append to the step summary file; never follow a link planted in its place."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        with os.fdopen(fd, "a", encoding="utf-8") as fh:
            fh.write(text)


class GithubReporter:
    """Annotations for every verb; the step summary for up, down and plan."""

    def __init__(self, out: TextWriter, environ: Mapping[str, str]) -> None:
        self.out = out
        self.summary_path = environ.get("GITHUB_STEP_SUMMARY")

    def __call__(self, event: Event) -> None:
        if not isinstance(event, Finished):
            return
        result = event.result
        write_annotations(result.error, result.where.warnings if not isinstance(result, Validation) else result.warnings,
                    self.out)  # fmt: skip
        if self.summary_path and isinstance(result, RunReport):
            append_summary(self.summary_path, summary(result))
