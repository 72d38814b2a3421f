"""Event sinks: text for people, one JSON document for machines, GitHub Actions extras.

Reporters receive the events the verbs emit and write to the streams they were given,
so tests capture everything by passing their own streams.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Mapping
from typing import Any, BinaryIO, TextIO

from dbos_migrate.errors import MigrateError, Problem
from dbos_migrate.events import (
    CommandFinished,
    CommandStarted,
    DatabaseReady,
    Event,
    Finished,
    GuardWarning,
    LockAcquired,
    Notice,
    Resolved,
    RunReport,
    WaitingForLock,
    WaitingForServer,
)

SEED_WARNINGS = (
    "Manual schema changes on a production database are risky: be careful, and have a backup.",
    "Breaking schema changes, such as deleting or renaming a column, can break workflows still running "
    "on the previous application version.",
    "Data dropped by a rollback is gone for good: this cannot be undone.",
)
_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"


class Style:
    """ANSI colour, or nothing at all when colour is off (NO_COLOR, not a TTY)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def red(self, text: str) -> str:
        return self._wrap("31;1", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33;1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)


def use_color(stream: TextIO, environ: Mapping[str, str]) -> bool:
    if environ.get("NO_COLOR"):
        return False
    if environ.get("FORCE_COLOR"):
        return True
    return bool(getattr(stream, "isatty", lambda: False)())


class LiveLine:
    """A spinner line on a terminal that steps aside whenever command output is written."""

    def __init__(self, term: TextIO, style: Style) -> None:
        self.term = term
        self.style = style
        self.lock = threading.RLock()
        self.label = ""
        self.start = 0.0
        self.drawn = False
        self.at_line_start = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self, label: str) -> None:
        self.label = label
        self.start = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def end(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self.lock:
            self.clear()

    def show(self, text: str) -> None:
        """A transient status line (a countdown), replaced by whatever is written next."""
        with self.lock:
            self.term.write(f"\r\x1b[K{text}")
            self.term.flush()
            self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            self.term.write("\r\x1b[K")
            self.term.flush()
            self.drawn = False

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(0.1):
            with self.lock:
                if not self.at_line_start:
                    continue
                elapsed = time.monotonic() - self.start
                glyph = _SPINNER[frame % len(_SPINNER)]
                self.term.write(f"\r\x1b[K{self.style.dim(f'{glyph} {self.label} {elapsed:.1f}s')}")
                self.term.flush()
                self.drawn = True
                frame += 1


class _LiveStream:
    """A binary stream wrapper that clears the spinner line before command output lands."""

    def __init__(self, raw: BinaryIO, live: LiveLine) -> None:
        self.raw = raw
        self.live = live

    def write(self, data: bytes) -> int:
        if not data:
            return 0
        with self.live.lock:
            self.live.clear()
            self.raw.write(data)
            self.raw.flush()
            self.live.at_line_start = data.endswith(b"\n")
        return len(data)

    def flush(self) -> None:
        self.raw.flush()


class TextReporter:
    """Plain lines for people; colour and a spinner on a terminal."""

    def __init__(
        self,
        out: TextIO,
        err: TextIO,
        *,
        environ: Mapping[str, str],
        quiet: bool = False,
        verbose: bool = False,
    ) -> None:
        self.out = out
        self.err = err
        self.quiet = quiet
        self.verbose = verbose
        self.style = Style(use_color(out, environ))
        tty = bool(getattr(out, "isatty", lambda: False)()) and environ.get("TERM") != "dumb"
        self.live = LiveLine(out, self.style) if tty and not quiet else None
        self._last_wait_line = -10.0

    def command_streams(self, stdout: BinaryIO, stderr: BinaryIO) -> tuple[BinaryIO, BinaryIO]:
        if self.live is None:
            return stdout, stderr
        return _LiveStream(stdout, self.live), _LiveStream(stderr, self.live)  # type: ignore[return-value]

    def line(self, text: str = "") -> None:
        if self.live is not None:
            with self.live.lock:
                self.live.clear()
                self.out.write(text + "\n")
                self.out.flush()
                self.live.at_line_start = True
        else:
            self.out.write(text + "\n")
            self.out.flush()

    def info(self, text: str) -> None:
        if not self.quiet:
            self.line(text)

    def __call__(self, event: Event) -> None:
        s = self.style
        if isinstance(event, Resolved):
            r = event.report
            if self.quiet:
                return
            self.line(s.bold(f"dbos-migrate {r.verb}") + (s.dim(" (dry run)") if r.dry_run else ""))
            self.line(f"  config      {r.config_path}")
            target = s.red(r.target or "") if r.production else (r.target or "")
            self.line(f"  target      {target}  {s.dim('(' + (r.target_source or '') + ')')}")
            self.line(f"  database    {r.app_database}  {s.dim('(' + (r.app_database_source or '') + ')')}")
            prod = s.red("yes") if r.production else "no"
            self.line(f"  production  {prod}  {s.dim('(' + (r.production_reason or '') + ')')}")
        elif isinstance(event, Notice):
            if event.level == "warning":
                self.line(s.yellow("warning: ") + event.text)
            else:
                self.info(event.text)
        elif isinstance(event, WaitingForServer):
            text = f"waiting for the server ({event.seconds_left:.0f}s left): {event.reason}"
            if self.live is not None:
                self.live.show(self.style.yellow(text))
            elif time.monotonic() - self._last_wait_line >= 5:
                self._last_wait_line = time.monotonic()
                self.info(text)
        elif isinstance(event, WaitingForLock):
            who = event.holder.describe() if event.holder else "another session"
            self.line(f"waiting for the migration lock ({event.seconds_left:.0f}s left), held by {who}")
        elif isinstance(event, LockAcquired):
            if self.verbose:
                self.line(s.dim(f"lock acquired after {event.waited_s:.2f}s"))
        elif isinstance(event, DatabaseReady):
            self.info(f"app database {event.name} " + (s.green("created") if event.created else "exists"))
        elif isinstance(event, GuardWarning):
            self._guard(event)
        elif isinstance(event, CommandStarted):
            if not self.quiet:
                self.line(s.bold(f"[{event.index}/{event.total}] ") + event.command)
            if self.live is not None:
                self.live.begin(f"[{event.index}/{event.total}]")
        elif isinstance(event, CommandFinished):
            if self.live is not None:
                self.live.end()
            res = event.result
            head = f"[{res.index}/{event.total}] "
            if res.ok:
                self.info(s.green(head + f"ok in {res.duration_s:.2f}s"))
            else:
                self.line(
                    s.red(
                        head
                        + f"{res.status.replace('_', ' ')}: {res.describe_end()} after {res.duration_s:.2f}s"
                    )
                )
        elif isinstance(event, Finished):
            self._finished(event.report)

    def _guard(self, event: GuardWarning) -> None:
        s = self.style
        r = event.report
        w = self.err
        w.write(s.red("WARNING: about to run rollback commands against a PRODUCTION database") + "\n")
        w.write(f"  target     {r.target}  ({r.production_reason})\n")
        w.write(f"  database   {r.app_database}\n")
        w.write("  commands   (run in this order)\n")
        for i, cmd in enumerate(event.commands, 1):
            w.write(f"    {i}. {cmd}\n")
        for warning in SEED_WARNINGS:
            w.write(f"  ! {warning}\n")
        w.flush()

    def _finished(self, r: RunReport) -> None:
        s = self.style
        if r.commands and not self.quiet:
            self.line("")
            self.line(s.bold("summary"))
            for c in r.commands:
                mark = s.green("ok ") if c.ok else s.red(c.status.replace("_", " "))
                self.line(f"  {c.index:>2}. {mark:<10} {c.duration_s:7.2f}s  {c.command}")
        if r.error is None:
            if r.verb in ("up", "down") and not r.dry_run:
                total = sum(c.duration_s for c in r.commands)
                created = " (created)" if r.created else ""
                self.info(
                    s.green("done: ")
                    + f"{len(r.commands)} command(s) ran in {total:.2f}s on {r.app_database}{created}"
                )
        else:
            render_error(r.error, self.err, self.style)


def render_error(error: MigrateError, err: TextIO, style: Style) -> None:
    err.write(style.red("error: ") + error.message + "\n")
    if error.hint:
        err.write(style.dim("  hint: " + error.hint.replace("\n", "\n  ")) + "\n")
    err.flush()


class JsonReporter:
    """Collects nothing live; prints exactly one JSON document when the verb finishes."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.guard_err: TextIO | None = None

    def __call__(self, event: Event) -> None:
        if isinstance(event, Finished):
            print_json(event.report.as_json(), self.out)
        elif isinstance(event, GuardWarning) and self.guard_err is not None:
            TextReporter(self.guard_err, self.guard_err, environ={"NO_COLOR": "1"})._guard(event)


def print_json(doc: Mapping[str, Any], out: TextIO) -> None:
    out.write(json.dumps(doc, indent=2, default=str) + "\n")
    out.flush()


def github_escape(text: str, *, prop: bool = False) -> str:
    text = text.replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")
    if prop:
        text = text.replace(":", "%3A").replace(",", "%2C")
    return text


def github_annotations(error: MigrateError | None, warnings: list[Problem], out: TextIO) -> None:
    """`::error file=..,line=..,col=..::` lines that GitHub shows on the pull request."""
    for w in warnings:
        out.write(
            f"::warning file={github_escape(w.file, prop=True)},line={w.line},col={w.column}::"
            f"{github_escape(w.path + ': ' + w.message)}\n"
        )
    if error is None:
        return
    problems: list[Problem] = getattr(error, "problems", [])
    for p in problems:
        msg = f"{p.path}: {p.message}" + (f" ({p.hint})" if p.hint else "")
        out.write(
            f"::error file={github_escape(p.file, prop=True)},line={p.line},col={p.column}::{github_escape(msg)}\n"
        )
    if not problems:
        out.write(f"::error title=dbos-migrate {error.code}::{github_escape(error.message)}\n")
    out.flush()


def github_summary(report: RunReport) -> str:
    """The Markdown appended to $GITHUB_STEP_SUMMARY."""
    ok = "✅ succeeded" if report.ok else f"❌ failed ({report.error.code if report.error else ''})"
    lines = [
        f"### dbos-migrate {report.verb}: {ok}",
        "",
        f"- **Target:** `{report.target}` ({report.target_source})",
        f"- **App database:** `{report.app_database}` ({report.app_database_source})",
        f"- **Created:** {'yes' if report.created else 'no'}",
        f"- **Production:** {'yes' if report.production else 'no'}",
    ]
    if report.commands:
        lines += ["", "| # | Command | Status | Exit | Duration |", "|---|---|---|---|---|"]
        for c in report.commands:
            cmd = c.command.replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| {c.index} | `{cmd}` | {c.status} | {c.exit_code if c.exit_code is not None else '-'} | {c.duration_s:.2f}s |"
            )
    if report.error is not None:
        lines += ["", f"**Error:** {report.error.message}"]
    return "\n".join(lines) + "\n"


class GithubReporter:
    """Extras under GitHub Actions: annotations and the step summary."""

    def __init__(self, out: TextIO, environ: Mapping[str, str]) -> None:
        self.out = out
        self.summary_path = environ.get("GITHUB_STEP_SUMMARY")

    def __call__(self, event: Event) -> None:
        if not isinstance(event, Finished):
            return
        report = event.report
        github_annotations(report.error, report.warnings, self.out)
        if self.summary_path and report.verb in ("up", "down", "plan"):
            try:
                with open(self.summary_path, "a", encoding="utf-8") as fh:
                    fh.write(github_summary(report))
            except OSError:
                pass


class Fanout:
    def __init__(self, *sinks: Any) -> None:
        self.sinks = sinks

    def __call__(self, event: Event) -> None:
        for sink in self.sinks:
            sink(event)


def in_github_actions(environ: Mapping[str, str]) -> bool:
    return environ.get("GITHUB_ACTIONS", "").lower() == "true"


def print_validation(
    result: Any, out: TextIO, err: TextIO, environ: Mapping[str, str], *, quiet: bool
) -> None:
    """Text form of `validate`: warnings, then every error as file:line:col: path: message."""
    style = Style(use_color(err, environ))
    for w in result.warnings:
        err.write(style.yellow("warning: ") + w.render() + "\n")
    for p in result.errors:
        err.write(style.red("error: ") + p.render() + "\n")
    if result.valid:
        if not quiet:
            out.write(
                f"{result.config_path}: valid"
                + (f" ({len(result.warnings)} warning(s))" if result.warnings else "")
                + "\n"
            )
    else:
        n = len(result.errors)
        err.write(f"{result.config_path}: {n} problem{'s' if n != 1 else ''}\n")
    out.flush()
    err.flush()


def print_status(report: RunReport, out: TextIO, environ: Mapping[str, str]) -> None:
    s = Style(use_color(out, environ))
    if report.error is not None and report.app_database is None:
        render_error(report.error, out, s)
        return
    x = report.extra
    out.write(s.bold("dbos-migrate status") + "\n")
    out.write(f"  config          {report.config_path}\n")
    out.write(f"  app name        {x.get('app_name') or '(none)'}\n")
    out.write(
        f"  app database    {report.app_database}  {s.dim('(' + (report.app_database_source or '') + ')')}\n"
    )
    out.write(f"  target          {report.target}  {s.dim('(' + (report.target_source or '') + ')')}\n")
    prod = s.red("yes") if report.production else "no"
    out.write(f"  production      {prod}  {s.dim('(' + (report.production_reason or '') + ')')}\n")
    if x.get("reachable"):
        out.write(
            f"  server          reachable, PostgreSQL {x.get('server_version')}, {x.get('latency_ms')} ms\n"
        )
    else:
        out.write(f"  server          {s.red('unreachable')}: {x.get('unreachable_reason', '')}\n")
    exists = {True: "yes", False: s.yellow("no (up will create it)"), None: "unknown"}[report.exists]
    out.write(f"  exists          {exists}\n")
    holder = x.get("lock_holder")
    if holder:
        out.write(
            f"  lock            {s.yellow('held')} by {holder['application_name']} (pid {holder['pid']}, "
            f"{holder['client']}, since {holder['since']})\n"
        )
    else:
        out.write("  lock            free\n")
    runs = x.get("recent_runs") or []
    out.write(f"  recent runs     {len(runs) if runs else 'none'}\n")
    _history_rows(runs, out, s)
    if report.error is not None:
        render_error(report.error, out, s)
    out.flush()


def _history_rows(rows: list[dict[str, Any]], out: TextIO, s: Style) -> None:
    for r in rows:
        status = r["status"]
        mark = s.green(status) if status == "succeeded" else s.red(status)
        code = r["exit_code"] if r["exit_code"] is not None else "-"
        started = str(r["started_at"])[:19].replace("T", " ")
        out.write(
            f"    {started}  {r['direction']:<4} #{r['command_index']:<2} {mark:<11} exit {code:<4} {r['command']}\n"
        )


def print_history(report: RunReport, out: TextIO, environ: Mapping[str, str]) -> None:
    s = Style(use_color(out, environ))
    if report.error is not None:
        render_error(report.error, sys.stderr, s)
        return
    rows = report.extra.get("runs") or []
    if not rows:
        out.write(f"no runs recorded for {report.app_database}\n")
        return
    out.write(s.bold(f"history of {report.app_database} (newest first)") + "\n")
    _history_rows(rows, out, s)
    out.flush()
