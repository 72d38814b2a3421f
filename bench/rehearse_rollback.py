#!/usr/bin/env python3
"""What rehearsing `database.rollback` adds to `plan --rehearse` (docs/rehearsal.md, "The rollback").

Usage (the project installed in the interpreter that runs it, e.g. the worktree's .venv)::

    .venv/bin/python bench/rehearse_rollback.py                 # 1,000 tables, 3 rounds
    .venv/bin/python bench/rehearse_rollback.py --tables 200 --rounds 1

One app database of `--tables` tables (100 rows each); the migration adds a column to every
table and the rollback drops them all again. `plan --rehearse -o json --no-data-checks` runs
with the rollback check and with `--no-rollback-check`, alternating, `--rounds` times: the
medians and the median of the per-round differences are reported. The rollback check runs
the rollback commands on the scratch database and takes one more catalog snapshot; the
comparison itself is in memory.

The PostgreSQL is $DBOS_MIGRATE_TEST_DATABASE_URL (its database is dropped at the end), else a
throwaway cluster (bench/run.py's). This is a benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from common import postgres_server  # noqa: E402
from rehearse_checks import database, log, plan  # noqa: E402

CLI = [sys.executable, "-m", "dbos_migrate"]
MIGRATE = "psql -X -q -v ON_ERROR_STOP=1 -1 -f up.sql"
ROLLBACK = "psql -X -q -v ON_ERROR_STOP=1 -1 -f down.sql"


def make_tables(url: str, tables: int) -> None:
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(tables):
            conn.execute(
                f"CREATE TABLE t{i:04d} (id serial PRIMARY KEY, a int, b text);"
                f"INSERT INTO t{i:04d} (a, b) SELECT g, 'r' || g FROM generate_series(1, 100) g".encode()
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", metavar="FILE", help="also write the results here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-rollback-") as tmp:
        workdir = Path(tmp)
        names = [f"t{i:04d}" for i in range(args.tables)]
        (workdir / "up.sql").write_text("\n".join(f"ALTER TABLE {n} ADD COLUMN c int;" for n in names))
        (workdir / "down.sql").write_text("\n".join(f"ALTER TABLE {n} DROP COLUMN c;" for n in names))
        app_db = f"bench_rollback_{uuid.uuid4().hex[:8]}"
        (workdir / "dbos-config.yaml").write_text(
            f"name: bench\ndatabase:\n  app_db_name: {app_db}\n  migrate:\n    - {json.dumps(MIGRATE)}\n"
            f"  rollback:\n    - {json.dumps(ROLLBACK)}\n"
        )
        with postgres_server(workdir) as server, database(server.url, app_db) as url:
            make_tables(url, args.tables)
            walls: dict[str, list[float]] = {"with": [], "without": []}
            doc: dict[str, Any] = {}
            for r in range(args.rounds):
                for mode in ("with", "without") if r % 2 == 0 else ("without", "with"):
                    wall, out = plan(
                        workdir,
                        server.url,
                        app_db,
                        "--no-data-checks",
                        *([] if mode == "with" else ["--no-rollback-check"]),
                    )
                    walls[mode].append(wall)
                    doc = out if mode == "with" else doc
                    log(f"bench: round {r + 1} {mode} rollback check: {wall:.2f}s")
    check = doc["rehearsal"]["rollback"]
    diffs = [w - wo for w, wo in zip(walls["with"], walls["without"], strict=True)]
    result = {
        "tables": args.tables,
        "rounds": args.rounds,
        "with_s": round(statistics.median(walls["with"]), 2),
        "without_s": round(statistics.median(walls["without"]), 2),
        "added_s": round(statistics.median(diffs), 2),
        "restores": check["restores"],
        "rollback_commands_s": round(sum(c["duration_s"] for c in check["commands"]), 2),
        "rollback_check_ms": check["elapsed_ms"],
        "origin": server.origin,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
