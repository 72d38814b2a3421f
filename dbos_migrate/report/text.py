"""Text for people: plain lines on a pipe; colour and a spinner on a terminal."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from dbos_migrate.context import ByteWriter, Context, TextWriter
from dbos_migrate.errors import MigrateError, Problem
from dbos_migrate.events import (
    CommandFinished,
    CommandStarted,
    ConfigDiff,
    DatabaseReady,
    DropWarning,
    Event,
    FeatureEvent,
    Finished,
    GuardWarning,
    LockAcquired,
    Notice,
    Resolved,
    WaitingForLock,
    WaitingForServer,
)
from dbos_migrate.model import (
    CommandStep,
    DatabaseStep,
    GrantStep,
    HistoryReport,
    HistoryRow,
    PlannedStep,
    RunReport,
    StatusReport,
    SystemDatabase,
    ToolchainStep,
    Validation,
)
from dbos_migrate.report.style import LiveLine, LiveStream, Style, printable, printable_fields, printable_text

if TYPE_CHECKING:
    from dbos_migrate.rehearse.result import Rehearsal, RehearsalDone

SEED_WARNINGS = (
    "Manual schema changes on a production database are risky: be careful, and have a backup.",
    "Breaking schema changes, such as deleting or renaming a column, can break workflows still running "
    "on the previous application version.",
    "Data dropped by a rollback is gone for good: this cannot be undone.",
)


def render_error(error: MigrateError, err: TextWriter, style: Style) -> None:
    err.write(style.red("error: ") + error_text(error) + "\n")
    if error.hint:
        err.write(style.dim("  hint: " + printable_text(error.hint).replace("\n", "\n  ")) + "\n")
    err.flush()


def error_text(error: MigrateError) -> str:
    """The error's message, safe to print: a config error is built again from its problems,
    each field made printable on its own (a path cannot add a line), any other message is
    free text (docs/security.md, "Text that others control")."""
    problems: list[Problem] = getattr(error, "problems", [])
    if not problems:
        return printable_text(error.message)
    count = len(problems)
    lines = [printable_fields(p).render() for p in problems]
    return "\n".join([*lines, f"{count} problem{'s' if count != 1 else ''} in the config"])


def render_guard(event: GuardWarning, w: TextWriter, s: Style) -> None:
    """The production warning block `down` prints before it asks for confirmation."""
    r = event.where
    w.write(s.red("WARNING: about to run rollback commands against a PRODUCTION database") + "\n")
    w.write(f"  target     {r.target}  ({r.production_reason})\n")
    w.write(f"  database   {r.app_database}\n")
    w.write("  commands   (run in this order)\n")
    for i, cmd in enumerate(event.commands, 1):
        w.write(f"    {i}. {cmd}\n")
    for warning in SEED_WARNINGS:
        w.write(f"  ! {warning}\n")
    w.flush()


DROP_WARNING = "Take care: this will irreversibly delete all data in the database."


def render_drop_warning(event: DropWarning, w: TextWriter, s: Style) -> None:
    """The warning `drop` prints first (the words of `dbos-cloud db destroy`), on stderr."""
    r = event.where
    head = "a PRODUCTION" if r.production else "a"
    w.write(s.red(f"WARNING: about to drop {head} database") + "\n")
    w.write(f"  target     {r.target}" + (f"  ({r.production_reason})" if r.production else "") + "\n")
    w.write(f"  databases  {', '.join(event.databases)}\n")
    w.write(f"  ! {DROP_WARNING}\n")
    w.flush()


class TextReporter:
    """Renders every event of every verb as lines for a person."""

    def __init__(self, ctx: Context, *, quiet: bool = False, verbose: bool = False) -> None:
        self.out = ctx.stdout
        self.err = ctx.stderr
        self.quiet = quiet
        self.verbose = verbose
        self.style = Style(ctx.color("stdout"))
        self.err_style = Style(ctx.color("stderr"))
        self.live = LiveLine(self.out, self.style) if ctx.live and not quiet else None
        self._last_wait_line = -10.0

    def command_streams(self, stdout: ByteWriter, stderr: ByteWriter) -> tuple[ByteWriter, ByteWriter]:
        """Where the commands' output goes: through the spinner's lock on a terminal."""
        if self.live is None:
            return stdout, stderr
        return LiveStream(stdout, self.live), LiveStream(stderr, self.live)

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
        if isinstance(event, ConfigDiff):  # init's diff, line by line, shown even with -q: it is asked about
            for line in event.diff.splitlines():
                self.out.write(printable_text(line) + "\n")
            self.out.flush()
            return
        result = event.result if isinstance(event, Finished) else None
        printed = isinstance(result, RunReport) and (result.user_role_sql is not None or result.steps is not None)
        if isinstance(result, RunReport) and printed and result.error is None:
            self._printed(result)  # SQL of many long lines: escaped, never cut
            return
        if isinstance(event, Notice):  # free text of our own, with lines (a problem and its hint)
            event = Notice(printable_text(event.text), event.level)
        else:
            event = printable_fields(event)
        s = self.style
        if isinstance(event, Resolved):
            self._resolved(event)
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
            # The system database's own line, after its schema, says "exists": only its creation here.
            if event.kind == "app" or event.created:
                self.info(f"{event.kind} database {event.name} " + (s.green("created") if event.created else "exists"))
        elif isinstance(event, GuardWarning):
            render_guard(event, self.err, self.err_style)
        elif isinstance(event, DropWarning):
            render_drop_warning(event, self.err, self.err_style)

        elif isinstance(event, CommandStarted):
            head = f"[{event.step}]" if event.step else f"[{event.index}/{event.total}]"
            if not self.quiet:
                self.line(s.bold(head + " ") + event.command)
            if self.live is not None:
                self.live.begin(head)
        elif isinstance(event, CommandFinished):
            self._command_finished(event)
        elif isinstance(event, FeatureEvent):
            self._feature(event)
        elif isinstance(event, Finished):
            self._finished(event)

    def _resolved(self, event: Resolved) -> None:
        if self.quiet or event.verb in ("status", "history"):
            return  # status shows the same facts in its own report
        s, r = self.style, event.where
        self.line(s.bold(f"dbos-migrate {event.verb}") + (s.dim(" (dry run)") if event.dry_run else ""))
        self.line(f"  config      {r.config_path}")
        target = s.red(r.target or "") if r.production else (r.target or "")
        self.line(f"  target      {target}  {s.dim('(' + (r.target_source or '') + ')')}")
        self.line(f"  database    {r.app_database}  {s.dim('(' + (r.app_database_source or '') + ')')}")
        prod = s.red("yes") if r.production else "no"
        self.line(f"  production  {prod}  {s.dim('(' + (r.production_reason or '') + ')')}")

    def _feature(self, event: FeatureEvent) -> None:
        # Imported only when a rehearsal is rendered: a plain `up` loads no rehearsal module.
        from dbos_migrate.rehearse.result import RehearsalDone

        if isinstance(event, RehearsalDone):
            self._rehearsal_done(event)

    def _rehearsal_done(self, event: RehearsalDone) -> None:
        from dbos_migrate.rehearse.rules import breaking_summary
        from dbos_migrate.report.rehearsal import data_line, verdict_line, workflows_line

        rehearsal = event.rehearsal
        self.info(render_changes(rehearsal))
        for line in (workflows_line(rehearsal.workflows), data_line(rehearsal)):
            if line:
                self.info(line)
        breaking = rehearsal.breaking
        if breaking and not event.gate:
            self.line(
                self.style.yellow("warning: ")
                + f"rehearsal found {len(breaking)} breaking change(s): "
                + breaking_summary(breaking)
            )
        verdict = verdict_line(rehearsal, event.gate)
        if verdict and not (event.gate and rehearsal.verdict and rehearsal.verdict.refuse):
            self.info(verdict)  # a refusal is the run's error, shown once at the end
        self._rollback_facts(rehearsal)

    def _rollback_facts(self, rehearsal: Rehearsal) -> None:
        """The rehearsed rollback (plan) and what it destroys (down): shown even with --quiet."""
        from dbos_migrate.report.rehearsal import destroys_lines, rollback_lines

        for lines in (rollback_lines(rehearsal), destroys_lines(rehearsal)):
            if not lines:
                continue
            bad = lines[0].startswith(("rollback: does NOT", "rollback: failed", "rollback destroys:"))
            self.line((self.style.yellow("warning: ") if bad else "") + lines[0])
            for more in lines[1:]:
                self.line(more)

    def _command_finished(self, event: CommandFinished) -> None:
        s = self.style
        if self.live is not None:
            self.live.end()
        res = event.result
        head = f"[{event.step}] " if event.step else f"[{res.index}/{event.total}] "
        if res.ended:
            self.line(s.yellow("warning: ") + f"ended what the command left running: {', '.join(res.ended)}")
        if res.ok:
            self.info(s.green(head + f"ok in {res.duration_s:.2f}s"))
        else:
            status, end = res.status.replace("_", " "), res.describe_end()
            said = status if end == status else f"{status}: {end}"  # never "timed out: timed out"
            self.line(s.red(head + f"{said} after {res.duration_s:.2f}s"))

    def _finished(self, event: Finished) -> None:
        result = event.result
        if isinstance(result, RunReport):
            self._run_summary(result)
        elif isinstance(result, StatusReport):
            render_status(result, self.out, self.style, self.quiet)
        elif isinstance(result, HistoryReport):
            render_history(result, self.out, self.style)
        elif isinstance(result, Validation):
            render_validation(result, self.out, self.err, self.err_style, quiet=self.quiet)
            return
        if result.error is not None:
            render_error(result.error, self.err, self.err_style)

    def _printed(self, r: RunReport) -> None:
        """--print-user-role (only SQL on stdout: it pipes into psql) and --print-migrations:
        control characters escaped as everywhere, but lines kept and nothing shortened."""

        def raw(text: str) -> str:
            return printable(text, None, lines=True)

        if r.user_role_sql is not None:
            self.out.write(raw(r.user_role_sql))
            self.out.flush()
        elif r.steps is not None:
            render_steps(r.steps, lambda text: self.line(raw(text)), self.style)

    def _run_summary(self, r: RunReport) -> None:
        s = self.style
        if r.commands and not self.quiet:
            self.line("")
            self.line(s.bold("summary"))
            for c in r.commands:
                mark = s.green("ok ") if c.ok else s.red(c.status.replace("_", " "))
                self.line(f"  {c.index:>2}. {mark:<10} {c.duration_s:7.2f}s  {c.command}")
        if r.error is None and r.verb in ("up", "down") and not r.dry_run:
            total = sum(c.duration_s for c in r.commands)
            created = " (created)" if r.created else ""
            name = r.where.app_database
            self.info(s.green("done: ") + f"{len(r.commands)} command(s) ran in {total:.2f}s on {name}{created}")


def render_steps(steps: list[PlannedStep], line: Callable[[str], None], s: Style) -> None:
    """--print-migrations: each step `up` (or `down`) would take, then any SQL the toolchain printed."""
    line(s.bold("would run, in this order (nothing was run):"))
    sql: list[tuple[str, str]] = []
    for i, step in enumerate(steps, 1):
        if isinstance(step, CommandStep):
            text = f"command {step.index}: {step.command}"
        elif isinstance(step, ToolchainStep):
            text = f"system schema: {step.command}   # {step.toolchain}"
            if step.sql is not None:
                sql.append((step.toolchain, step.sql))
        elif isinstance(step, GrantStep):
            text = f"grant role {step.role} runtime privileges on {', '.join(step.databases)} ({step.sql})"
        else:
            where = step.database if isinstance(step, DatabaseStep) else None
            text = step.step.replace("_", " ") + (f" {where}" if where else "") + f": {step.action}"
        line(f"  {i:>2}. {text}")
    for who, text in sql:
        line("")
        line(s.dim(f"-- the system schema's migrations, as {who} prints them:"))
        line(text.rstrip("\n"))


def render_validation(result: Validation, out: TextWriter, err: TextWriter, style: Style, *, quiet: bool) -> None:
    """Warnings, then every error as file:line:col: path: message."""
    for w in result.warnings:
        err.write(style.yellow("warning: ") + w.render() + "\n")
    for p in result.errors:
        err.write(style.red("error: ") + p.render() + "\n")
    if result.ok:
        if not quiet:
            warned = f" ({len(result.warnings)} warning(s))" if result.warnings else ""
            out.write(f"{result.config_path}: valid{warned}\n")
    else:
        n = len(result.errors)
        err.write(f"{result.config_path}: {n} problem{'s' if n != 1 else ''}\n")
    out.flush()
    err.flush()


def render_status(report: StatusReport, out: TextWriter, s: Style, quiet: bool = False) -> None:
    """The status page (one line for `wait`); an error before anything was resolved is left
    to render_error."""
    r = report.where
    if r.app_database is None or quiet:
        return
    if report.verb == "wait":
        if report.reachable:
            version = f"PostgreSQL {report.server_version}, " if report.server_version else ""
            out.write(f"{r.target} accepts connections ({version}after {report.latency_ms} ms)\n")
            out.flush()
        return
    out.write(s.bold("dbos-migrate status") + "\n")
    out.write(f"  config          {r.config_path}\n")
    out.write(f"  app name        {r.app_name or '(none)'}\n")
    out.write(f"  app database    {r.app_database}  {s.dim('(' + (r.app_database_source or '') + ')')}\n")
    out.write(f"  target          {r.target}  {s.dim('(' + (r.target_source or '') + ')')}\n")
    prod = s.red("yes") if r.production else "no"
    out.write(f"  production      {prod}  {s.dim('(' + (r.production_reason or '') + ')')}\n")
    if report.reachable:
        out.write(f"  server          reachable, PostgreSQL {report.server_version}, {report.latency_ms} ms\n")
    else:
        out.write(f"  server          {s.red('unreachable')} (see the error below)\n")
        out.flush()
        return
    if report.standby:
        out.write(f"  read-only       {s.yellow('yes: a hot standby (in recovery); up and down refuse here')}\n")
    missing = "no (read-only standby: up cannot create it)" if report.standby else "no (up will create it)"
    exists = {True: "yes", False: s.yellow(missing), None: "unknown"}[report.exists]
    out.write(f"  exists          {exists}\n")
    system = report.system_database
    if system is not None:
        line = system_line(system, s, standby=bool(report.standby))
        out.write(f"  system db       {line}  {s.dim('(' + system.source + ')')}\n")
    holder = report.lock_holder
    if holder:
        since = holder.since.isoformat() if holder.since else "unknown"
        out.write(
            f"  lock            {s.yellow('held')} by {holder.application_name} (pid {holder.pid}, "
            f"{holder.client}, since {since})\n"
        )
    else:
        out.write("  lock            free\n")
    runs = report.recent_runs
    out.write(f"  recent runs     {len(runs) if runs else 'none'}\n")
    history_rows(runs, out, s)
    last = report.last_run
    if last is not None and last.outcome != "succeeded":
        when = last.at.isoformat()[:19].replace("T", " ") if last.at else "unknown"
        code = last.exit_code if last.exit_code is not None else "-"
        out.write(
            f"  last run        {s.red(last.outcome)}: {last.direction} {last.run_id[:8]} command "
            f"#{last.failed_index} exit {code} at {when}: {last.failed_command}\n"
        )
        out.write(f"  next            {last.next_command}\n")
        out.write(f"                  {s.dim(last.next_reason or '')}\n")
    elif last is not None:
        out.write(f"  last run        {s.green('succeeded')}: {last.direction} {last.run_id[:8]}\n")
    out.flush()


def system_line(system: SystemDatabase, s: Style, *, standby: bool = False) -> str:
    """The system database in one phrase, for `status`."""
    if system.kind != "postgresql":
        return f"{system.url}: not PostgreSQL, left to the app"
    if system.exists is None:
        return f"{system.url}: {system.action}"
    if not system.exists:
        return f"{system.url}: " + s.yellow("missing (read-only standby)" if standby else "missing (up creates it)")
    return f"{system.url}: exists, DBOS schema version {system.schema_version or 'none yet'}"


def history_rows(rows: list[HistoryRow], out: TextWriter, s: Style) -> None:
    for r in rows:
        mark = s.green(r.status) if r.status == "succeeded" else s.red(r.status)
        code = r.exit_code if r.exit_code is not None else "-"
        started = r.started_at.isoformat()[:19].replace("T", " ")
        out.write(
            f"    {started}  {r.run_id[:8]}  {r.direction:<4} #{r.command_index:<2} {mark:<11} exit {code:<4} {r.command}\n"
        )


def render_history(report: HistoryReport, out: TextWriter, s: Style) -> None:
    if report.error is not None:
        return
    if not report.runs:
        out.write(f"no runs recorded for {report.where.app_database}\n")
        return
    if report.run_id is not None:
        out.write(s.bold(f"run {report.run_id} on {report.where.app_database}") + "\n")
    else:
        out.write(s.bold(f"history of {report.where.app_database} (newest first)") + "\n")
    history_rows(report.runs, out, s)
    out.flush()


def render_changes(rehearsal: Rehearsal) -> str:
    """The rehearsal's diff: grouped by table (or type, view, function), worst first in each group,
    each change followed by what the app database's rows and the running workflows say about it."""
    from dbos_migrate.rehearse.rules import BREAKING, LOCK_HEAVY, SAFE
    from dbos_migrate.report.rehearsal import workflow_fact

    changes = rehearsal.changes
    if not changes:
        return "rehearsal: the migrations change no schema object"
    counts = {sev: sum(1 for c in changes if c.severity == sev) for sev in (BREAKING, LOCK_HEAVY, SAFE)}
    lines = [
        f"rehearsal: {len(changes)} change(s): {counts[BREAKING]} breaking, "
        f"{counts[LOCK_HEAVY]} lock-heavy, {counts[SAFE]} safe"
    ]
    group = None
    pad = " " * 15
    for index, change in enumerate(changes):
        if change.group != group:
            group = change.group
            lines.append(f"  {group}")
        lines.append(f"    {change.severity:<10} {change.rule} {change.spec.name}: {change.detail}")
        if change.severity != SAFE:
            lines.append(f"{pad}hint: {change.spec.hint}")
        for finding in rehearsal.findings_of(index):
            lines.append(f"{pad}data: {finding.severity} {finding.rule} {finding.spec.name}: {finding.detail}")
            if finding.severity in (BREAKING, LOCK_HEAVY):
                lines.append(f"{pad}      hint: {finding.spec.hint}")
        fact = workflow_fact(change, rehearsal.workflows)
        if fact:
            lines.append(f"{pad}workflows: {fact}")
    return "\n".join(lines)
