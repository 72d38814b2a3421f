#!/usr/bin/env python3
"""Benchmark `dbos-migrate` against the real `dbos migrate` (dbos 3.4.0) and against the floor.

Usage::

    python bench/run.py                       # 11 rounds, throwaway PostgreSQL, reused venvs
    python bench/run.py --rounds 15 --json results.json
    python bench/run.py --fresh               # rebuild both venvs first
    python bench/run.py --profile             # also -X importtime, pyinstrument, py-spy

Why it is built the way it is:

* **Nothing is installed globally.** Two venvs live under `bench/.venvs/` (gitignored):
  `project`, with this repository installed *non-editable* (`pip install <repo root>`, so
  its modules are byte-compiled in site-packages exactly as a user gets them), and `dbos`,
  with the real `dbos==3.4.0` from PyPI. They are reused across runs; the project is
  reinstalled whenever its sources change (a hash of `dbos_migrate/`, `schemas/` and
  `pyproject.toml`), so a run never measures stale code. `--fresh` rebuilds both.
* **Its own PostgreSQL.** A throwaway cluster from the project's own
  `dbos_migrate.localpg.Cluster` (as root the server runs as `postgres`), removed at the end;
  or `$DBOS_MIGRATE_TEST_DATABASE_URL`, where the benchmark's databases are dropped at the end.
  URLs use 127.0.0.1, not `localhost`: the cluster listens on IPv4 only, and libpq would
  first try ::1 on every connection.
* **Side by side, round-robin.** Every command runs once per round, and each round starts
  at a different command, so drift on the machine (another process, CPU frequency, page
  cache) spreads over all commands instead of biasing one. Medians, not means: one
  scheduler hiccup should not move the result. Each sample is the wall time of one
  subprocess, from `Popen` to `wait4`.
* **Peak RSS from `wait4`.** `os.wait4` returns the rusage of exactly that child (and of the
  descendants it waited for, here the `/bin/sh -c true` it ran), so every sample carries its
  own `ru_maxrss`. `getrusage(RUSAGE_CHILDREN)` cannot be used in deltas: its `ru_maxrss` is a
  high-water mark over all children ever waited for, and the real `dbos migrate` (~70 MB)
  would mask everything after it. `/usr/bin/time -f %M`, when present, is a one-shot
  cross-check.
* **Two typer lines.** typer 0.29 builds a pydantic TypeAdapter for every CLI parameter, so
  every run imports pydantic (about 80 ms here). pyproject.toml does not cap typer (a cap
  would downgrade typer for everyone sharing an environment), so the project venv gets the
  newest typer; a second venv, `project-typer-lt-0.29`, holds the same project with
  `typer<0.29`, and both are measured side by side.
* **Lock hand-over.** A few `up --output json` runs start at once on one app whose command
  (`sleep 1`) outlasts every run's start-up, so each waiter is already waiting when the lock
  is released. From the commands' own started_at/finished_at, the gap from one command's end
  to the next one's start is the hand-over: the holder's history row and unlock, the NOTIFY,
  the waiter's wake-up and its first command's start. (It slightly over-counts: the holder's
  post-command work is inside the gap.) The median gap is compared with 100 ms; DBOS's own
  lock polls every second. Overlapping commands would mean the lock failed, and are reported.

This is a benchmark, not a test: it asserts nothing about time. Failed commands are
reported in the table (and make the exit code 1); a missed target does not.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from common import (
    DEFAULT_PROFILE_DIR,
    DEFAULT_VENV_DIR,
    SLEEP_COMMAND,
    Server,
    Venv,
    _loadavg,
    clean_env,
    drop_databases,
    ensure_dbos_venv,
    ensure_project_venv,
    log,
    machine_info,
    masked,
    postgres_server,
    with_database,
)
from measure import Case, peak_rss_cross_check, run_concurrent, run_once, run_rounds, warm_up
from profiling import profile
from targets import build_targets, render, render_profile

# ----------------------------------------------------------------------------------- main


def write_config(directory: Path, *, name: str, app_url: str, sys_url: str, command: str) -> None:
    """A dbos-config.yaml both tools accept. `system_database_url` is what dbos 3.x reads
    (it ignores `database_url`); without it `dbos migrate` would fall back to SQLite."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "dbos-config.yaml").write_text(
        f"name: {name}\n"
        f"database_url: {json.dumps(app_url)}\n"
        f"system_database_url: {json.dumps(sys_url)}\n"
        "database:\n"
        f"  migrate: [{json.dumps(command)}]\n"
    )


#: The typer floor: a typer program with one command of 25 options (strings, integers and
#: flags, as ours are) that imports psycopg and opens one connection. typer >= 0.29 imports
#: pydantic for every option, so that cost is part of the floor, not of dbos-migrate.
TYPER_FLOOR = """
import os
from typing import Annotated, Optional

import typer

app = typer.Typer(add_completion=False)


@app.callback()
def root() -> None:
    pass


@app.command()
def up(
{options}
) -> None:
    import psycopg

    psycopg.connect(os.environ["BENCH_URL"]).close()


app()
"""


def typer_floor_script(directory: Path) -> Path:
    kinds = ["Optional[str]", "Optional[int]", "bool"]
    options = []
    for i in range(25):
        kind = kinds[i % 3]
        default = "False" if kind == "bool" else "None"
        options.append(f'    o{i}: Annotated[{kind}, typer.Option("--o{i}", envvar="BENCH_O{i}")] = {default},')
    path = directory / "typer_floor.py"
    path.write_text(TYPER_FLOOR.format(options="\n".join(options)))
    return path


def make_cases(
    project: Venv, typer028: Venv, dbos: Venv, noop_dir: Path, env: Mapping[str, str], app_url: str
) -> list[Case]:
    dm = str(project.bin("dbos-migrate"))
    typer_floor = str(typer_floor_script(noop_dir.parent))
    py = str(project.python)
    floor_env = dict(env, BENCH_URL=app_url)
    floor = "import os, psycopg; psycopg.connect(os.environ['BENCH_URL']).close()"
    return [
        Case("up", "dbos-migrate up (no-op)", (dm, "up"), noop_dir, env),
        Case(
            "up_typer028",
            "dbos-migrate up (no-op), typer<0.29",
            (str(typer028.bin("dbos-migrate")), "up"),
            noop_dir,
            env,
        ),
        Case("dbos", "dbos migrate (dbos 3.4.0)", (str(dbos.bin("dbos")), "migrate"), noop_dir, env),
        Case(
            "floor",
            "floor: python -c 'import psycopg; connect().close()'",
            (py, "-c", floor),
            noop_dir,
            floor_env,
        ),
        Case(
            "typer_floor",
            "typer floor: one command, 25 options, psycopg connect",
            (py, typer_floor, "up"),
            noop_dir,
            floor_env,
        ),
        Case(
            "typer_floor028",
            "typer floor, typer<0.29",
            (str(typer028.python), typer_floor, "up"),
            noop_dir,
            floor_env,
        ),
        Case("validate", "dbos-migrate validate", (dm, "validate"), noop_dir, env),
        Case(
            "validate_typer028",
            "dbos-migrate validate, typer<0.29",
            (str(typer028.bin("dbos-migrate")), "validate"),
            noop_dir,
            env,
        ),
        Case(
            "imports",
            "python -c 'import yaml, jsonschema'",
            (py, "-c", "import yaml, jsonschema"),
            noop_dir,
            env,
        ),
        Case("version", "dbos-migrate --version", (dm, "--version"), noop_dir, env),
        Case("help", "dbos-migrate --help", (dm, "--help"), noop_dir, env),
        Case("pass", "python -c pass", (py, "-c", "pass"), noop_dir, env),
    ]


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=11, help="timed rounds (at least 9 for a valid run)")
    parser.add_argument("--concurrency", type=int, default=4, help="`up` runs queued on one app's lock")
    parser.add_argument("--concurrency-trials", type=int, default=3, help="repetitions of the lock hand-over trial")
    parser.add_argument("--fresh", action="store_true", help="rebuild the benchmark venvs")
    parser.add_argument("--venv-dir", type=Path, default=DEFAULT_VENV_DIR, help="where the venvs live")
    parser.add_argument("--json", type=Path, metavar="PATH", help="also write the results as JSON")
    parser.add_argument(
        "--profile",
        nargs="?",
        const=DEFAULT_PROFILE_DIR,
        type=Path,
        metavar="DIR",
        help="also profile (-X importtime, pyinstrument, py-spy); reports go to DIR [bench/.profile]",
    )
    args = parser.parse_args(argv)
    if args.rounds < 1 or args.concurrency < 1 or args.concurrency_trials < 1:
        parser.error("--rounds, --concurrency and --concurrency-trials must be at least 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rounds < 9:
        log(f"bench: note: {args.rounds} rounds is fewer than the 9 a valid measurement needs")
    project = ensure_project_venv(args.venv_dir, args.fresh)
    typer028 = ensure_project_venv(args.venv_dir, args.fresh, "project-typer-lt-0.29", ("typer<0.29",))
    dbos = ensure_dbos_venv(args.venv_dir, args.fresh)
    with tempfile.TemporaryDirectory(prefix="dbos-migrate-bench-") as tmp:
        work = Path(tmp)
        work.chmod(0o755)
        with postgres_server(work) as server:
            log(f"bench: PostgreSQL: {masked(server.url)} ({server.origin})")
            tag = uuid.uuid4().hex[:8]
            noop_db, conc_db = f"bench_{tag}", f"bench_{tag}_conc"
            dbs = [noop_db, f"{noop_db}_dbos_sys", conc_db, f"{conc_db}_dbos_sys"]
            try:
                return _measure(args, (project, typer028), dbos, server, work, noop_db, conc_db)
            finally:
                if server.cluster is None:
                    drop_databases(project, with_database(server.url, "postgres"), dbs)


def _measure(
    args: argparse.Namespace,
    projects: tuple[Venv, Venv],
    dbos: Venv,
    server: Server,
    work: Path,
    noop_db: str,
    conc_db: str,
) -> int:
    noop_dir, conc_dir = work / "noop-app", work / "concurrent-app"
    app_url = with_database(server.url, noop_db)
    write_config(
        noop_dir,
        name="bench-noop",
        app_url=app_url,
        sys_url=with_database(server.url, f"{noop_db}_dbos_sys"),
        command="true",
    )
    write_config(
        conc_dir,
        name="bench-concurrent",
        app_url=with_database(server.url, conc_db),
        sys_url=with_database(server.url, f"{conc_db}_dbos_sys"),
        command=SLEEP_COMMAND,
    )
    project, typer028 = projects
    env = clean_env()
    machine = machine_info(project, dbos, server)
    cases = make_cases(project, typer028, dbos, noop_dir, env, app_url)
    log("bench: warming up (creates the app and system databases)")
    warm_up(cases)
    results = run_rounds(cases, args.rounds)
    rss_check = peak_rss_cross_check(cases[0])

    conc_argv = (str(project.bin("dbos-migrate")), "up", "--output", "json")
    run_once(conc_argv, conc_dir, env)  # creates the databases: not part of the trial
    trials = []
    for i in range(args.concurrency_trials):
        log(f"bench: {args.concurrency} runs queued on one lock, trial {i + 1}/{args.concurrency_trials}")
        trials.append(run_concurrent(conc_argv, conc_dir, env, args.concurrency))

    machine["loadavg_at_end"] = _loadavg()
    targets = build_targets(results, trials)
    print(render(machine, results, targets, trials, args.rounds, args.concurrency, rss_check), flush=True)
    found: dict[str, Any] | None = None
    if args.profile is not None:
        log(f"bench: profiling; reports go to {args.profile}")
        found = profile(project, {c.key: c for c in cases}, args.profile)
        print(render_profile(found), flush=True)
    if args.json is not None:
        doc = {
            "machine": machine,
            "rounds": args.rounds,
            "cases": {key: r.as_json() for key, r in results.items()},
            "peak_rss_cross_check_kb": rss_check,
            "concurrency": {
                "runs": args.concurrency,
                "command": SLEEP_COMMAND,
                "trials": [
                    {
                        "wall_s": t.wall_s,
                        "command_sum_s": t.command_sum_s,
                        "ratio": t.ratio,
                        "succeeded": t.succeeded,
                        "errors": t.errors,
                        "lead_in_s": t.lead_in_s,
                        "gaps_s": t.gaps_s,
                        "gap_list_s": t.gap_list,
                        "max_gap_s": t.max_gap_s,
                        "tail_s": t.tail_s,
                        "overlap_s": t.overlap_s,
                    }
                    for t in trials
                ],
            },
            "targets": [
                {
                    "name": t.name,
                    "value": t.value,
                    "limit": t.limit,
                    "unit": t.unit,
                    "verdict": t.verdict,
                    "note": t.note,
                    "cpu_ratio": t.cpu_ratio,
                }
                for t in targets
            ],
            "profile": found,
        }
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=2) + "\n")
        log(f"bench: results written to {args.json}")
    broken = any(r.failures for r in results.values()) or any(t.errors for t in trials)
    return 1 if broken else 0


if __name__ == "__main__":
    sys.exit(main())
