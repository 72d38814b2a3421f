"""The facts a rehearsal found beside its changes, in words and as JSON: shared by the text,
JSON and GitHub renderers so that all three say the same thing in the same order."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from dbos_migrate.rehearse.gate import unknown_summary
from dbos_migrate.rehearse.rules import BREAKING, LOCK_HEAVY, SAFE, UNKNOWN, Change
from dbos_migrate.rehearse.units import human_age
from dbos_migrate.report.jsonshape import to_json

if TYPE_CHECKING:
    from dbos_migrate.rehearse.result import Rehearsal
    from dbos_migrate.rehearse.workflows import Tie, WorkflowReport


def ties(change: Change, report: WorkflowReport) -> list[Tie]:
    from dbos_migrate.rehearse.workflows import ties as find  # loaded only when a rehearsal ran

    return find(change, report)


def change_json(rehearsal: Rehearsal, index: int, change: Change) -> dict[str, Any]:
    """One item of `changes[]`: the change, its data findings and (breaking ones) the workflows."""
    doc: dict[str, Any] = to_json(change)
    doc["data_checks"] = to_json(rehearsal.findings_of(index))
    doc["workflows"] = workflows_json(change, rehearsal.workflows) if change.severity == BREAKING else None
    return doc


def workflows_json(change: Change, report: WorkflowReport | None) -> dict[str, Any] | None:
    if report is None:
        return None
    others = report.others()
    return {
        "status": report.status,
        "reason": report.reason,
        "unfinished_other_versions": sum(v.count for v in others),
        "versions": [{"version": v.version, "count": v.count, "oldest_age_s": v.oldest_age_s} for v in others],
        "related": to_json(ties(change, report)) if report.status == "found" else [],
    }


def workflow_fact(change: Change, report: WorkflowReport | None) -> str | None:
    """What the unfinished workflows mean for one breaking change, in one line."""
    if change.severity != BREAKING or report is None:
        return None
    if report.status == "unknown":
        return f"unknown: {report.reason}"
    others = report.others()
    if not others:
        return "no unfinished workflow of another application version"
    count = sum(v.count for v in others)
    text = f"{count} unfinished of another version ({versions_text(report)})"
    related = ties(change, report)
    if related:
        shown = ", ".join(f"{t.workflow} [{t.version or '(none)'}] x{t.count} via {t.via}" for t in related[:5])
        more = f" and {len(related) - 5} more" if len(related) > 5 else ""
        text += f"; may concern: {shown}{more}"
    return text


def versions_text(report: WorkflowReport, limit: int = 5) -> str:
    parts = []
    for v in report.others()[:limit]:
        age = f", oldest {human_age(v.oldest_age_s)}" if v.oldest_age_s is not None else ""
        parts.append(f"{v.version or '(none)'}: {v.count}{age}")
    more = len(report.others()) - limit
    return "; ".join(parts) + (f"; {more} more version(s)" if more > 0 else "")


def workflows_line(report: WorkflowReport | None) -> str | None:
    """The system database in one line: which generation, how many unfinished workflows."""
    if report is None:
        return None
    where = f"system database {report.database}" if report.database else "system database"
    if report.status == "unknown":
        return f"workflows: unknown ({report.reason})"
    head = f"workflows: {where}, {report.generation}"
    this = f" (deploying {report.this_version})" if report.this_version else ""
    if report.status == "none":
        return f"{head}: no unfinished workflow{this}"
    other = sum(v.count for v in report.others())
    line = f"{head}: {report.unfinished} unfinished (PENDING/ENQUEUED/DELAYED), {other} of another version{this}"
    return line + (f": {versions_text(report)}" if other else "")


def data_line(rehearsal: Rehearsal) -> str | None:
    report = rehearsal.data_checks
    if report is None:
        return None
    if not report.enabled or report.skipped:
        return f"data checks: none ({report.skipped})"
    counts = {
        sev: sum(1 for f in rehearsal.findings if f.severity == sev) for sev in (BREAKING, LOCK_HEAVY, UNKNOWN, SAFE)
    }
    found = ", ".join(f"{n} {sev}" for sev, n in counts.items() if n) or "nothing"
    line = (
        f"data checks: {report.checks} on {report.database} in {report.elapsed_ms} ms "
        f"(each at most {report.settings.timeout_s:g}s, read-only): {found}"
    )
    unknown = [f for f in rehearsal.findings if f.severity == UNKNOWN]
    return line + (f" ({unknown_summary(unknown)})" if unknown else "")


def verdict_line(rehearsal: Rehearsal, gate: bool) -> str | None:
    verdict = rehearsal.verdict
    if verdict is None:
        return None
    who = "gate" if gate else "gate (up --fail-on-breaking)"
    if verdict.refuse:
        return f"{who}: {'refuses' if gate else 'would refuse'}: {verdict.message}"
    return f"{who}: {'passes' if gate else 'would pass'}: {verdict.message}"


def rollback_lines(rehearsal: Rehearsal, limit: int = 20) -> list[str]:
    """Whether database.rollback restored the schema on the scratch copy (plan --rehearse)."""
    check = rehearsal.rollback
    if check is None:
        return []
    if check.failed_command is not None:
        return [f"rollback: failed on the scratch database ({check.failure}): {check.failed_command}"]
    if not check.ran:
        return []
    if check.restores:
        return ["rollback: restores the schema (database.rollback, rehearsed after the migrations)"]
    lines = [f"rollback: does NOT restore the schema: {len(check.differences)} difference(s)"]
    lines += [f"  {d.describe()}" for d in check.differences[:limit]]
    if len(check.differences) > limit:
        lines.append(f"  and {len(check.differences) - limit} more")
    return lines


def destroys_lines(rehearsal: Rehearsal) -> list[str]:
    """What the rollback would destroy in the real app database (down --rehearse)."""
    if rehearsal.destroys is None:
        return []
    if not rehearsal.destroys:
        return ["rollback destroys: no table or column"]
    return ["rollback destroys:", *(f"  {loss.describe()}" for loss in rehearsal.destroys)]
