"""The README's promises: `postgres start|stop|status` for real, and its two commands as written."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import psycopg
import pytest
from pgharness import free_port, run_cli

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


@pytest.mark.skipif(shutil.which("git") is None, reason="needs git to copy the checkout")
def test_readme_main_job_command_from_a_fresh_venv(reachable_tmp: Path) -> None:
    """The quick start exactly as written, in a copy of the checkout, on a free port."""
    main_job, _ = readme_commands()
    checkout = reachable_tmp / "checkout"
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True, text=True, check=True)
    for name in files.stdout.splitlines():
        src = REPO / name
        if src.is_file() and ".venv" not in src.parts:
            (checkout / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, checkout / name)
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DBOS_", "VIRTUAL_ENV"))}
    env.update(PGPORT=str(port), DBOS_MIGRATE_HOME=str(reachable_tmp / "home"), DBOS_MIGRATE_NO_CACHE="1")
    try:
        first = subprocess.run(["sh", "-c", main_job], cwd=checkout, env=env, capture_output=True, text=True, timeout=900)
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        assert "sample_app created" in first.stdout
        again = subprocess.run(["sh", "-c", main_job], cwd=checkout, env=env, capture_output=True, text=True, timeout=900)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "app database sample_app exists" in again.stdout
    finally:
        subprocess.run([str(checkout / ".venv" / "bin" / "dbos-migrate"), "postgres", "stop"], env=env, capture_output=True, timeout=120)
