"""Mutation testing of the safety-critical code with mutmut (docs/mutation.md).

Slow (tens of minutes on two cores), so it is not part of CI. What it does:

1. builds its own venv, bench/.venvs/mutation, with mutmut (pinned below) and the project's
   `test` extra installed editable;
2. copies the working tree into bench/.mutation/work and appends a [tool.mutmut] section to the
   copy's pyproject.toml (the repository itself is never touched: mutmut writes its `mutants/`
   tree next to the config it reads);
3. runs `mutmut run` there under `nice -n 10` on the functions of the chosen GROUPS, with only
   the fast, in-process test files of FAST_TESTS and the Hypothesis profile `mutation` (few,
   derandomized examples: tests/conftest.py);
4. prints, per group, mutants total / killed / survived / timeout / other and the score, the
   name of every survivor and its diff (`mutmut show`), and writes the same as JSON to
   bench/.mutation/result.json.

Usage (a PostgreSQL the tests may use, as for the test suite):

    DBOS_MIGRATE_TEST_DATABASE_URL=postgresql://postgres@127.0.0.1:5432/postgres \\
        python3 bench/mutation.py [--group guard --group scrubber ...] [--jobs 2]

`python3 bench/mutation.py --list` shows the groups and the mutant name patterns of each.
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
VENV = BENCH_DIR / ".venvs" / "mutation"
WORK = BENCH_DIR / ".mutation"
MUTMUT = "mutmut==3.8.1"

#: Files mutmut may mutate; within them, GROUPS picks the functions.
FILES = [
    "dbos_migrate/settings/target.py",
    "dbos_migrate/settings/conninfo.py",
    "dbos_migrate/verbs/migrate.py",
    "dbos_migrate/verbs/confirm.py",
    "dbos_migrate/engine/lease.py",
    "dbos_migrate/engine/scrub.py",
    "dbos_migrate/engine/database.py",
    "dbos_migrate/engine/frame.py",
    "dbos_migrate/settings/config.py",
    "dbos_migrate/rehearse/rules.py",
    "dbos_migrate/rehearse/scratch.py",
    "dbos_migrate/rehearse/diff/*",
]

#: Mutant name patterns (fnmatch) per group. mutmut names a mutant
#: `<module>.x_<function>__mutmut_<n>`, or `<module>.xǁ<Class>ǁ<method>__mutmut_<n>` for a method.
GROUPS: dict[str, list[str]] = {
    # The production decision, the locality of hosts, URL masking, and the prompt's answer check.
    "guard": [
        "dbos_migrate.settings.target.x_is_production__mutmut_*",
        "dbos_migrate.settings.conninfo.x_is_local_host__mutmut_*",
        "dbos_migrate.settings.conninfo.x_nonlocal_endpoint__mutmut_*",
        "dbos_migrate.settings.conninfo.x_masked_text__mutmut_*",
        "dbos_migrate.verbs.migrate.x_guard__mutmut_*",
        "dbos_migrate.verbs.confirm.x_confirm_by_name__mutmut_*",
    ],
    "scrubber": ["dbos_migrate.engine.scrub.*"],
    "lock": [
        "dbos_migrate.engine.database.x_lock_key__mutmut_*",
        "dbos_migrate.engine.database.x_lock_holder__mutmut_*",
        "dbos_migrate.engine.database.x__channel__mutmut_*",
        "dbos_migrate.engine.database.x_acquire_lock__mutmut_*",
        "dbos_migrate.engine.database.x_release_lock__mutmut_*",
        "dbos_migrate.engine.database.x_holds_lock__mutmut_*",
        "dbos_migrate.engine.database.x_verify_lock__mutmut_*",
        "dbos_migrate.engine.frame.x_take_lock__mutmut_*",
    ],
    # The run lease that keeps two runs apart when the lock's session dies (not measured yet).
    "lease": ["dbos_migrate.engine.lease.*"],
    "config": [
        "dbos_migrate.settings.config.x_substitute__mutmut_*",
        "dbos_migrate.settings.config.x__substitute_tree__mutmut_*",
        "dbos_migrate.settings.config.x_derive_app_db_name__mutmut_*",
        "dbos_migrate.settings.config.x_check_app_db_name__mutmut_*",
    ],
    "rehearsal": [
        "dbos_migrate.rehearse.rules.*",
        "dbos_migrate.rehearse.diff.*",
        "dbos_migrate.rehearse.scratch.*",
    ],
}

#: Fast, database-light tests only (the CLI end-to-end test of the scrubber is deselected: it
#: runs subprocesses for a minute; tests/test_lock.py runs the CLI in subprocesses throughout).
FAST_TESTS = [
    "tests/test_target.py",
    "tests/test_conninfo.py",
    "tests/test_safety_inprocess.py",
    "tests/test_scrub.py",
    "tests/test_verbs_inprocess.py",
    "tests/test_config.py",
    "tests/test_fuzz_config.py",
    "tests/test_diff_unit.py",
]
DESELECT = ["tests/test_scrub.py::test_password_in_every_spelling_never_reaches_output_or_history"]

#: Groups tested by their own test selection instead of FAST_TESTS (docs/mutation.md, "Test
#: selection"): (test files, deselected tests). mutmut runs, for each mutant, every selected test
#: that reached the mutated function; the scrubber is reached by nearly every in-process test
#: (each run scrubs its output), so with FAST_TESTS a surviving scrubber mutant cost a minute of
#: tests. Its own tests are the ones that must kill its mutants. Such a group runs in its own
#: copy of the tree, bench/.mutation/work-<group>.
GROUP_TESTS: dict[str, tuple[list[str], list[str]]] = {
    "scrubber": (["tests/test_scrub.py", "tests/test_scrub_rules.py"], DESELECT),
}

ALSO_COPY = ["schemas/", "examples/", "sample_app/", "docs/", "README.md", "action.yml"]

#: mutmut's exit codes (mutmut/stats.py) in four columns; 33 is "no test covers it", None "not run yet".
STATUS = {1: "killed", 3: "killed", 0: "survived", 36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def venv() -> Path:
    """bench/.venvs/mutation with mutmut and the project (editable: the run imports the mutated
    copy, which mutmut puts first on sys.path)."""
    py = VENV / "bin" / "python"
    if not py.exists():
        log(f"creating {VENV}")
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(py), "-m", "pip", "install", "-q", MUTMUT, "-e", f"{REPO_ROOT}[test]"], check=True)
    return VENV / "bin"


def work_dir(group: str) -> Path:
    """Where the group's run happens: its own copy for a group with its own test selection."""
    return WORK / (f"work-{group}" if group in GROUP_TESTS else "work")


def selection(group: str) -> tuple[list[str], list[str]]:
    return GROUP_TESTS.get(group, (FAST_TESTS, DESELECT))


def copy_tree(work: Path, tests: list[str], deselect: list[str]) -> Path:
    """The working tree (tracked and untracked, not ignored files) copied to `work`, with a
    mutmut config that runs `tests` minus `deselect`."""
    if work.exists():
        shutil.rmtree(work)
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO_ROOT, check=True, capture_output=True,
    ).stdout.decode().split("\0")  # fmt: skip
    for name in filter(None, files):
        src = REPO_ROOT / name
        if not src.is_file() or name.startswith("bench/"):
            continue
        dst = work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    args = ["-n", "0", "-p", "no:cacheprovider", *(f"--deselect={d}" for d in deselect)]
    section = [
        "",
        "[tool.mutmut]",
        'source_paths = ["dbos_migrate/"]',
        f"only_mutate = {json.dumps(FILES)}",
        f"pytest_add_cli_args = {json.dumps(args)}",
        f"pytest_add_cli_args_test_selection = {json.dumps(tests)}",
        "use_git_change_detection = false",
        # Files the tests read relative to the checkout (the config schema, examples, docs).
        f"also_copy = {json.dumps(ALSO_COPY)}",
        "",
    ]
    with (work / "pyproject.toml").open("a") as f:
        f.write("\n".join(section))
    return work


def tally(groups: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for group in groups:
        codes: dict[str, int | None] = {}
        for meta in (work_dir(group) / "mutants").rglob("*.meta"):
            codes.update(json.loads(meta.read_text())["exit_code_by_key"])
        mine = {k: v for k, v in codes.items() if any(fnmatch.fnmatch(k, p) for p in GROUPS[group])}
        counts = {"total": len(mine), "killed": 0, "survived": 0, "timeout": 0, "not run": 0, "other": 0}
        survivors = []
        for key, code in sorted(mine.items()):
            status = STATUS.get(code, "other") if code is not None else "not run"
            counts[status] += 1
            if status == "survived":
                survivors.append(key)
        tested = counts["killed"] + counts["survived"] + counts["timeout"]
        score = 100.0 * (counts["killed"] + counts["timeout"]) / tested if tested else 0.0
        out[group] = {**counts, "score": round(score, 1), "survivors": survivors}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--group", action="append", choices=sorted(GROUPS), help="default: every group")
    parser.add_argument("--jobs", type=int, default=2, help="mutants tested at once (default 2)")
    parser.add_argument("--list", action="store_true", help="show the groups and exit")
    parser.add_argument("--show", action="store_true", help="print each survivor's diff")
    parser.add_argument("--mutants", action="append", help="run only these mutant name patterns (of the groups)")
    parser.add_argument("--report-only", action="store_true", help="tally the last run (even an interrupted one)")
    ns = parser.parse_args()
    if ns.list:
        for name, patterns in GROUPS.items():
            print(name, *patterns, sep="\n  ")
        return 0
    if not os.environ.get("DBOS_MIGRATE_TEST_DATABASE_URL"):
        log("set DBOS_MIGRATE_TEST_DATABASE_URL to a PostgreSQL the tests may use (see the test suite's conftest)")
        return 2
    groups = ns.group or list(GROUPS)
    bin_dir = venv()
    env = {**os.environ, "HYPOTHESIS_PROFILE": "mutation", "TMPDIR": str(WORK / "tmp")}
    started = time.monotonic()
    rc = -1
    if not ns.report_only:
        rc = 0
        (WORK / "tmp").mkdir(parents=True, exist_ok=True)
        # One mutmut run per work tree: the groups of FAST_TESTS together, each GROUP_TESTS group alone.
        for work in dict.fromkeys(work_dir(g) for g in groups):
            mine = [g for g in groups if work_dir(g) == work]
            copy_tree(work, *selection(mine[0]))
            names = [p for g in mine for p in GROUPS[g]]
            patterns = [m for m in ns.mutants if any(fnmatch.fnmatch(m, n) for n in names)] if ns.mutants else names
            if not patterns:
                continue
            cmd = ["nice", "-n", "10", str(bin_dir / "mutmut"), "run", "--max-children", str(ns.jobs), *patterns]
            log(f"running in {work}: " + " ".join(cmd))
            done = subprocess.run(cmd, cwd=work, env=env).returncode
            rc = rc or done
    elapsed = time.monotonic() - started
    result = {"mutmut": MUTMUT, "seconds": round(elapsed), "exit": rc, "groups": tally(groups)}
    (WORK / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(f"{'group':<10} {'total':>6} {'killed':>7} {'survived':>9} {'timeout':>8} {'not run':>8} {'other':>6} {'score':>6}")
    for group, r in result["groups"].items():  # type: ignore[attr-defined]
        print(f"{group:<10} {r['total']:>6} {r['killed']:>7} {r['survived']:>9} {r['timeout']:>8} {r['not run']:>8} {r['other']:>6} "
              f"{r['score']:>5}%")  # fmt: skip
    print(f"run time: {elapsed:.0f} s (mutmut exit {rc})")
    for group, r in result["groups"].items():  # type: ignore[attr-defined]
        for name in r["survivors"]:
            print(f"survived [{group}] {name}")
            if ns.show:
                subprocess.run([str(bin_dir / "mutmut"), "show", name], cwd=work_dir(group), env=env)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
