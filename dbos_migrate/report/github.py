"""Extras under GitHub Actions: `::error` annotations and the Markdown step summary."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

from dbos_migrate.context import TextWriter
from dbos_migrate.errors import MigrateError, Problem
from dbos_migrate.events import Event, Finished
from dbos_migrate.model import RunReport, Validation

if TYPE_CHECKING:
    from dbos_migrate.rehearse.result import Rehearsal

#: Rows of the step summary's findings table at most (the summary file takes 1 MiB).
SUMMARY_ROWS = 200
#: Annotations from one rehearsal at most (GitHub shows only a few per step anyway).
ANNOTATIONS = 50


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
    if report.rehearsal is not None:
        lines += rehearsal_summary(report.rehearsal, gate=report.verb == "up")
    if report.error is not None:
        lines += ["", f"**Error:** {report.error.message}"]
    return "\n".join(lines) + "\n"


def cell(text: str) -> str:
    """Text for one cell of a Markdown table: no pipe, no line break, no HTML of its own."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")
    return " ".join(text.split())


def rehearsal_summary(rehearsal: Rehearsal, *, gate: bool) -> list[str]:
    """The rehearsal's findings as a table: each change with its data and workflow facts beside it."""
    from dbos_migrate.rehearse.rules import BREAKING, SAFE
    from dbos_migrate.report.rehearsal import data_line, verdict_line, workflow_fact, workflows_line

    changes = rehearsal.changes
    counts = rehearsal.counts()
    lines = ["", f"#### Rehearsal: {len(changes)} change(s): {counts['breaking']} breaking, "
             f"{counts['lock-heavy']} lock-heavy, {counts['safe']} safe", ""]  # fmt: skip
    for line in (verdict_line(rehearsal, gate), workflows_line(rehearsal.workflows), data_line(rehearsal)):
        if line:
            head, _, rest = line.partition(": ")
            lines.append(f"- **{cell(head)}:** {cell(rest)}")
    lines += rollback_bullets(rehearsal)
    if not changes:
        return lines
    lines += [
        "",
        "| Severity | Rule | Object | Change | Hint | Data | Workflows |",
        "|---|---|---|---|---|---|---|",
    ]
    for index, change in enumerate(changes[:SUMMARY_ROWS]):
        data = "<br>".join(
            f"**{f.severity}** {f.rule} {cell(f.spec.name)}: {cell(f.detail)}"
            for f in rehearsal.findings_of(index)
        )
        hint = cell(change.spec.hint) if change.severity != SAFE else ""
        fact = cell(workflow_fact(change, rehearsal.workflows) or "")
        severity = f"**{change.severity}**" if change.severity == BREAKING else change.severity
        lines.append(f"| {severity} | {change.rule} {change.spec.name} | `{cell(change.object)}` | "
                     f"{cell(change.detail)} | {hint} | {data} | {fact} |")  # fmt: skip
    if len(changes) > SUMMARY_ROWS:
        lines.append(f"\n{len(changes) - SUMMARY_ROWS} more change(s): see `-o json`.")
    return lines


def rollback_bullets(rehearsal: Rehearsal) -> list[str]:
    """The rehearsed rollback and what it destroys, as bullets (one per difference or loss)."""
    from dbos_migrate.report.rehearsal import destroys_lines, rollback_lines

    out: list[str] = []
    for lines in (rollback_lines(rehearsal), destroys_lines(rehearsal)):
        if lines:
            head, _, rest = lines[0].partition(": ")
            out.append(f"- **{cell(head.rstrip(':'))}:** {cell(rest)}")
            out += [f"  - `{cell(more.strip())}`" for more in lines[1:]]
    return out


def rehearsal_annotations(report: RunReport, out: TextWriter) -> None:
    """One annotation per breaking or lock-heavy change and per finding that is not safe, in the
    order of the changes; errors when the gate refused the run, warnings otherwise."""
    from dbos_migrate.rehearse.rules import BREAKING, SAFE
    from dbos_migrate.report.rehearsal import workflow_fact

    rehearsal = report.rehearsal
    if rehearsal is None:
        return
    refused = (
        report.verb == "up" and rehearsal.verdict is not None and rehearsal.verdict.refuse and not report.ok
    )
    notes: list[tuple[str, str, str]] = []
    for index, change in enumerate(rehearsal.changes):
        if change.severity != SAFE:
            level = "error" if refused and change.severity == BREAKING else "warning"
            message = f"{change.object}: {change.detail}. Hint: {change.spec.hint}"
            fact = workflow_fact(change, rehearsal.workflows)
            if fact:
                message += f". Workflows: {fact}"
            notes.append((level, f"{change.rule} {change.spec.name}", message))
        for f in rehearsal.findings_of(index):
            if f.severity != SAFE:
                level = "error" if refused and f.severity == BREAKING else "warning"
                notes.append(
                    (level, f"{f.rule} {f.spec.name}", f"{f.object}: {f.detail}. Hint: {f.spec.hint}")
                )
    for level, title, message in notes[:ANNOTATIONS]:
        _annotate(out, level, title, message)
    if len(notes) > ANNOTATIONS:
        more = f"{len(notes) - ANNOTATIONS} more finding(s): see the step summary or -o json"
        _annotate(out, "notice", "dbos-migrate rehearsal", more)


def _annotate(out: TextWriter, level: str, title: str, message: str) -> None:
    out.write(f"::{level} title={escape(title, prop=True)}::{escape(message)}\n")


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
        if isinstance(result, RunReport):
            rehearsal_annotations(result, self.out)
        write_annotations(result.error, result.where.warnings if not isinstance(result, Validation) else result.warnings,
                    self.out)  # fmt: skip
        if self.summary_path and isinstance(result, RunReport):
            append_summary(self.summary_path, summary(result))
