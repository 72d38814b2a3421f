"""The targets and the Markdown report of a benchmark run."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common import SLEEP_COMMAND, median_ms
from measure import CaseResult, ConcurrencyTrial

# ----------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    limit: float
    unit: str  # "x" for a ratio, "MB" for memory
    note: str = ""
    cpu_ratio: float | None = None  # the same ratio on CPU time (user + sys): steadier on a busy machine

    @property
    def verdict(self) -> str:
        if self.value is None:
            return "FAILED"
        return "PASS" if self.value <= self.limit else "MISS"

    def shown(self, number: float | None) -> str:
        if number is None:
            return "n/a"
        return f"{number:.2f}x" if self.unit == "x" else f"{number:.1f} {self.unit}"


def _ratio(results: Mapping[str, CaseResult], a: str, b: str, *, cpu: bool = False) -> float | None:
    def med(key: str) -> float | None:
        return median_ms([s.cpu_s if cpu else s.wall_s for s in results[key].ok])

    ma, mb = med(a), med(b)
    if ma is None or mb is None or mb == 0 or results[a].failures:
        return None
    return ma / mb


def _ratio_target(name: str, results: Mapping[str, CaseResult], a: str, b: str, limit: float) -> Target:
    return Target(name, _ratio(results, a, b), limit, "x", cpu_ratio=_ratio(results, a, b, cpu=True))


def _peak_mb(result: CaseResult) -> float | None:
    rss = [s.maxrss_kb for s in result.ok]
    return max(rss) / 1024 if rss and not result.failures else None


def build_targets(results: Mapping[str, CaseResult], trials: Sequence[ConcurrencyTrial]) -> list[Target]:
    gaps = [g for t in trials for g in t.gap_list]
    handover = statistics.median(gaps) * 1000 if gaps and all(t.succeeded == t.runs for t in trials) else None
    note = ""
    if any(t.overlap_s > 0.001 for t in trials):
        handover, note = None, "commands overlapped: the lock did not serialise them"
    return [
        _ratio_target("up / typer floor", results, "up", "typer_floor", 1.30),
        _ratio_target("up with typer<0.29 / typer floor on typer<0.29", results, "up_typer028", "typer_floor028", 1.30),
        _ratio_target("up / dbos migrate 3.4.0", results, "up", "dbos", 0.65),
        _ratio_target("up / floor (psycopg connect)", results, "up", "floor", 1.60),
        _ratio_target("up with typer<0.29 / floor (psycopg connect)", results, "up_typer028", "floor", 1.60),
        _ratio_target("up with typer<0.29 / dbos migrate 3.4.0", results, "up_typer028", "dbos", 0.65),
        _ratio_target("validate / import yaml, jsonschema", results, "validate", "imports", 1.50),
        _ratio_target(
            "validate with typer<0.29 / import yaml, jsonschema",
            results,
            "validate_typer028",
            "imports",
            1.50,
        ),
        Target("peak RSS of up", _peak_mb(results["up"]), 60.0, "MB"),
        Target("lock hand-over, median gap between commands", handover, 100.0, "ms", note),
    ]


def render(
    machine: Mapping[str, str],
    results: Mapping[str, CaseResult],
    targets: Sequence[Target],
    trials: Sequence[ConcurrencyTrial],
    rounds: int,
    n: int,
    rss_check: int | None,
) -> str:
    """The human-readable report: machine, medians, targets. Markdown-friendly, so it can be
    pasted into BENCHMARKS.md as it is."""
    lines = ["## Machine", ""]
    lines += [f"- {key}: {value}" for key, value in machine.items()]
    lines += ["", f"## Medians ({rounds} rounds, round-robin, wall time of one subprocess)", ""]
    lines.append("| command | median ms | min ms | max ms | CPU ms | peak RSS MB | failed |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|")
    for result in results.values():
        data = result.as_json()
        cells = [
            f"{data[k]:.1f}" if data[k] is not None else "n/a"
            for k in ("median_ms", "min_ms", "max_ms", "median_cpu_ms")
        ]
        rss = f"{data['peak_rss_kb'] / 1024:.1f}" if data["peak_rss_kb"] else "n/a"
        lines.append(f"| {result.case.label} | {' | '.join(cells)} | {rss} | {data['failures']}/{data['rounds']} |")
    if rss_check is not None:
        lines += ["", f"Cross-check: `/usr/bin/time -f %M` on one warm `up`: {rss_check / 1024:.1f} MB."]
    lines += ["", f"## Lock hand-over: {n} `up` runs queued on one app (`{SLEEP_COMMAND}` each)", ""]
    lines.append("| trial | hand-over gaps, ms (command end to the next command's start) | median ms | succeeded |")
    lines.append("|---:|---|---:|---:|")
    for i, trial in enumerate(trials, 1):
        gaps = ", ".join(f"{g * 1000:.1f}" for g in trial.gap_list) or "n/a"
        med = f"{statistics.median(trial.gap_list) * 1000:.1f}" if trial.gap_list else "n/a"
        lines.append(f"| {i} | {gaps} | {med} | {trial.succeeded}/{trial.runs} |")
    lines += [
        "",
        "Each waiter was already waiting (the command outlasts every run's start-up); DBOS's own lock polls"
        " every second.",
    ]
    lines += [
        "",
        "## Targets",
        "",
        "Verdicts are on the wall-time medians; the CPU-time ratio (user + sys of the process tree) is shown",
        "beside them because it moves much less when other work shares the machine.",
        "",
        "| target | measured | limit | verdict | CPU-time ratio |",
        "|---|---:|---:|---|---:|",
    ]
    for t in targets:
        verdict = t.verdict + (f" ({t.note})" if t.note else "")
        cpu = f"{t.cpu_ratio:.2f}x" if t.cpu_ratio is not None else ""
        lines.append(f"| {t.name} | {t.shown(t.value)} | ≤ {t.shown(t.limit)} | {verdict} | {cpu} |")
    passed = sum(t.verdict == "PASS" for t in targets)
    lines += ["", f"{passed}/{len(targets)} targets met."]
    failures = [r for r in results.values() if r.failures]
    for r in failures:
        lines += [
            "",
            f"'{r.case.label}' failed {len(r.failures)} time(s); last output:",
            "```",
            r.failures[-1].output.strip()[-1500:],
            "```",
        ]
    for i, trial in enumerate(trials, 1):
        if trial.errors:
            lines += ["", f"concurrency trial {i}: {len(trial.errors)} run(s) failed, e.g. {trial.errors[0]}"]
    return "\n".join(lines)


def render_profile(found: Mapping[str, Any]) -> str:
    lines = ["", "## Profile", ""]
    for key, data in found.items():
        if not isinstance(data, dict):
            lines.append(f"- {key}: {data}")
            continue
        lines.append(f"### {key}: {data['total_import_ms']} ms of imports; heavy: {', '.join(data['heavy_loaded'])}")
        top = ", ".join(f"{name} {ms}" for name, ms in data["top_level_by_cumulative_ms"])
        lines.append(f"- top-level imports, cumulative ms: {top}")
        own = ", ".join(f"{name} {ms}" for name, ms in data["by_self_ms"][:10])
        lines.append(f"- largest self times, ms: {own}")
    return "\n".join(lines)
