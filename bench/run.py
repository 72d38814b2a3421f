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
import contextlib
import datetime as dt
import hashlib
import itertools
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
DEFAULT_VENV_DIR = BENCH_DIR / ".venvs"
DEFAULT_PROFILE_DIR = BENCH_DIR / ".profile"
DBOS_REQUIREMENT = "dbos==3.4.0"
ENV_URL = "DBOS_MIGRATE_TEST_DATABASE_URL"
#: The superuser password of the throwaway cluster (it listens on 127.0.0.1 only, and is deleted after the run).
CLUSTER_PASSWORD = "bench-pw"
SLEEP_COMMAND = "sleep 1"
#: Environment variables that would change what the tools connect to or print; the benchmark
#: runs every command without them so results do not depend on the caller's shell.
_SCRUBBED_PREFIXES = ("DBOS", "PG", "PYTHON")
_SCRUBBED_NAMES = ("GITHUB_ACTIONS", "GITHUB_STEP_SUMMARY", "NO_COLOR", "VIRTUAL_ENV")


# ----------------------------------------------------------------------------------- helpers


def log(message: str) -> None:
    """Progress goes to stderr so that stdout carries only the results table."""
    print(message, file=sys.stderr, flush=True)


def run_checked(argv: Sequence[str], *, what: str, timeout: float = 900, **kwargs: Any) -> str:
    """Run a set-up step; on failure show its output and stop (a benchmark on a broken set-up
    would only print meaningless numbers)."""
    result = subprocess.run(
        list(argv),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
        **kwargs,
    )
    if result.returncode != 0:
        noise = "is ignored: it is neither a file nor a directory"  # pip.conf noise on some machines
        output = "\n".join(ln for ln in (result.stdout + result.stderr).splitlines() if noise not in ln)
        raise SystemExit(f"bench: {what} failed (exit {result.returncode}):\n{output[-4000:]}")
    return str(result.stdout)


def median_ms(values: Sequence[float]) -> float | None:
    return statistics.median(values) * 1000 if values else None


# ----------------------------------------------------------------------------------- venvs


@dataclass(frozen=True)
class Venv:
    path: Path

    @property
    def python(self) -> Path:
        return self.path / "bin" / "python"

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name

    def pip(self, *args: str, what: str) -> None:
        run_checked([str(self.python), "-m", "pip", "--disable-pip-version-check", *args], what=what)


def _source_digest() -> str:
    """What the installed project depends on: its package, its schemas and its metadata.
    A change means the non-editable install in the venv is stale."""
    digest = hashlib.sha256()
    files = [REPO_ROOT / "pyproject.toml", REPO_ROOT / "README.md"]
    for sub in ("dbos_migrate", "schemas"):
        files += [p for p in (REPO_ROOT / sub).rglob("*") if p.is_file() and "__pycache__" not in p.parts]
    for path in sorted(files):
        digest.update(str(path.relative_to(REPO_ROOT)).encode() + b"\0")
        with contextlib.suppress(OSError):
            digest.update(path.read_bytes())
        digest.update(b"\0")
    return digest.hexdigest()


def _stamp(venv: Venv) -> dict[str, str]:
    try:
        data = json.loads((venv.path / "bench-stamp.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _write_stamp(venv: Venv, stamp: Mapping[str, str]) -> None:
    (venv.path / "bench-stamp.json").write_text(json.dumps(dict(stamp), indent=2) + "\n")


def _create_venv(path: Path) -> Venv:
    shutil.rmtree(path, ignore_errors=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    run_checked([sys.executable, "-m", "venv", str(path)], what=f"creating the venv {path}")
    return Venv(path)


def ensure_project_venv(root: Path, fresh: bool, name: str = "project", extra: Sequence[str] = ()) -> Venv:
    """The project installed non-editable (with `extra` requirements). Rebuilt on --fresh or
    another Python; the project alone is reinstalled when its sources changed (dependencies
    too when pyproject changed)."""
    venv = Venv(root / name)
    stamp = _stamp(venv)
    source = _source_digest()
    pyproject = hashlib.sha256((REPO_ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if fresh or not venv.python.exists() or stamp.get("python") != sys.version:
        log(f"bench: creating {venv.path} with this project installed (non-editable)")
        venv = _create_venv(venv.path)
        venv.pip("install", "-q", str(REPO_ROOT), *extra, what="pip install of the project")
    elif stamp.get("source") != source:
        log("bench: the project's sources changed: reinstalling it in the project venv")
        venv.pip(
            "install", "-q", "--force-reinstall", "--no-deps", str(REPO_ROOT), what="reinstalling the project"
        )
        if stamp.get("pyproject") != pyproject:
            venv.pip("install", "-q", str(REPO_ROOT), *extra, what="installing the project's dependencies")
    else:
        log(f"bench: reusing {venv.path} (project unchanged)")
    _write_stamp(venv, {"python": sys.version, "source": source, "pyproject": pyproject})
    return venv


def ensure_dbos_venv(root: Path, fresh: bool) -> Venv:
    """The real DBOS CLI, pinned, in a venv of its own (it must not share site-packages with
    the project: its dependencies, sqlalchemy among them, would change the project's imports)."""
    venv = Venv(root / "dbos")
    stamp = _stamp(venv)
    if (
        fresh
        or not venv.bin("dbos").exists()
        or stamp.get("python") != sys.version
        or (stamp.get("requirement") != DBOS_REQUIREMENT)
    ):
        log(f"bench: creating {venv.path} with {DBOS_REQUIREMENT} from PyPI")
        venv = _create_venv(venv.path)
        venv.pip("install", "-q", DBOS_REQUIREMENT, what=f"pip install {DBOS_REQUIREMENT}")
    else:
        log(f"bench: reusing {venv.path} ({DBOS_REQUIREMENT})")
    _write_stamp(venv, {"python": sys.version, "requirement": DBOS_REQUIREMENT})
    return venv


# ----------------------------------------------------------------------------------- PostgreSQL


def with_database(url: str, dbname: str) -> str:
    """The instance URL with `dbname` as its path; credentials and query parameters kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + dbname))


def masked(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    user_host = parts.netloc.rsplit("@", 1)
    user = user_host[0].split(":", 1)[0]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{user_host[1]}"))


@dataclass
class Server:
    """The PostgreSQL instance under test: `url` is a superuser URL without a database path,
    `origin` says where it came from. `cluster` and `base` are set for a throwaway cluster."""

    url: str
    origin: str
    cluster: Any = None
    base: Path | None = None


@contextlib.contextmanager
def postgres_server(workdir: Path) -> Iterator[Server]:
    """$DBOS_MIGRATE_TEST_DATABASE_URL if set, else a throwaway cluster removed afterwards.

    The cluster comes from the project's own `localpg.Cluster` (imported from the repository:
    it needs only the standard library) with the server's default settings, fsync included,
    so the no-op's history INSERT pays what it pays on a real server.
    """
    external = os.environ.get(ENV_URL)
    if external:
        yield Server(url=external, origin=f"${ENV_URL}")
        return
    sys.path.insert(0, str(REPO_ROOT))
    from dbos_migrate.localpg import Cluster, LocalPostgresError, free_port

    base = Path(tempfile.mkdtemp(prefix="dbos-migrate-bench-pg-", dir=workdir))
    base.chmod(0o755)  # the server may run as `postgres`, which must traverse to its data dir
    cluster = None
    try:
        for attempt in range(3):
            cluster = Cluster(base / "data", free_port(), password=CLUSTER_PASSWORD)
            try:
                cluster.init()
                cluster.start()
                break
            except LocalPostgresError as exc:
                cluster.remove()
                if "already in use" not in exc.message or attempt == 2:
                    raise SystemExit(f"bench: could not start a throwaway PostgreSQL: {exc.message}") from exc
        assert cluster is not None
        binaries = cluster.binaries
        yield Server(
            url=cluster.url(host="127.0.0.1"),
            origin=f"throwaway cluster ({binaries.source}, {binaries.bindir})",
            cluster=cluster,
            base=base,
        )
    finally:
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.remove()
        shutil.rmtree(base, ignore_errors=True)


_SQL_SNIPPET = """
import os, sys, psycopg
with psycopg.connect(os.environ["BENCH_URL"], autocommit=True) as conn:
    for statement in sys.argv[1:]:
        cur = conn.execute(statement)
        if cur.description is not None:
            print(cur.fetchone()[0])
"""


def sql(venv: Venv, url: str, *statements: str) -> str:
    """Run statements with psycopg from the project venv (this script's own interpreter may not
    have psycopg, and must not get it installed)."""
    env = dict(clean_env(), BENCH_URL=url)
    return run_checked([str(venv.python), "-c", _SQL_SNIPPET, *statements], what="an SQL helper", env=env)


def drop_databases(venv: Venv, url: str, names: Sequence[str]) -> None:
    """Drop the benchmark's databases from an instance we do not own. Best effort."""
    for name in names:
        try:
            sql(venv, url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        except SystemExit as exc:
            log(f"bench: could not drop {name}: {exc}")


# ----------------------------------------------------------------------------------- machine


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _memory() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    return "unknown"


def _loadavg() -> str:
    """1, 5 and 15 minute load averages: on a shared machine, the first thing to check when
    two runs disagree."""
    return ", ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def machine_info(project: Venv, dbos: Venv, server: Server) -> dict[str, str]:
    """What a reader needs to compare these numbers with theirs."""
    version_code = "import importlib.metadata as m, sys; print(m.version(sys.argv[1]))"
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {
        "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpu": _cpu_model(),
        "cores": f"{os.cpu_count()} ({usable} usable)",
        "memory": _memory(),
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version() + f" ({sys.executable})",
        "postgresql": sql(project, with_database(server.url, "postgres"), "SHOW server_version").strip(),
        "postgresql_origin": server.origin,
        "dbos_migrate": run_checked(
            [str(project.bin("dbos-migrate")), "--version"], what="dbos-migrate --version"
        ).strip(),
        "dbos": "dbos "
        + run_checked([str(dbos.python), "-c", version_code, "dbos"], what="dbos version").strip(),
        "psycopg": "psycopg "
        + run_checked([str(project.python), "-c", version_code, "psycopg"], what="psycopg version").strip(),
        "typer": "typer "
        + run_checked([str(project.python), "-c", version_code, "typer"], what="typer version").strip(),
        "loadavg_at_start": _loadavg(),
    }


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
                log(
                    f"bench: warm-up of '{case.label}' failed (exit {sample.returncode}):\n{sample.output[-2000:]}"
                )
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
                (name, round(cum / 1000, 1))
                for name, _, cum, depth in sorted(table, key=lambda r: -r[2])
                if depth == 0
            ][:12],
            "by_self_ms": [
                (name, round(s / 1000, 1)) for name, s, _, _ in sorted(table, key=lambda r: -r[1])
            ][:15],
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
    if subprocess.run(
        [str(project.python), "-c", "import pyinstrument"], capture_output=True, check=False
    ).returncode:
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
    result = subprocess.run(
        argv, cwd=case.cwd, env=dict(case.env), capture_output=True, text=True, check=False
    )
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
        _ratio_target("up / dbos migrate 3.4.0", results, "up", "dbos", 0.40),
        _ratio_target("up / floor (psycopg connect)", results, "up", "floor", 1.60),
        _ratio_target("up with typer<0.29 / floor (psycopg connect)", results, "up_typer028", "floor", 1.60),
        _ratio_target("up with typer<0.29 / dbos migrate 3.4.0", results, "up_typer028", "dbos", 0.40),
        _ratio_target("validate / import yaml, jsonschema", results, "validate", "imports", 1.50),
        _ratio_target(
            "validate with typer<0.29 / import yaml, jsonschema", results, "validate_typer028", "imports", 1.50
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
        lines.append(
            f"| {result.case.label} | {' | '.join(cells)} | {rss} | {data['failures']}/{data['rounds']} |"
        )
    if rss_check is not None:
        lines += ["", f"Cross-check: `/usr/bin/time -f %M` on one warm `up`: {rss_check / 1024:.1f} MB."]
    lines += ["", f"## Lock hand-over: {n} `up` runs queued on one app (`{SLEEP_COMMAND}` each)", ""]
    lines.append(
        "| trial | hand-over gaps, ms (command end to the next command's start) | median ms | succeeded |"
    )
    lines.append("|---:|---|---:|---:|")
    for i, trial in enumerate(trials, 1):
        gaps = ", ".join(f"{g * 1000:.1f}" for g in trial.gap_list) or "n/a"
        med = f"{statistics.median(trial.gap_list) * 1000:.1f}" if trial.gap_list else "n/a"
        lines.append(f"| {i} | {gaps} | {med} | {trial.succeeded}/{trial.runs} |")
    lines += ["", "Each waiter was already waiting (the command outlasts every run's start-up); DBOS's own lock polls"
              " every second."]  # fmt: skip
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
        lines.append(
            f"### {key}: {data['total_import_ms']} ms of imports; heavy: {', '.join(data['heavy_loaded'])}"
        )
        top = ", ".join(f"{name} {ms}" for name, ms in data["top_level_by_cumulative_ms"])
        lines.append(f"- top-level imports, cumulative ms: {top}")
        own = ", ".join(f"{name} {ms}" for name, ms in data["by_self_ms"][:10])
        lines.append(f"- largest self times, ms: {own}")
    return "\n".join(lines)


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


def clean_env() -> dict[str, str]:
    """The caller's environment without anything that would redirect the tools (PG*, DBOS*),
    change their output (NO_COLOR, GITHUB_ACTIONS) or their interpreter (PYTHON*)."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED_NAMES
    }


def make_cases(
    project: Venv, typer028: Venv, dbos: Venv, noop_dir: Path, env: Mapping[str, str], app_url: str
) -> list[Case]:
    dm = str(project.bin("dbos-migrate"))
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
    parser.add_argument(
        "--concurrency-trials", type=int, default=3, help="repetitions of the lock hand-over trial"
    )
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
