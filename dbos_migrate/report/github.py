"""Extras under GitHub Actions: `::error` annotations and the Markdown step summary."""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING

from dbos_migrate.context import TextWriter
from dbos_migrate.errors import MigrateError, Problem
from dbos_migrate.events import Event, Finished
from dbos_migrate.model import InitReport, RunReport, Validation
from dbos_migrate.report.style import FIELD_LIMIT, TEXT_LIMIT, printable

if TYPE_CHECKING:
    from dbos_migrate.rehearse.result import Rehearsal

#: Rows of the step summary's findings table at most (the summary file takes 1 MiB).
SUMMARY_ROWS = 200
#: Annotations from one rehearsal at most (GitHub shows only a few per step anyway).
ANNOTATIONS = 50


def escape(text: str, *, prop: bool = False) -> str:
    """`text` made printable (a property one line of FIELD_LIMIT characters, a message free
    text of TEXT_LIMIT), then escaped as workflow commands require: %25, %0D, %0A, and in a
    property %3A and %2C (docs/security.md, "Text that others control")."""
    text = printable(text) if prop else printable(text, TEXT_LIMIT, lines=True)
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def write_annotations(error: MigrateError | None, warnings: list[Problem], out: TextWriter) -> None:
    """`::error file=..,line=..,col=..::` lines that GitHub shows on the pull request."""
    for w in warnings:
        out.write(
            f"::warning file={escape(w.file, prop=True)},line={w.line},col={w.column}::"
            f"{escape(w.path + ': ' + w.message)}\n"
        )
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
    """The Markdown appended to $GITHUB_STEP_SUMMARY. Every value from outside is one cell of
    escaped Markdown (`cell`): no name can add a line, a row, a link or an image."""
    ok = "✅ succeeded" if report.ok else f"❌ failed ({report.error.code if report.error else ''})"
    w = report.where
    lines = [
        f"### dbos-migrate {cell(report.verb)}: {ok}",
        "",
        f"- **Target:** {code(w.target or '')} ({cell(w.target_source or '')})",
        f"- **App database:** {code(w.app_database or '')} ({cell(w.app_database_source or '')})",
        f"- **Created:** {'yes' if report.created else 'no'}",
        f"- **Production:** {'yes' if w.production else 'no'}",
    ]
    if report.commands:
        lines += ["", "| # | Command | Status | Exit | Duration |", "|---|---|---|---|---|"]
        for c in report.commands:
            exit_code = c.exit_code if c.exit_code is not None else "-"
            lines.append(f"| {c.index} | {code(c.command)} | {cell(c.status)} | {exit_code} | {c.duration_s:.2f}s |")
    if report.rehearsal is not None:
        lines += rehearsal_summary(report.rehearsal, gate=report.verb == "up")
    if report.error is not None:
        lines += ["", f"**Error:** {cell(report.error.message, TEXT_LIMIT)}"]
    return "\n".join(lines) + "\n"


# Characters with a meaning in GitHub's Markdown: each is written backslash-escaped.
_MARKDOWN = re.compile(r"([\\`*_\[\]|~$])")


def cell(text: str, limit: int = FIELD_LIMIT) -> str:
    """Text for one cell of a Markdown table or list item: printable, one line, no pipe, no
    markup and no HTML of its own (every Markdown character backslash-escaped, & < > as
    entities)."""
    text = " ".join(printable(text, limit).split())
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return _MARKDOWN.sub(r"\\\1", text)


def code(text: str) -> str:
    """`text` in a monospace font: a cell in <code>, since a backtick in a name could end a
    Markdown code span early and the rest would be read as Markdown."""
    return f"<code>{cell(text)}</code>"


def rehearsal_summary(rehearsal: Rehearsal, *, gate: bool) -> list[str]:
    """The rehearsal's findings as a table: each change with its data and workflow facts beside it."""
    from dbos_migrate.rehearse.rules import BREAKING, SAFE
    from dbos_migrate.report.rehearsal import data_line, verdict_line, workflow_fact, workflows_line

    changes = rehearsal.changes
    counts = rehearsal.counts()
    lines = [
        "",
        f"#### Rehearsal: {len(changes)} change(s): {counts['breaking']} breaking, "
        f"{counts['lock-heavy']} lock-heavy, {counts['safe']} safe",
        "",
    ]
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
            f"**{f.severity}** {f.rule} {cell(f.spec.name)}: {cell(f.detail)}" for f in rehearsal.findings_of(index)
        )
        hint = cell(change.spec.hint) if change.severity != SAFE else ""
        fact = cell(workflow_fact(change, rehearsal.workflows) or "")
        severity = f"**{change.severity}**" if change.severity == BREAKING else change.severity
        lines.append(
            f"| {severity} | {change.rule} {change.spec.name} | {code(change.object)} | "
            f"{cell(change.detail)} | {hint} | {data} | {fact} |"
        )
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
    refused = report.verb == "up" and rehearsal.verdict is not None and rehearsal.verdict.refuse and not report.ok
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
                notes.append((level, f"{f.rule} {f.spec.name}", f"{f.object}: {f.detail}. Hint: {f.spec.hint}"))
    for level, title, message in notes[:ANNOTATIONS]:
        _annotate(out, level, title, message)
    if len(notes) > ANNOTATIONS:
        more = f"{len(notes) - ANNOTATIONS} more finding(s): see the step summary or -o json"
        _annotate(out, "notice", "dbos-migrate rehearsal", more)


def _annotate(out: TextWriter, level: str, title: str, message: str) -> None:
    out.write(f"::{level} title={escape(title, prop=True)}::{escape(message)}\n")


def append_summary(path: str, text: str) -> str | None:
    """Append to the step summary file. Only a regular file is written: a link planted in its
    place is never followed and a FIFO never blocks the run (docs/security.md). Returns why
    nothing was written, or None."""
    import errno

    from dbos_migrate.settings.regular import NotRegularFile, open_regular

    try:
        fd = open_regular(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_NOFOLLOW)
    except NotRegularFile as exc:
        return f"is {exc.kind}, not a regular file"
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return "is a symbolic link, which is never followed"
        if exc.errno == errno.ENXIO:
            return "is a FIFO (named pipe), not a regular file"
        return f"cannot be opened ({exc.strerror})"
    with contextlib.suppress(OSError), os.fdopen(fd, "a", encoding="utf-8") as fh:
        fh.write(text)
    return None


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
        warnings = (
            []
            if isinstance(result, InitReport)
            else (result.warnings if isinstance(result, Validation) else result.where.warnings)
        )
        write_annotations(result.error, warnings, self.out)
        if self.summary_path and isinstance(result, RunReport):
            refused = append_summary(self.summary_path, summary(result))
            if refused is not None:
                _annotate(
                    self.out,
                    "warning",
                    "dbos-migrate step summary",
                    f"GITHUB_STEP_SUMMARY {self.summary_path} {refused}: no summary written",
                )
                self.out.flush()
