"""The gate's verdict on a rehearsal: what `up --fail-on-breaking` does, and what `plan
--rehearse` says it would do (docs/rehearsal.md, "The gate").

- Rows of the app database that make a change fail (a breaking DATA finding): refuse; the
  deploy would fail whatever runs.
- A breaking change with `--strict`: refuse.
- A breaking change and unfinished workflows of another application version: refuse.
- A breaking change and the workflows unknown (no readable system database): refuse; a
  rehearsal never assumes that nothing runs.
- A breaking change and no unfinished workflow of another version: pass, and say so.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dbos_migrate.rehearse.result import Rehearsal, Verdict
from dbos_migrate.rehearse.rules import BREAKING, UNKNOWN, breaking_summary
from dbos_migrate.rehearse.units import human_age

if TYPE_CHECKING:
    from dbos_migrate.rehearse.datachecks import Finding


def decide(rehearsal: Rehearsal, *, strict: bool) -> Verdict:
    breaking = rehearsal.breaking
    failing = [f for f in rehearsal.findings if f.severity == BREAKING]
    parts: list[str] = []
    reasons: list[str] = []
    if failing:
        parts.append(f"rows of the app database make {len(failing)} change(s) fail: {breaking_summary(failing)}")
        reasons.append("data")
    if breaking:
        summary = f"{len(breaking)} breaking change(s) ({breaking_summary(breaking)})"
        wf = rehearsal.workflows
        others = wf.others() if wf is not None else []
        if strict:
            parts.append(f"{summary}, and --strict refuses any breaking change")
            reasons.append("strict")
        elif wf is None or wf.status == "unknown":
            why = wf.reason if wf is not None and wf.reason else "the system database was not read"
            parts.append(
                f"{summary}, and whether workflows of the previous version are still running is unknown: {why}"
            )
            reasons.append("workflows-unknown")
        elif others:
            count = sum(v.count for v in others)
            versions = ", ".join(f"{v.version or '(none)'}: {v.count}" for v in others[:5])
            ages = [v.oldest_age_s for v in others if v.oldest_age_s is not None]
            oldest = f", oldest started {human_age(max(ages))} ago" if ages else ""
            parts.append(
                f"{summary} meet {count} unfinished workflow(s) of another application version ({versions}{oldest})"
            )
            reasons.append("workflows")
    unknown = [f for f in rehearsal.findings if f.severity == UNKNOWN]
    if strict and unknown:
        parts.append(f"{unknown_summary(unknown)}, and --strict refuses on any unknown data check")
        reasons.append("data-unknown")
    if parts:
        return Verdict(True, "; ".join(parts), strict, reasons)
    if breaking:
        return Verdict(
            False,
            f"{len(breaking)} breaking change(s) ({breaking_summary(breaking)}), but no "
            "unfinished workflow of another application version is in the system database, so none "
            "can break (pass --strict to refuse any breaking change)",
            strict,
        )
    return Verdict(False, "no breaking change", strict)


def unknown_summary(unknown: list[Finding], limit: int = 3) -> str:
    """`2 data check(s) unknown: timed out after 5s (x1); ...`: how many, and why."""
    why: dict[str, int] = {}
    for finding in unknown:
        reason = finding.reason or (
            "no violating row in a sample; the rest was not examined"
            if finding.status == "none-in-sample"
            else finding.detail
        )
        why[reason] = why.get(reason, 0) + 1
    shown = "; ".join(f"{r} (x{n})" for r, n in list(why.items())[:limit])
    more = f"; and {len(why) - limit} other reason(s)" if len(why) > limit else ""
    return f"{len(unknown)} data check(s) unknown: {shown}{more}"
