"""The benchmark's plumbing: logging, its venvs, its PostgreSQL and the machine it ran on
(see run.py for why each is built the way it is)."""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
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


def clean_env() -> dict[str, str]:
    """The caller's environment without anything that would redirect the tools (PG*, DBOS*),
    change their output (NO_COLOR, GITHUB_ACTIONS) or their interpreter (PYTHON*)."""
    return {k: v for k, v in os.environ.items() if not k.startswith(_SCRUBBED_PREFIXES) and k not in _SCRUBBED_NAMES}


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
        venv.pip("install", "-q", "--force-reinstall", "--no-deps", str(REPO_ROOT), what="reinstalling the project")
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


def start_cluster(datadir: Path, password: str, who: str, extra_conf: dict[str, object] | None = None) -> Any:
    """A started throwaway cluster (`dbos_migrate.localpg.Cluster`) on a free port, tried again
    when another server takes the port first; SystemExit naming `who` when it cannot start."""
    sys.path.insert(0, str(REPO_ROOT))
    from dbos_migrate.localpg import Cluster, LocalPostgresError, free_port

    for attempt in range(3):
        cluster = Cluster(datadir, free_port(), password=password, extra_conf=extra_conf)
        try:
            cluster.init()
            cluster.start()
            return cluster
        except LocalPostgresError as exc:
            cluster.remove()
            if "already in use" not in exc.message or attempt == 2:
                raise SystemExit(f"{who}: could not start a throwaway PostgreSQL: {exc.message}") from exc
    raise AssertionError("unreachable")


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
    base = Path(tempfile.mkdtemp(prefix="dbos-migrate-bench-pg-", dir=workdir))
    base.chmod(0o755)  # the server may run as `postgres`, which must traverse to its data dir
    cluster = None
    try:
        cluster = start_cluster(base / "data", CLUSTER_PASSWORD, "bench")
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
        "dbos": "dbos " + run_checked([str(dbos.python), "-c", version_code, "dbos"], what="dbos version").strip(),
        "psycopg": "psycopg "
        + run_checked([str(project.python), "-c", version_code, "psycopg"], what="psycopg version").strip(),
        "typer": "typer "
        + run_checked([str(project.python), "-c", version_code, "typer"], what="typer version").strip(),
        "loadavg_at_start": _loadavg(),
    }
