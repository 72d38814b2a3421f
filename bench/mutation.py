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

#: The files each group's functions live in: a run mutates only those of its groups (mutmut
#: spends minutes generating the mutants of every file it may mutate, wanted or not).
GROUP_FILES: dict[str, list[str]] = {
    "guard": [
        "dbos_migrate/settings/target.py",
        "dbos_migrate/settings/conninfo.py",
        "dbos_migrate/verbs/migrate.py",
        "dbos_migrate/verbs/confirm.py",
    ],
    "scrubber": ["dbos_migrate/engine/scrub.py"],
    "lock": ["dbos_migrate/engine/database.py", "dbos_migrate/engine/frame.py"],
    "lease": ["dbos_migrate/engine/lease.py"],
    "config": ["dbos_migrate/settings/config.py"],
    "rehearsal": [
        "dbos_migrate/rehearse/rules.py",
        "dbos_migrate/rehearse/scratch.py",
        "dbos_migrate/rehearse/diff/*",
    ],
}

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
        "dbos_migrate.engine.database.x_lock_timed_out__mutmut_*",
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

#: A narrower test selection per group, used instead of FAST_TESTS when only such groups run (the
#: union of theirs). mutmut runs, for each mutant, every selected test that calls the mutated
#: function; the lock and the guard are reached by every in-process `up`/`down`, so with FAST_TESTS
#: each of their mutants costs a minute of in-process runs that check nothing about them.
GROUP_TESTS: dict[str, list[str]] = {
    "lock": [
        f"tests/test_safety_inprocess.py::{name}"
        for name in (
            "test_the_creation_lock_is_released_only_once_the_app_database_lock_is_held",
            "test_lock_holder_names_the_session_that_holds_the_lock",
            "test_the_timeout_names_the_holder_or_says_it_has_since_ended",
            "test_a_held_lock_is_reported_while_waiting_and_named_on_timeout",
            "test_a_driver_error_while_taking_the_lock_becomes_a_database_error",
            "test_verify_lock_stops_the_run_when_the_lock_or_its_session_is_gone",
            "test_lock_keys_are_stable_across_versions",
            "test_release_wakes_the_waiters_on_the_lock_channel",
            "test_release_on_a_dead_session_is_silent",
            "test_a_waiter_listens_while_it_waits_and_tries_first_once",
            "test_a_waiter_names_a_new_holder_once_five_seconds_passed_and_never_the_same_twice",
            "test_a_waiter_pauses_a_growing_jittered_while_and_never_past_its_deadline",
        )
    ],
    "guard": [
        "tests/test_target.py",
        "tests/test_conninfo.py",
        *(
            f"tests/test_safety_inprocess.py::{name}"
            for name in (
                "test_down_on_production_runs_only_after_the_name_is_typed",
                "test_guard_warning_names_the_target_and_the_commands",
                "test_confirm_runs_only_on_the_exact_name",
                "test_no_terminal_and_a_wrong_answer_are_refused_with_the_way_out",
            )
        ),
    ],
    # The lease is reached by every in-process run; these are the runs that look at it (its
    # renewal and expiry are tested only by tests/test_lease.py, in subprocesses).
    "lease": [
        "tests/test_lease_unit.py",
        "tests/test_drop.py::test_a_live_lease_of_a_run_whose_lock_session_died_is_respected",
        "tests/test_verbs_inprocess.py::test_up_emits_the_run_in_order_and_prints_nothing_itself",
        "tests/test_safety_inprocess.py::test_a_held_lock_is_reported_while_waiting_and_named_on_timeout",
    ],
    "config": ["tests/test_config.py", "tests/test_fuzz_config.py", "tests/test_target.py"],
    # The scrubber is reached by nearly every in-process test (each run scrubs its output); its
    # own tests are the ones that must kill its mutants (DESELECT drops the end-to-end CLI one).
    "scrubber": ["tests/test_scrub.py", "tests/test_scrub_rules.py"],
    "rehearsal": [
        "tests/test_diff_unit.py",
        "tests/test_rollback_unit.py",
        "tests/test_rehearse.py::test_scratch_name_fits_63_bytes",
        "tests/test_safety_inprocess.py::test_a_failing_command_still_drops_the_scratch_database",
    ],
}


def tests_for(groups: list[str]) -> list[str]:
    """GROUP_TESTS' union when every group has one, else FAST_TESTS."""
    if not all(g in GROUP_TESTS for g in groups):
        return FAST_TESTS
    return list(dict.fromkeys(t for g in groups for t in GROUP_TESTS[g]))


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


def copy_tree(tests: list[str], mutate: list[str]) -> Path:
    """The working tree (tracked and untracked, not ignored files) copied to bench/.mutation/work."""
    work = WORK / "work"
    if work.exists():
        shutil.rmtree(work)
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=REPO_ROOT,
            check=True,
            capture_output=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        src = REPO_ROOT / name
        if not src.is_file() or name.startswith("bench/"):
            continue
        dst = work / name
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, dst)
    args = ["-n", "0", "-p", "no:cacheprovider", *(f"--deselect={d}" for d in DESELECT)]
    section = [
        "",
        "[tool.mutmut]",
        'source_paths = ["dbos_migrate/"]',
        f"only_mutate = {json.dumps(mutate)}",
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


def tally(work: Path, groups: list[str]) -> dict[str, object]:
    codes: dict[str, int | None] = {}
    for meta in (work / "mutants").rglob("*.meta"):
        codes.update(json.loads(meta.read_text())["exit_code_by_key"])
    out: dict[str, object] = {}
    for group in groups:
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
    parser.add_argument("--all-fast-tests", action="store_true", help="FAST_TESTS, not GROUP_TESTS")
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
    if ns.report_only:
        work, rc = WORK / "work", -1
    else:
        tests = FAST_TESTS if ns.all_fast_tests else tests_for(groups)
        log("tests: " + " ".join(tests))
        work = copy_tree(tests, list(dict.fromkeys(f for g in groups for f in GROUP_FILES.get(g, FILES))))
        (WORK / "tmp").mkdir(parents=True, exist_ok=True)
        patterns = ns.mutants or [p for g in groups for p in GROUPS[g]]
        cmd = ["nice", "-n", "10", str(bin_dir / "mutmut"), "run", "--max-children", str(ns.jobs), *patterns]
        log("running: " + " ".join(cmd))
        rc = subprocess.run(cmd, cwd=work, env=env).returncode
    elapsed = time.monotonic() - started
    result = {"mutmut": MUTMUT, "seconds": round(elapsed), "exit": rc, "groups": tally(work, groups)}
    (WORK / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    print(
        f"{'group':<10} {'total':>6} {'killed':>7} {'survived':>9} {'timeout':>8} {'not run':>8} {'other':>6} {'score':>6}"
    )
    for group, r in result["groups"].items():  # type: ignore[attr-defined]
        print(
            f"{group:<10} {r['total']:>6} {r['killed']:>7} {r['survived']:>9} {r['timeout']:>8} {r['not run']:>8} {r['other']:>6} "
            f"{r['score']:>5}%"
        )
    print(f"run time: {elapsed:.0f} s (mutmut exit {rc})")
    for group, r in result["groups"].items():  # type: ignore[attr-defined]
        for name in r["survivors"]:
            print(f"survived [{group}] {name}")
            if ns.show:
                subprocess.run([str(bin_dir / "mutmut"), "show", name], cwd=work, env=env)
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
