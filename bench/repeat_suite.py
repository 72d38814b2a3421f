#!/usr/bin/env python3
"""Run the whole test suite again and again on one commit and log each run (docs/architecture.md, "Tests, by layer").

Usage::

    python3 bench/repeat_suite.py --runs 20 --log suite-runs.jsonl [--rev HEAD]

Why: a test that fails one run in twenty turns CI red now and then, and no single run shows
it. The script clones REV into a temporary directory, makes one venv there with the test
extra (as the README's test command does), then runs `pytest -q` with `CI=true` (a missing
prerequisite fails instead of skipping) RUNS times in a row. Each run appends one JSON line
to LOG: the commit, start time, seconds, the load average before and after, pytest's exit
code, its summary line, and the failing test ids. It stops early on nothing: a failure is a
finding, and the next run shows whether it repeats. The load on the machine is whatever else
runs at the time; the log records it. A failing run's whole output is kept beside LOG
(`LOG.runN.txt`), since a failure that does not repeat can only be read there. Nothing else
is left behind.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--log", type=Path, required=True)
    parser.add_argument("--rev", default="HEAD")
    args = parser.parse_args()
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", args.rev], check=True, capture_output=True, text=True
    ).stdout.strip()
    work = Path(tempfile.mkdtemp(prefix="repeat-suite-"))
    os.chmod(work, 0o755)  # the local-server tests run PostgreSQL as another OS user
    try:
        tree = work / "tree"
        subprocess.run(["git", "clone", "-q", str(REPO), str(tree)], check=True)
        subprocess.run(["git", "-C", str(tree), "checkout", "-q", rev], check=True)
        subprocess.run([sys.executable, "-m", "venv", ".venv"], cwd=tree, check=True)
        subprocess.run([".venv/bin/pip", "install", "-q", ".[test]"], cwd=tree, check=True)
        # As .ci/run: the machine's PostgreSQL unless the caller names another. Without it the
        # harness falls back to a throwaway cluster, whose binaries may lack what some tests
        # need (uuid-ossp, a matching pg_dump), which CI=true rightly turns into failures.
        env = dict(os.environ, CI="true")
        env.setdefault("DBOS_MIGRATE_TEST_DATABASE_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
        for n in range(1, args.runs + 1):
            load_before = os.getloadavg()
            start = time.time()
            proc = subprocess.run(
                [".venv/bin/pytest", "-q", "-p", "no:cacheprovider"], cwd=tree, env=env, capture_output=True, text=True
            )
            lines = proc.stdout.strip().splitlines()
            record = {
                "run": n,
                "commit": rev[:12],
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(start)),
                "seconds": round(time.time() - start, 1),
                "load_before": load_before,
                "load_after": os.getloadavg(),
                "exit_code": proc.returncode,
                "summary": lines[-1] if lines else "",
                "failed": re.findall(r"^(?:FAILED|ERROR) (\S+)", proc.stdout, re.M),
            }
            if proc.returncode != 0:
                args.log.with_name(f"{args.log.name}.run{n}.txt").write_text(proc.stdout + proc.stderr)
            with args.log.open("a") as log:
                log.write(json.dumps(record) + "\n")
            print(f"run {n}/{args.runs}: exit {proc.returncode}, {record['summary']}", flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
