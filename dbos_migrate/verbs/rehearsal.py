"""`plan --rehearse` and `up --fail-on-breaking`: the verbs built on a rehearsal."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from dbos_migrate.context import Context
from dbos_migrate.engine.frame import Run, run_steps
from dbos_migrate.engine.options import DownOptions, PlanOptions, UpOptions
from dbos_migrate.errors import BreakingChange
from dbos_migrate.events import Event, Finished, Notice, Resolved, Sink
from dbos_migrate.model import RunReport
from dbos_migrate.rehearse.gate import decide
from dbos_migrate.rehearse.result import Rehearsal, RehearsalDone
from dbos_migrate.rehearse.rules import BREAKING, Named, breaking_summary
from dbos_migrate.rehearse.session import rehearse
from dbos_migrate.verbs.migrate import down_body, require_app_database, require_rollback, up

if TYPE_CHECKING:
    from dbos_migrate.engine.runner import Interrupts


def plan(ctx: Context, options: PlanOptions, emit: Sink) -> RunReport:
    """`plan --rehearse`: report what the migrations would change, and how risky each change is.

    Breaking changes do not fail `plan` (it reports, with the verdict the gate would reach;
    `up --fail-on-breaking` is the gate), unless `--strict` (exit 6); a failing command does
    (exit 1), as it would fail the deploy.
    """

    def body(run: Run[PlanOptions], interrupts: Interrupts) -> None:
        rehearsal = rehearse(run, interrupts, options.rehearse_url, record=True)
        rehearsal.verdict = decide(rehearsal, strict=options.strict)
        run.emit(RehearsalDone(rehearsal, gate=False))
        if options.strict and rehearsal.verdict.refuse:
            raise BreakingChange(
                f"--strict: {rehearsal.verdict.message}", "make the change in expand/contract steps (see each hint)"
            )
        refuse_unrestoring_rollback(rehearsal, strict=options.strict)

    return run_steps("plan", ctx, options, emit, body)


def refuse_unrestoring_rollback(rehearsal: Rehearsal, *, strict: bool) -> None:
    """--strict: a rollback that fails or leaves the schema changed refuses (exit 6)."""
    check = rehearsal.rollback
    if not strict or check is None or check.restores is not False:
        return
    if check.failed_command is not None:
        what = f"the rollback failed on the scratch database ({check.failure}): {check.failed_command}"
    else:
        shown = ", ".join(d.describe() for d in check.differences[:5])
        more = f" and {len(check.differences) - 5} more" if len(check.differences) > 5 else ""
        what = f"the rollback does not restore the schema: {shown}{more}"
    raise BreakingChange(
        f"--strict: {what}", "make database.rollback undo every change of database.migrate, or pass --no-rollback-check"
    )


def down(ctx: Context, options: DownOptions, emit: Sink) -> RunReport:
    """`down --rehearse`: rehearse database.rollback on a scratch copy of the real schema, report
    its changes and what the destructive ones would destroy (rows counted read-only), then,
    unless --dry-run, roll back for real behind the production guard (docs/recovery.md)."""

    def body(run: Run[DownOptions], interrupts: Interrupts) -> None:
        require_rollback(run)
        require_app_database(run)
        rehearsal = rehearse(run, interrupts, options.rehearse_url, record=False, direction="down")
        run.emit(RehearsalDone(rehearsal, gate=False))
        if options.dry_run:
            run.emit(Notice("dry run: the rollback was rehearsed on a scratch copy; the app database was not written"))
            return
        down_body(run, interrupts)  # the guard asks now, after the cost was shown

    return run_steps("down", ctx, options, emit, body)


def gated_up(ctx: Context, options: UpOptions, emit: Sink) -> RunReport:
    """`up --fail-on-breaking`: rehearse first; when the gate refuses (gate.decide: rows that
    fail a change, or a breaking change that meets unfinished workflows of another version,
    or whose workflows are unknown, or any breaking change with --strict) run nothing and
    exit 6, unless `options.allow_breaking`, in which case `up` runs and its history rows say so."""
    shown: set[str] = set()

    def first(event: Event) -> None:
        if isinstance(event, Notice):
            shown.add(event.text)
        emit(event)

    found: list[Rehearsal] = []

    allow_breaking = options.allow_breaking

    def body(run: Run[UpOptions], interrupts: Interrupts) -> None:
        rehearsal = rehearse(run, interrupts, options.rehearse_url, record=False)
        rehearsal.verdict = decide(rehearsal, strict=options.strict)
        found.append(rehearsal)
        run.emit(RehearsalDone(rehearsal, gate=not allow_breaking))

    # The rollback check belongs to plan --rehearse (docs/rehearsal.md): the gate does not wait on it.
    report = run_steps("up", ctx, replace(options, rollback_check=False), first, body, finish=False)
    rehearsal = found[0] if found else None
    verdict = rehearsal.verdict if rehearsal is not None else None
    refused = verdict is not None and verdict.refuse
    if report.error is None and verdict is not None and refused and not allow_breaking:
        report.error = BreakingChange(
            f"refusing to migrate {report.where.app_database}: {verdict.message}; nothing was run",
            "make the change in expand/contract steps (see each hint), or pass --allow-breaking to run it "
            "anyway (recorded in history)",
        )
    if report.error is not None or rehearsal is None:
        emit(Finished(report))
        return report
    note = options.note
    breaking: list[Named] = [*rehearsal.breaking, *(f for f in rehearsal.findings if f.severity == BREAKING)]
    if breaking and refused:
        note = "; ".join(x for x in (note, f"allow-breaking: {breaking_summary(breaking, 20)}") if x)[:2000]
        emit(
            Notice(
                f"--allow-breaking: would run {len(breaking)} breaking change(s) (dry run: nothing runs)"
                if options.dry_run
                else f"--allow-breaking: running {len(breaking)} breaking change(s); recorded in history",
                "warning",
            )
        )
    elif options.dry_run:
        emit(Notice("rehearsal passed the gate: `up` would run the migrations on the app database (dry run)"))
    else:
        emit(Notice("rehearsal passed the gate: running the migrations on the app database"))

    def second(event: Event) -> None:
        if isinstance(event, Resolved):
            return  # the target was already shown
        if isinstance(event, Notice) and event.text in shown:
            return  # config warnings, already shown
        if isinstance(event, Finished) and isinstance(event.result, RunReport):
            event.result.rehearsal = rehearsal
        emit(event)

    return up(ctx, replace(options, note=note), second)
