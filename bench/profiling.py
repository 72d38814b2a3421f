"""--profile: -X importtime, pyinstrument and py-spy reports of the cases."""

from __future__ import annotations

import contextlib
import re
import statistics
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from common import Venv
from measure import Case

# ----------------------------------------------------------------------------------- profiling


_IMPORTTIME = re.compile(r"^import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)")


def parse_importtime(stderr: str) -> list[tuple[str, int, int, int]]:
    """`-X importtime` lines as (module, self_us, cumulative_us, depth)."""
    rows = []
    for line in stderr.splitlines():
        m = _IMPORTTIME.match(line)
        if m:
            rows.append((m.group(4), int(m.group(1)), int(m.group(2)), (len(m.group(3)) - 1) // 2))
    return rows


def profile(project: Venv, cases: Mapping[str, Case], outdir: Path, repeats: int = 7) -> dict[str, Any]:
    """Where the time goes: -X importtime (median per module over `repeats` runs), then
    pyinstrument and py-spy on the warm no-op `up`, when they can be installed and run."""
    outdir.mkdir(parents=True, exist_ok=True)
    found: dict[str, Any] = {}
    for key in ("up", "up_typer028", "validate", "help", "version"):
        case = cases[key]
        per_module: dict[str, list[tuple[int, int, int]]] = {}
        for i in range(repeats):
            env = dict(case.env, PYTHONPROFILEIMPORTTIME="1")
            sample = subprocess.run(
                list(case.argv),
                cwd=case.cwd,
                env=env,
                capture_output=True,
                text=True,
                check=False,
                timeout=120,
            )
            if i == 0:
                (outdir / f"importtime-{key}.txt").write_text(sample.stderr)
            for name, self_us, cum_us, depth in parse_importtime(sample.stderr):
                per_module.setdefault(name, []).append((self_us, cum_us, depth))
        table = [
            (name, statistics.median(v[0] for v in vals), statistics.median(v[1] for v in vals), vals[0][2])
            for name, vals in per_module.items()
        ]
        total = sum(row[2] for row in table if row[3] == 0)
        found[key] = {
            "total_import_ms": round(total / 1000, 1),
            "top_level_by_cumulative_ms": [
                (name, round(cum / 1000, 1)) for name, _, cum, depth in sorted(table, key=lambda r: -r[2]) if depth == 0
            ][:12],
            "by_self_ms": [(name, round(s / 1000, 1)) for name, s, _, _ in sorted(table, key=lambda r: -r[1])][:15],
            "heavy_loaded": sorted(
                {n.split(".")[0] for n in per_module}
                & {
                    "psycopg",
                    "jsonschema",
                    "yaml",
                    "rich",
                    "pydantic",
                    "typer",
                    "click",
                    "asyncio",
                    "referencing",
                }
            ),
        }
    found["pyinstrument"] = _pyinstrument(project, cases["up"], outdir)
    found["py_spy"] = _py_spy(project, cases["up"], outdir)
    return found


def _pyinstrument(project: Venv, case: Case, outdir: Path) -> str:
    if subprocess.run([str(project.python), "-c", "import pyinstrument"], capture_output=True, check=False).returncode:
        try:
            project.pip("install", "-q", "pyinstrument", what="pip install pyinstrument (profile only)")
        except SystemExit as exc:
            return f"not available: {exc}"
    report = outdir / "pyinstrument-up.txt"
    argv = [
        str(project.python),
        "-m",
        "pyinstrument",
        "--interval",
        "0.0002",
        "-r",
        "text",
        "--show",  # our frames even though they live in site-packages; libraries stay folded
        "*/dbos_migrate/*",
        "-o",
        str(report),
        str(project.bin("dbos-migrate")),
        *case.argv[1:],
    ]
    result = subprocess.run(argv, cwd=case.cwd, env=dict(case.env), capture_output=True, text=True, check=False)
    return str(report) if result.returncode == 0 else f"failed: {result.stderr[-500:]}"


def _py_spy(project: Venv, case: Case, outdir: Path) -> str:
    py_spy = project.bin("py-spy")
    if not py_spy.exists():
        try:
            project.pip("install", "-q", "py-spy", what="pip install py-spy (profile only)")
        except SystemExit as exc:
            return f"not available: {exc}"
    raw = outdir / "py-spy-up.txt"
    # py-spy samples a whole run, imports included; several runs are needed for enough samples.
    stacks: dict[str, int] = {}
    for _ in range(10):
        result = subprocess.run(
            [
                str(py_spy),
                "record",
                "--nonblocking",
                "--rate",
                "2000",
                "--format",
                "raw",
                "--full-filenames",
                "-o",
                str(raw),
                "--",
                *case.argv,
            ],
            cwd=case.cwd,
            env=dict(case.env),
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        if result.returncode != 0 or not raw.exists():
            return f"failed (py-spy needs ptrace): {(result.stderr or result.stdout)[-500:]}"
        for line in raw.read_text().splitlines():
            stack, _, hits = line.rpartition(" ")
            with contextlib.suppress(ValueError):
                stacks[stack] = stacks.get(stack, 0) + int(hits)
    (outdir / "py-spy-up.folded").write_text("".join(f"{s} {c}\n" for s, c in sorted(stacks.items())))
    summary = outdir / "py-spy-up-top.txt"
    summary.write_text(summarize_stacks(stacks))
    return str(summary)


def summarize_stacks(stacks: Mapping[str, int], top: int = 25) -> str:
    """Inclusive share of each function over all sampled stacks (a function counts once per
    stack, line numbers merged), importlib's own frames left out: they wrap every import and
    would top every list. Samples without a Python frame (interpreter start-up and exit) are
    counted apart."""
    empty = sum(c for s, c in stacks.items() if not s.strip())
    total = sum(stacks.values()) - empty or 1
    inclusive: dict[str, int] = {}
    for stack, count in stacks.items():
        if not stack.strip():
            continue
        frames = {re.sub(r":\d+\)$", ")", f) for f in stack.split(";") if "<frozen importlib" not in f}
        for frame in frames:
            inclusive[frame] = inclusive.get(frame, 0) + count
    lines = [f"{total} samples with a Python frame, {empty} without (interpreter start-up/exit)"]
    for frame, count in sorted(inclusive.items(), key=lambda kv: -kv[1])[:top]:
        lines.append(f"{100 * count / total:5.1f}%  {frame}")
    return "\n".join(lines) + "\n"
