"""The README's promises: `postgres start|stop|status` for real, and its two commands as written."""

from __future__ import annotations

import json
import os
import pwd
import re
import shutil
import socket
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
from pgharness import free_port, run_cli, skip_or_fail

REPO = Path(__file__).resolve().parent.parent
README = (REPO / "README.md").read_text()


def readme_commands() -> list[str]:
    """The shell blocks of the Quick start section: [run the main job, run the tests]."""
    section = README.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```sh\n(.*?)```", section, re.S)]


def test_ci_runs_exactly_the_readme_test_command() -> None:
    main_job, tests = readme_commands()
    assert "pytest" in tests and "dbos-migrate up -c sample_app/dbos-config.yaml" in main_job
    ci = (REPO / ".ci" / "run").read_text()
    assert tests in ci.splitlines(), ".ci/run must run the README's test command verbatim"


def test_postgres_start_status_stop(reachable_tmp: Path, tmp_path: Path) -> None:
    port = free_port()
    env: dict[str, str | None] = {"DBOS_MIGRATE_HOME": str(reachable_tmp / "home"), "PGPORT": str(port)}
    try:
        started = run_cli("postgres", "start", env=env, timeout=180)
        assert started.returncode == 0, started.stdout + started.stderr
        assert f"postgresql://postgres:***@localhost:{port}" in started.stdout
        # The password appears only in the export line, which must be usable as printed.
        export = f"export DBOS_DATABASE_URL=postgresql://postgres:dbos@localhost:{port}/postgres"
        assert [line.strip() for line in started.stdout.splitlines() if "dbos@" in line] == [export]
        with psycopg.connect(f"postgresql://postgres:dbos@127.0.0.1:{port}/postgres") as conn:
            assert conn.execute("select 1").fetchone() == (1,)
        again = run_cli("postgres", "start", env=env, timeout=180)
        assert again.returncode == 0 and "already running" in again.stdout
        assert run_cli("postgres", "status", env=env).returncode == 0
        # The default target (postgres:dbos@localhost:$PGPORT) now just works.
        cfg = tmp_path / "dbos-config.yaml"
        cfg.write_text("name: quick-start-app\ndatabase:\n  migrate:\n    - 'true'\n")
        up = run_cli("up", "-c", cfg, env={**env, "PGUSER": None, "PGPASSWORD": None, "PGHOST": None})
        assert up.returncode == 0, up.stdout + up.stderr
        assert "quick_start_app created" in up.stdout
    finally:
        stopped = run_cli("postgres", "stop", env=env, timeout=120)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout
    status = run_cli("postgres", "status", env=env)
    assert status.returncode == 1 and "not running" in status.stdout
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"postgresql://postgres:dbos@127.0.0.1:{port}/postgres", connect_timeout=3)


def copy_checkout(dest: Path) -> Path:
    """The files of the checkout (tracked and untracked, not ignored) copied to `dest`."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True
    )
    for name in files.stdout.splitlines():
        src = REPO / name
        if src.is_file() and ".venv" not in src.parts:
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    return dest


def clean_env(home: Path) -> dict[str, str]:
    """The environment of a newcomer: no PG*/DBOS_* variables, no active venv, our own HOME."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DBOS_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(HOME=str(home), XDG_DATA_HOME=str(home / ".local" / "share"), XDG_CACHE_HOME=str(home / ".cache"))
    return env


@contextmanager
def default_port_taken() -> Iterator[None]:
    """Port 5432 held by something the tool did not start: the machine's own server when one
    runs there (as on CI), else a bare listener of ours for the test's duration."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        listening = probe.connect_ex(("127.0.0.1", 5432)) == 0
    if listening:
        yield
        return
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 5432))
        sock.listen()
        yield


def unprivileged() -> tuple[list[str], int | None]:
    """(command prefix, uid): how to run as a normal user. Ourselves when we are not root; as
    root, `nobody` through runuser with the system Python (root's pyenv is not theirs)."""
    if os.geteuid() != 0:
        return [], None
    runuser = shutil.which("runuser")
    if runuser is None or not Path("/usr/bin/python3").exists():
        skip_or_fail("as root, needs runuser and /usr/bin/python3 to run the quick start as a normal user")
    uid = pwd.getpwnam("nobody").pw_uid
    return [runuser, "-u", "nobody", "--"], uid


def run_main_job(main_job: str, checkout: Path, env: dict[str, str], prefix: list[str]) -> None:
    """The README's first command twice (create, then no-op), then `postgres status|stop`."""
    tool = str(checkout / ".venv" / "bin" / "dbos-migrate")

    def run(*argv: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*prefix, *argv], cwd=checkout, env=env, capture_output=True, text=True, timeout=timeout)

    try:
        first = run("sh", "-c", main_job, timeout=900)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert "sample_app created" in first.stdout
        again = run("sh", "-c", main_job, timeout=900)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "app database sample_app exists" in again.stdout
        status = run(tool, "postgres", "status")
        assert status.returncode == 0 and "running" in status.stdout, status.stdout + status.stderr
    finally:
        stop = run(tool, "postgres", "stop")
    assert stop.returncode == 0 and "stopped" in stop.stdout, stop.stdout + stop.stderr


def recorded_port(home: Path) -> int:
    """The port in the record `postgres start` keeps in the tool's (XDG) home."""
    record = home / ".local" / "share" / "dbos-migrate" / "postgres" / "current.json"
    port: int = json.loads(record.read_text())["port"]
    return port


needs_git = pytest.mark.skipif(shutil.which("git") is None, reason="needs git to copy the checkout")


@needs_git
def test_readme_main_job_with_another_server_on_5432(reachable_tmp: Path) -> None:
    """The quick start exactly as written, as the current user, while 5432 belongs to a server
    the tool did not start: `postgres start` moves to a free port and records it, and `up`
    finds the recorded server with no PGPORT and no pasted URL."""
    main_job, _ = readme_commands()
    checkout = copy_checkout(reachable_tmp / "checkout")
    home = reachable_tmp / "home"
    home.mkdir()
    env = clean_env(home)
    with default_port_taken():
        run_main_job(main_job, checkout, env, [])
    assert recorded_port(home) != 5432


@needs_git
def test_readme_main_job_as_a_normal_user_on_a_free_port(reachable_tmp: Path) -> None:
    """The quick start exactly as written, as a normal user (nobody, when the suite runs as
    root) whose default port is free (PGPORT points at a free port, as 5432 is on a fresh
    machine)."""
    prefix, uid = unprivileged()
    main_job, _ = readme_commands()
    checkout = copy_checkout(reachable_tmp / "checkout")
    home = reachable_tmp / "home"
    home.mkdir()
    env = clean_env(home)
    port = free_port()
    env["PGPORT"] = str(port)
    if uid is not None:
        env["PATH"] = "/usr/local/bin:/usr/bin:/bin"
        for path in [checkout, *checkout.rglob("*"), home]:
            os.chown(path, uid, -1, follow_symlinks=False)
    run_main_job(main_job, checkout, env, prefix)
    assert recorded_port(home) == port
