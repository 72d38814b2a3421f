#!/usr/bin/env python3
"""What the rehearsal's data and workflow checks cost, and proof that they never block a writer.

Usage (the project installed in the interpreter that runs it, e.g. the worktree's .venv)::

    .venv/bin/python bench/rehearse_checks.py                  # both scenarios, 3 rounds
    .venv/bin/python bench/rehearse_checks.py --rows 5000000 --tables 1000 --rounds 3 --calibrate

Two app databases, each rehearsed with `plan --rehearse -o json` with the checks and with
`--no-data-checks`, alternating, `--rounds` times (medians reported):

* `wide`: 1,000 tables of 100 rows; the migration makes a column of every table NOT NULL
  (1,000 BRK006 changes: 1,000 NULL checks and 1,000 size checks).
* `big`: one table of 5 million rows (~400 MB); the migration sets a column NOT NULL, adds a
  CHECK, a unique index and a plain index: NULL, CHECK and duplicate checks on a sample,
  and the size estimates.

The target (docs/rehearsal.md): the checks add at most 25% or 5 s, whichever is larger.
`added_s` is the median of the per-round differences (each round runs both back to back);
`checks_elapsed_ms` is the checks' own time as the run measured it.

During every `big` run (with and without checks alike), a writer updates and inserts rows of the big table with
`lock_timeout = 100ms`, and a watcher asks `pg_blocking_pids()` of the writer's session all
along: a writer that waited on our locks would show there (or fail with a lock timeout).

`--calibrate` also times a real rewrite, scan and index build on a copy of the big table:
the throughput behind the rough lock-duration estimates (datachecks.RATES).

The PostgreSQL is $DBOS_MIGRATE_TEST_DATABASE_URL (its databases are dropped at the end),
else a throwaway cluster (bench/run.py's). This is a benchmark: it asserts nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from common import postgres_server, with_database  # noqa: E402

CLI = [sys.executable, "-m", "dbos_migrate"]
MIGRATE = "psql -X -q -v ON_ERROR_STOP=1 -1 -f step.sql"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def execute(url: str, *statements: str) -> None:
    with psycopg.connect(url, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())


@contextlib.contextmanager
def database(server_url: str, name: str) -> Iterator[str]:
    execute(server_url, f'CREATE DATABASE "{name}"')
    try:
        yield with_database(server_url, name)
    finally:
        execute(server_url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def make_wide(url: str, tables: int) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        for i in range(tables):
            conn.execute(
                f"CREATE TABLE t{i:04d} (id serial PRIMARY KEY, a int, b text);"
                f"INSERT INTO t{i:04d} (a, b) SELECT g, 'r' || g FROM generate_series(1, 100) g".encode()
            )
        conn.execute("ANALYZE")
    return "\n".join(f"ALTER TABLE t{i:04d} ALTER COLUMN a SET NOT NULL;" for i in range(tables))


def make_big(url: str, rows: int) -> str:
    execute(
        url,
        "CREATE TABLE big (id bigserial PRIMARY KEY, a int, b int, c text, pad text)",
        f"INSERT INTO big (a, b, c, pad) SELECT g, g % 1000, 'k' || g, repeat('x', 20) FROM generate_series(1, {rows}) g",
        "VACUUM ANALYZE big",
    )
    return (
        "ALTER TABLE big ALTER COLUMN a SET NOT NULL;\n"
        "ALTER TABLE big ADD CONSTRAINT big_b_check CHECK (b >= 0);\n"
        "CREATE UNIQUE INDEX big_c_key ON big (c);\n"
        "CREATE INDEX big_b ON big (b);\n"
    )


def plan(workdir: Path, server_url: str, app_db: str, *extra: str) -> tuple[float, dict[str, Any]]:
    """One `plan --rehearse -o json` with `extra` options: (wall seconds, the JSON document)."""
    args = [
        *CLI,
        "plan",
        "--rehearse",
        "-D",
        server_url,
        "--app-db-name",
        app_db,
        "-o",
        "json",
        "-c",
        str(workdir / "dbos-config.yaml"),
        *extra,
    ]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DBOS", "GITHUB"))}
    start = time.monotonic()
    done = subprocess.run(
        args, cwd=workdir, env=env, capture_output=True, text=True, timeout=3600, stdin=subprocess.DEVNULL
    )
    wall = time.monotonic() - start
    if done.returncode != 0:
        raise SystemExit(f"bench: plan failed ({done.returncode}): {done.stderr[-3000:]}")
    return wall, json.loads(done.stdout)


class Writer:
    """Updates and inserts rows of `big` until stopped; a watcher records pg_blocking_pids()."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.stop = threading.Event()
        self.latencies: list[float] = []
        self.errors: list[str] = []
        self.blocked: list[list[int]] = []
        self.pid: int | None = None
        self.threads = [threading.Thread(target=self._write), threading.Thread(target=self._watch)]

    def __enter__(self) -> Writer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=60)

    def _write(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '100ms'")
            self.pid = conn.info.backend_pid
            k = 0
            while not self.stop.is_set():
                k += 1
                begin = time.monotonic()
                try:
                    conn.execute("UPDATE big SET pad = pad WHERE id = %s", (k * 7919 % 1000 + 1,))
                    conn.execute("INSERT INTO big (a, b, c, pad) VALUES (1, 1, %s, 'w')", (f"w{uuid.uuid4().hex}",))
                except psycopg.Error as exc:
                    self.errors.append(str(exc).splitlines()[0])
                self.latencies.append(time.monotonic() - begin)

    def _watch(self) -> None:
        with psycopg.connect(self.url, autocommit=True) as conn:
            while not self.stop.is_set():
                if self.pid is not None:
                    row = conn.execute("SELECT pg_blocking_pids(%s)", (self.pid,)).fetchone()
                    if row and row[0]:
                        self.blocked.append(list(row[0]))
                time.sleep(0.005)

    def result(self) -> dict[str, Any]:
        lat = sorted(self.latencies)
        return {
            "statements": 2 * len(lat),
            "errors": len(self.errors),
            "first_error": self.errors[0] if self.errors else None,
            "blocked_samples": len(self.blocked),
            "p99_ms": round(lat[int(len(lat) * 0.99)] * 1000, 2) if lat else None,
            "max_ms": round(lat[-1] * 1000, 2) if lat else None,
        }


def scenario(name: str, server_url: str, step: str, app_db: str, rounds: int, writer: bool) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix=f"bench-{name}-") as tmp:  # nothing left behind
        return _scenario(Path(tmp), name, server_url, step, app_db, rounds, writer)


def _scenario(
    workdir: Path, name: str, server_url: str, step: str, app_db: str, rounds: int, writer: bool
) -> dict[str, Any]:
    (workdir / "step.sql").write_text(step)
    (workdir / "dbos-config.yaml").write_text(
        f"name: bench\ndatabase:\n  app_db_name: {app_db}\n  migrate:\n    - {json.dumps(MIGRATE)}\n"
    )
    walls: dict[str, list[float]] = {"with": [], "without": []}
    writes: list[dict[str, Any]] = []
    doc: dict[str, Any] = {}
    for r in range(rounds):
        for mode in ("with", "without") if r % 2 == 0 else ("without", "with"):
            if writer:  # in both modes, so that both share the cores with it alike
                with Writer(with_database(server_url, app_db)) as w:
                    wall, out = plan(workdir, server_url, app_db, *([] if mode == "with" else ["--no-data-checks"]))
                writes.append({"checks": mode == "with", **w.result()})
            else:
                wall, out = plan(workdir, server_url, app_db, *([] if mode == "with" else ["--no-data-checks"]))
            doc = out if mode == "with" else doc
            walls[mode].append(wall)
            log(f"bench: {name} round {r + 1} {mode} checks: {wall:.2f}s")
    with_s, without_s = statistics.median(walls["with"]), statistics.median(walls["without"])
    data = doc.get("rehearsal", {}).get("data_checks") or {}
    # Each round's two runs are back to back: their difference is steadier than the difference of
    # the medians when other work on the machine slows some rounds down.
    added = statistics.median(w - wo for w, wo in zip(walls["with"], walls["without"], strict=True))
    limit = max(0.25 * without_s, 5.0)
    return {
        "scenario": name,
        "rounds": rounds,
        "with_checks_s": round(with_s, 2),
        "without_checks_s": round(without_s, 2),
        "added_s": round(added, 2),
        "added_pct": round(100 * added / without_s, 1),
        "limit_s": round(limit, 2),
        "walls_with_s": [round(w, 2) for w in walls["with"]],
        "walls_without_s": [round(w, 2) for w in walls["without"]],
        "verdict": "PASS" if added <= limit else "MISS",
        "changes": len(doc.get("changes", [])),
        "checks": data.get("checks"),
        "checks_elapsed_ms": data.get("elapsed_ms"),
        "summary": data.get("summary"),
        "writer": writes,
    }


def calibrate(url: str) -> dict[str, float]:
    """Throughput of a real rewrite, scan and index build on a copy of big (MB/s of the sizes
    datachecks uses: total size for a rewrite, heap size for the others)."""
    out: dict[str, float] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE big_copy AS SELECT * FROM big")
        conn.execute("VACUUM ANALYZE big_copy")
        heap = conn.execute("SELECT pg_relation_size('big_copy')").fetchone()[0]  # type: ignore[index]
        for name, statement, size in (
            ("scan", "ALTER TABLE big_copy ADD CONSTRAINT bc CHECK (b >= 0)", heap),
            ("index build", "CREATE INDEX big_copy_b ON big_copy (b)", heap),
            ("rewrite", "ALTER TABLE big_copy ALTER COLUMN b TYPE bigint", None),
        ):
            total = conn.execute("SELECT pg_total_relation_size('big_copy')").fetchone()[0]  # type: ignore[index]
            start = time.monotonic()
            conn.execute(statement)
            seconds = time.monotonic() - start
            out[name] = round((size or total) / seconds / 1024**2, 1)
            log(f"bench: calibrate {name}: {seconds:.2f}s over {(size or total) / 1024**2:.0f} MB")
        conn.execute("DROP TABLE big_copy")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=5_000_000)
    parser.add_argument("--tables", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calibrate", action="store_true")
    parser.add_argument("--only", choices=("wide", "big"))
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    results: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-rehearse-") as tmp, postgres_server(Path(tmp)) as server:
        tag = uuid.uuid4().hex[:6]
        if args.only in (None, "wide"):
            with database(server.url, f"bench_wide_{tag}") as url:
                log(f"bench: building {args.tables} tables")
                step = make_wide(url, args.tables)
                results["wide"] = scenario("wide", server.url, step, f"bench_wide_{tag}", args.rounds, False)
        if args.only in (None, "big"):
            with database(server.url, f"bench_big_{tag}") as url:
                log(f"bench: loading {args.rows:,} rows")
                step = make_big(url, args.rows)
                results["big"] = scenario("big", server.url, step, f"bench_big_{tag}", args.rounds, True)
                if args.calibrate:
                    results["calibration_mb_per_s"] = calibrate(url)
    text = json.dumps(results, indent=2)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
