"""Helpers of the test suite: find a PostgreSQL instance, make throwaway clusters, run the CLI.

Importable from tests (`from pgharness import run_cli`); conftest.py turns them into fixtures.
Clusters come from `dbos_migrate.localpg.Cluster`, so the tests exercise the same code that
backs `dbos-migrate postgres start`. When we are root, the server runs as the `postgres` (or
`nobody`) user, and every directory it needs is made under a temp dir that user can traverse:
pytest's own `tmp_path` lives below /tmp/pytest-of-root, which is mode 0700.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from dbos_migrate.localpg import Cluster, LocalPostgresError, PgBinaries, free_port
from dbos_migrate.settings.conninfo import compose, masked_text

REPO_ROOT = Path(__file__).resolve().parent.parent

#: The superuser password of the clusters we start: every character that breaks naive URL
#: building (`@:/%#?&=`), percent-encoded in the URLs we hand out, so scram auth and URL parsing
#: are both exercised.
PASSWORD = "p@ss:w/o%r#d?&=x"

#: Settings that make throwaway clusters fast without changing what a *process* crash does
#: (fsync only matters when the OS crashes; synchronous_commit stays on so kill() loses nothing).
FAST_CONF: Mapping[str, object] = {"fsync": False}

ENV_URL = "DBOS_MIGRATE_TEST_DATABASE_URL"

#: The type of the `own_cluster` fixture: call it with Cluster's keyword arguments.
ClusterFactory = Callable[..., Cluster]


def in_ci() -> bool:
    """CI sets CI=true; there a missing PostgreSQL is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() == "true"


def skip_or_fail(reason: str) -> NoReturn:
    """Skip for a missing prerequisite; under CI=true, where every prerequisite must be
    there, fail instead (a skip would pass unseen)."""
    import pytest

    if in_ci():
        pytest.fail(f"{reason} (a missing prerequisite is a failure under CI=true)", pytrace=False)
    pytest.skip(reason)


def with_dbname(url: str, dbname: str) -> str:
    """The instance URL pointed at another database (the dbname is percent-encoded)."""
    from dbos_migrate.settings.conninfo import parse_url

    return parse_url(url).with_database(dbname).text


def with_user(url: str, user: str, password: str | None = None) -> str:
    """The instance URL with other credentials."""
    from urllib.parse import quote

    from dbos_migrate.settings.conninfo import split

    sp = split(url)
    start, end = (sp.userinfo[0], sp.userinfo[1] + 1) if sp.userinfo else (sp.scheme_end, sp.scheme_end)
    auth = quote(user, safe="") + (":" + quote(password, safe="") if password is not None else "") + "@"
    return url[:start] + auth + url[end:]


def reachable_tmpdir(prefix: str = "dbos-migrate-test-") -> Path:
    """A fresh temp dir the server's unprivileged user can traverse (mode 0755; its parent,
    the system temp dir, normally is). The caller removes it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


def start_cluster(base: Path, name: str = "data", *, attempts: int = 3, **kwargs: Any) -> Cluster:
    """Init and start a throwaway cluster in `base/name` on a free port (password PASSWORD,
    FAST_CONF unless `extra_conf` is given). Retries with another port if the free port was
    taken meanwhile. The caller must `remove()` it."""
    kwargs.setdefault("password", PASSWORD)
    kwargs.setdefault("extra_conf", dict(FAST_CONF))
    last: LocalPostgresError | None = None
    cluster: Cluster | None = None
    for _ in range(attempts):
        cluster = Cluster(base / name, free_port(), **kwargs)
        try:
            cluster.init()
            cluster.start()
            return cluster
        except LocalPostgresError as exc:
            last = exc
            if "already in use" not in exc.message:
                cluster.remove()
                raise
    assert cluster is not None and last is not None
    cluster.remove()
    raise last


def cluster_processes(cluster: Cluster) -> dict[int, str]:
    """pid -> command line of the cluster's own processes: the postmaster, its parent (the
    keeper) and its children. Only those pids are looked at (Linux /proc; elsewhere just the
    postmaster, with an empty command line): never the whole machine's process list."""
    pid = cluster.pid()
    if pid is None:
        return {}
    pids = {pid}
    proc = Path(f"/proc/{pid}")
    if proc.is_dir():
        stat = (proc / "stat").read_text()
        pids.add(int(stat.rsplit(")", 1)[1].split()[1]))  # the parent: the keeper
        for children in proc.glob("task/*/children"):
            pids.update(int(child) for child in children.read_text().split())
    found = {}
    for each in pids:
        try:
            found[each] = Path(f"/proc/{each}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            found[each] = ""
    return found


def make_self_signed_cert(directory: Path, cn: str = "localhost") -> tuple[Path, Path]:
    """A self-signed (certfile, keyfile) pair for SSL clusters, made with the openssl CLI.
    Raises FileNotFoundError when openssl is missing (callers skip)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        raise FileNotFoundError("openssl")
    cert, key = directory / "server.crt", directory / "server.key"
    subprocess.run(
        [
            openssl,
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "2",
            "-subj",
            f"/CN={cn}",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def ssl_cert_or_skip(directory: Path, cn: str = "localhost") -> tuple[Path, Path]:
    """A self-signed (certfile, keyfile) pair for an SSL cluster; skips the test when there are no
    SSL-capable PostgreSQL binaries or no openssl (fails under CI=true)."""
    from dbos_migrate.localpg import find_binaries

    try:
        find_binaries(require_ssl=True)
        return make_self_signed_cert(directory, cn)
    except (LocalPostgresError, FileNotFoundError) as exc:
        skip_or_fail(f"no SSL-capable PostgreSQL or openssl: {exc}")


def docker_engine_available(timeout: float = 3.0) -> bool:
    """Whether a Docker engine answers a ping within `timeout` s (docker SDK imported lazily)."""
    try:
        import docker  # type: ignore[import-untyped,unused-ignore]

        client = docker.from_env(timeout=int(max(1, timeout)))
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:
        return False


@dataclasses.dataclass
class PgInstance:
    """A PostgreSQL instance for the test session: `url` is a superuser instance URL (no
    database: libpq then connects to the user's own, `postgres`); `close()` releases it."""

    url: str
    source: str  # "env", "testcontainers" or "cluster"
    close: Callable[[], None] = lambda: None
    cluster: Cluster | None = None

    def __repr__(self) -> str:
        return f"PgInstance(url={masked_text(self.url)!r}, source={self.source!r})"


def check_connect(url: str, timeout: int = 10) -> None:
    """Connect and `select 1`, raising psycopg's error if that fails."""
    import psycopg

    with psycopg.connect(url, connect_timeout=timeout, autocommit=True) as conn:
        conn.execute("select 1")


def find_instance() -> tuple[PgInstance | None, list[str]]:
    """The instance for `pg_url`, in this order: $DBOS_MIGRATE_TEST_DATABASE_URL; a
    testcontainers PostgresContainer if a Docker engine answers; a throwaway cluster from local
    binaries. Returns (None, reasons) when none is available."""
    reasons: list[str] = []
    env_url = os.environ.get(ENV_URL)
    if env_url:
        return PgInstance(env_url, "env"), reasons
    reasons.append(f"${ENV_URL} is not set")

    if docker_engine_available():
        try:
            from testcontainers.community.postgres import PostgresContainer
        except ImportError:  # testcontainers < 4.14
            from testcontainers.postgres import PostgresContainer

        container = PostgresContainer(
            "postgres:16", username="postgres", password=PASSWORD, dbname="postgres", driver=None
        )
        container.start()
        url = compose("postgres", PASSWORD, container.get_container_host_ip(), int(container.get_exposed_port(5432)))
        return PgInstance(url, "testcontainers", close=container.stop), reasons
    reasons.append("no Docker engine answers")

    base = reachable_tmpdir("dbos-migrate-pg-url-")
    try:
        cluster = start_cluster(base)
    except LocalPostgresError as exc:
        shutil.rmtree(base, ignore_errors=True)
        reasons.append(f"no local cluster: {exc.message}" + (f" (hint: {exc.hint})" if exc.hint else ""))
        return None, reasons

    def close() -> None:
        try:
            cluster.remove()
        finally:
            shutil.rmtree(base, ignore_errors=True)

    return PgInstance(cluster.url(), "cluster", close=close, cluster=cluster), reasons


def drop_database(instance_url: str, name: str) -> None:
    """DROP DATABASE IF EXISTS, disconnecting its sessions first (WITH (FORCE) on 13+)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(instance_url, connect_timeout=10, autocommit=True) as conn:
        if conn.info.server_version >= 130000:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        else:
            conn.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))


def cli_command() -> list[str]:
    """How to run the installed CLI: the console script next to this interpreter, else
    `python -m dbos_migrate`."""
    script = Path(sys.executable).parent / "dbos-migrate"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "dbos_migrate"]


def cli_env(extra: Mapping[str, str | None] | None = None) -> dict[str, str]:
    """Our environment with `extra` laid over it (None removes a variable), the repo on PYTHONPATH."""
    env = dict(os.environ)
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    paths = [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]
    if str(REPO_ROOT) not in paths:
        env["PYTHONPATH"] = os.pathsep.join([*paths, str(REPO_ROOT)])
    return env


def run_cli(
    *args: object,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | str | None = None,
    input: str | None = None,
    timeout: float = 120.0,
) -> subprocess.CompletedProcess[str]:
    """Run `dbos-migrate ARGS...` as a subprocess; text stdout/stderr, never raises on exit code.

    `env` is laid over the current environment (a None value removes the variable). Without
    `input`, stdin is /dev/null so a prompt fails instead of hanging. The repo root is appended
    to PYTHONPATH so the `-m` fallback works from a source checkout.
    """
    full_env = cli_env(env)
    return subprocess.run(
        [*cli_command(), *(str(a) for a in args)],
        env=full_env,
        cwd=cwd,
        input=input,
        stdin=None if input is not None else subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def invoke(
    *args: object,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | str | None = None,
    answers: list[str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run `dbos-migrate ARGS...` in this process through `cli.main(argv, ctx)` with an in-memory
    Context (tests/inmemory.py), returning what `run_cli` returns: the exit status and the text
    of stdout and stderr (the commands' output included).

    The environment is laid over ours as `run_cli` does; click reads its options' variables
    from `os.environ`, so that is swapped for the call and restored, and so is the working
    directory. `answers` are what a person types at the prompts (None: no terminal).
    """
    from inmemory import InMemoryContext

    from dbos_migrate.cli import main

    overlay = cli_env(env)
    saved_env, saved_cwd = dict(os.environ), os.getcwd()
    ctx = InMemoryContext(overlay, answers=answers)
    try:
        os.environ.clear()
        os.environ.update(overlay)
        if cwd is not None:
            os.chdir(cwd)
        code = main([str(a) for a in args], ctx)
    finally:
        os.chdir(saved_cwd)
        os.environ.clear()
        os.environ.update(saved_env)
    out, err = ctx.captured()
    return subprocess.CompletedProcess([*cli_command(), *(str(a) for a in args)], code, out, err)


__all__: Sequence[str] = [
    "ENV_URL",
    "FAST_CONF",
    "PASSWORD",
    "Cluster",
    "ClusterFactory",
    "LocalPostgresError",
    "PgBinaries",
    "PgInstance",
    "VenvUnavailable",
    "check_connect",
    "cli_command",
    "cluster_processes",
    "docker_engine_available",
    "drop_database",
    "find_instance",
    "free_port",
    "in_ci",
    "invoke",
    "make_self_signed_cert",
    "make_venv",
    "reachable_tmpdir",
    "run_cli",
    "run_on_tty",
    "ssl_cert_or_skip",
    "start_cluster",
    "start_standby",
    "with_dbname",
    "with_user",
]


# ---------------------------------------------------------------------------- venvs of real packages


class VenvUnavailable(Exception):
    """The package index could not be reached (or pip failed) while building a venv."""


#: Bounds on building a test venv (and on npm installs): safety nets against a hang, not
#: budgets. On the loaded 2-core machine (load average ~15) `python -m venv` alone took 53 s
#: and `pip install dbos==1.14.0` 327 s; a full run under more load must not fail on them.
VENV_CREATE_TIMEOUT = 600.0
VENV_INSTALL_TIMEOUT = 1800.0

#: The bound on a real tool or app the compatibility tests run (`npx dbos migrate`, a DBOS app
#: launching and completing a workflow, `dbos-migrate up` running the app's DBOS toolchain): a
#: safety net against a hang, not a budget. Each imports a large dependency tree; under a full
#: run on the loaded 2-core machine one takes minutes, and a hang still fails within ten.
SUBPROCESS_TIMEOUT = 600.0


def make_venv(path: Path, packages: Sequence[str], *, timeout: float = VENV_INSTALL_TIMEOUT) -> Path:
    """A fresh venv at `path` with `packages` installed from the index; returns its bin dir.

    pip's cache lives inside `path` (nothing is written elsewhere). Raises VenvUnavailable
    with pip's last lines when the install fails, e.g. because the index cannot be reached.
    """
    subprocess.run(
        [sys.executable, "-m", "venv", str(path)], check=True, capture_output=True, timeout=VENV_CREATE_TIMEOUT
    )
    bindir = path / "bin"
    env = dict(os.environ, PIP_CACHE_DIR=str(path / ".pip-cache"), PIP_DISABLE_PIP_VERSION_CHECK="1")
    env.pop("PYTHONPATH", None)
    result = subprocess.run(
        [str(bindir / "python"), "-m", "pip", "install", "-q", *packages],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-5:])
        raise VenvUnavailable(f"pip install {' '.join(packages)} failed: {tail}")
    return bindir


def start_standby(primary: Cluster, base: Path) -> Cluster:
    """A hot standby of `primary` (pg_basebackup -R), started on a free port in `base/standby`.
    The primary must admit replication (extra_hba `host replication all 127.0.0.1/32 ...`).
    The caller must `remove()` it."""
    from dbos_migrate.localpg import fs

    entry = primary.service_user()
    holder = base / "standby-parent"
    holder.mkdir(mode=0o700)
    if entry is not None:
        os.chown(holder, entry.pw_uid, entry.pw_gid)
    datadir = holder / "data"
    env = dict(os.environ, PGPASSWORD=primary.password)
    result = subprocess.run(
        [
            str(primary.binaries.tool("pg_basebackup")),
            "-h",
            "127.0.0.1",
            "-p",
            str(primary.port),
            "-U",
            primary.superuser,
            "-D",
            str(datadir),
            "-R",
            "-X",
            "stream",
            "-w",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd="/",
        **fs.run_as_kwargs(entry),
    )
    if result.returncode != 0:
        raise LocalPostgresError(f"pg_basebackup failed: {result.stderr.strip()}")
    standby = Cluster(
        datadir,
        free_port(),
        password=primary.password,
        binaries=primary.binaries,
        confdir=base / "standby.conf",
        log_file=base / "standby.log",
        extra_conf={"hot_standby": True, **FAST_CONF},
    )
    standby.start()
    return standby


def run_on_tty(
    args: Sequence[object],
    *,
    prompt: bytes,
    answer: str,
    env: Mapping[str, str | None] | None = None,
    cwd: Path | None = None,
    timeout: float = 120.0,
) -> tuple[int, str]:
    """`dbos-migrate ARGS` on a pseudo-terminal that is its controlling terminal (so /dev/tty
    works, as for a person at a shell); types `answer` once `prompt` shows. Returns (code, all
    output). Waits on the prompt, not on time."""
    import pty
    import select
    import time

    master, slave = pty.openpty()
    slave_name = os.ttyname(slave)

    def become_terminal_owner() -> None:  # setsid, then opening the tty makes it controlling
        os.setsid()
        fd = os.open(slave_name, os.O_RDWR)
        os.close(fd)

    proc = subprocess.Popen(
        [*cli_command(), *map(str, args)],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=cli_env(env),
        cwd=cwd,
        preexec_fn=become_terminal_owner,
    )
    os.close(slave)
    seen = b""
    answered = False
    deadline = time.monotonic() + timeout
    while True:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                chunk = os.read(master, 4096)
            except OSError:  # EIO: the other side closed
                chunk = b""
            if not chunk:
                break
            seen += chunk
            if not answered and prompt in seen:
                os.write(master, answer.encode() + b"\n")
                answered = True
        elif proc.poll() is not None:
            break
        assert time.monotonic() < deadline, seen.decode(errors="replace")
    code = proc.wait(timeout=timeout)
    os.close(master)
    return code, seen.decode(errors="replace")
