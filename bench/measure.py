"""Running the cases: samples, side-by-side rounds, peak RSS and the lock hand-over trial."""

from __future__ import annotations

import contextlib
import datetime as dt
import itertools
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import log, median_ms

# ----------------------------------------------------------------------------------- running


@dataclass(frozen=True)
class Case:
    """One command measured in every round."""

    key: str
    label: str
    argv: tuple[str, ...]
    cwd: Path
    env: Mapping[str, str]


@dataclass
class Sample:
    wall_s: float
    cpu_s: float  # user + system time of the child and the descendants it waited for
    returncode: int
    maxrss_kb: int
    output: str


@dataclass
class CaseResult:
    case: Case
    samples: list[Sample] = field(default_factory=list)

    @property
    def ok(self) -> list[Sample]:
        return [s for s in self.samples if s.returncode == 0]

    @property
    def failures(self) -> list[Sample]:
        return [s for s in self.samples if s.returncode != 0]

    def as_json(self) -> dict[str, Any]:
        ok = self.ok
        walls = [s.wall_s for s in ok]
        rss = [s.maxrss_kb for s in ok]
        cpu = [s.cpu_s for s in ok]
        return {
            "label": self.case.label,
            "argv": [Path(a).name if "/" in a else a for a in self.case.argv],
            "rounds": len(self.samples),
            "failures": len(self.failures),
            "first_failure": self.failures[0].output[-2000:] if self.failures else None,
            "median_ms": median_ms(walls),
            "min_ms": min(walls) * 1000 if walls else None,
            "max_ms": max(walls) * 1000 if walls else None,
            "median_cpu_ms": median_ms(cpu),
            "samples_ms": [round(w * 1000, 2) for w in walls],
            "peak_rss_kb": max(rss) if rss else None,
            "median_rss_kb": statistics.median(rss) if rss else None,
        }


def run_once(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> Sample:
    """One subprocess: wall time from fork to reap, its exit code, its own peak RSS (wait4)."""
    with tempfile.TemporaryFile() as out:
        start = time.perf_counter()
        proc = subprocess.Popen(
            list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT
        )
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait again
        out.seek(0)
        text = out.read().decode("utf-8", "replace")
    # ru_maxrss is in KiB on Linux, in bytes on macOS.
    maxrss = usage.ru_maxrss // 1024 if sys.platform == "darwin" else usage.ru_maxrss
    return Sample(wall, usage.ru_utime + usage.ru_stime, proc.returncode, maxrss, text)


def run_rounds(cases: Sequence[Case], rounds: int) -> dict[str, CaseResult]:
    """Round-robin: each round runs every case once, starting one case further each time."""
    results = {case.key: CaseResult(case) for case in cases}
    for r in range(rounds):
        order = [cases[(r + i) % len(cases)] for i in range(len(cases))]
        for case in order:
            results[case.key].samples.append(run_once(case.argv, case.cwd, case.env))
        log(f"bench: round {r + 1}/{rounds} done")
    return results


def warm_up(cases: Sequence[Case]) -> None:
    """Run every case twice, untimed: the first `up` creates the app database, its history
    table and the config cache; the first `dbos migrate` creates and migrates its system
    database; and the OS page cache gets every file both tools read."""
    for case in cases:
        for _ in range(2):
            sample = run_once(case.argv, case.cwd, case.env)
            if sample.returncode != 0:
                log(f"bench: warm-up of '{case.label}' failed (exit {sample.returncode}):\n{sample.output[-2000:]}")
                break


def peak_rss_cross_check(case: Case) -> int | None:
    """`/usr/bin/time -f %M` on one run, as an independent check of the wait4 numbers."""
    gnu_time = Path("/usr/bin/time")
    if not gnu_time.exists():
        return None
    with tempfile.NamedTemporaryFile("r") as report:
        result = subprocess.run(
            [str(gnu_time), "-f", "%M", "-o", report.name, *case.argv],
            cwd=case.cwd,
            env=dict(case.env),
            capture_output=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0:
            return None
        text = Path(report.name).read_text().strip().splitlines()
    try:
        return int(text[-1])
    except (IndexError, ValueError):
        return None


@dataclass
class ConcurrencyTrial:
    """One trial of N concurrent runs. From the commands' own started_at/finished_at the wall
    time splits into: `lead_in_s` (launch until the first command starts: N interpreters
    starting at once, config, connect, lock), the commands themselves, `gaps_s` (from one
    command's end to the next one's start: history, unlock, process exit, the next waiter's
    poll) and `tail_s` (the last command's end until the last process is reaped).
    `overlap_s` > 0 means two commands ran at the same time: the lock failed."""

    wall_s: float
    command_sum_s: float
    succeeded: int
    runs: int
    errors: list[str]
    lead_in_s: float | None = None
    gaps_s: float | None = None
    max_gap_s: float | None = None
    tail_s: float | None = None
    overlap_s: float = 0.0

    gap_list: list[float] = field(default_factory=list)

    @property
    def ratio(self) -> float | None:
        return self.wall_s / self.command_sum_s if self.command_sum_s > 0 else None


def _launch(argv: Sequence[str], cwd: Path, env: Mapping[str, str], stdout: Any) -> subprocess.Popen[bytes]:
    """One benchmark process: no stdin, stderr discarded, stdout where the caller wants it."""
    return subprocess.Popen(
        list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.DEVNULL
    )


def run_concurrent(argv: Sequence[str], cwd: Path, env: Mapping[str, str], n: int) -> ConcurrencyTrial:
    """Start `n` runs at once and wait for all. Each prints one JSON document (--output json);
    the sum of its commands' `duration_s` is the time the lock must serialise."""
    with contextlib.ExitStack() as stack:
        files = [stack.enter_context(tempfile.TemporaryFile()) for _ in range(n)]
        launched = dt.datetime.now(dt.timezone.utc)
        start = time.perf_counter()
        procs = [_launch(argv, cwd, env, f) for f in files]
        for proc in procs:
            proc.wait()
        wall = time.perf_counter() - start
        ended = dt.datetime.now(dt.timezone.utc)
        total, succeeded, errors = 0.0, 0, []
        spans: list[tuple[dt.datetime, dt.datetime]] = []
        for proc, f in zip(procs, files, strict=True):
            f.seek(0)
            raw = f.read().decode("utf-8", "replace")
            try:
                doc = json.loads(raw)
            except ValueError:
                errors.append(f"exit {proc.returncode}, not JSON: {raw[-300:]!r}")
                continue
            total += sum(float(c.get("duration_s") or 0) for c in doc.get("commands", []))
            with contextlib.suppress(KeyError, TypeError, ValueError):
                spans += [
                    (dt.datetime.fromisoformat(c["started_at"]), dt.datetime.fromisoformat(c["finished_at"]))
                    for c in doc.get("commands", [])
                ]
            if proc.returncode == 0 and doc.get("ok"):
                succeeded += 1
            else:
                errors.append(f"exit {proc.returncode}: {json.dumps(doc.get('error'))}")
    trial = ConcurrencyTrial(wall, total, succeeded, n, errors)
    if spans:
        spans.sort()
        gaps = [b[0] - a[1] for a, b in itertools.pairwise(spans)]
        trial.lead_in_s = (spans[0][0] - launched).total_seconds()
        trial.tail_s = (ended - max(end for _, end in spans)).total_seconds()
        trial.gaps_s = sum(max(g.total_seconds(), 0) for g in gaps)
        trial.max_gap_s = max((g.total_seconds() for g in gaps), default=0.0)
        trial.gap_list = [g.total_seconds() for g in gaps]
        trial.overlap_s = sum(max(-g.total_seconds(), 0) for g in gaps)
    return trial
