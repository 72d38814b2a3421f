"""`dbos-migrate down`: rollback order, the production guard on every path, sample_app round trip."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from helpers import db_exists, history_rows, one_json, query, write_config
from pgharness import cli_command, invoke, with_dbname

REMOTE = "postgresql://appuser:Sup3r%40Secret%3A%2F%25%23%3F%26%3D@db.invalid:5432/postgres"
SECRET = "Sup3r@Secret:/%#?&="


def _config(tmp_path: Path, app_db: str) -> Path:
    return write_config(tmp_path, app_db_name=app_db, migrate=["true"], rollback=["touch ran"])


def _assert_refused(result: subprocess.CompletedProcess[str], tmp_path: Path) -> None:
    assert result.returncode == 5, result.stdout + result.stderr
    assert not (tmp_path / "ran").exists(), "a refused rollback must run nothing"
    assert SECRET not in result.stdout + result.stderr
    assert "Sup3r%40Secret" not in result.stdout + result.stderr


def test_remote_host_without_confirmation_is_refused_before_connecting(tmp_path: Path, app_db: str) -> None:
    result = invoke("down", "-c", _config(tmp_path, app_db), "-D", REMOTE)
    _assert_refused(result, tmp_path)
    assert f"--confirm {app_db}" in result.stderr  # says how to proceed
    for caution in ("production database are risky", "break workflows still running", "cannot be undone"):
        assert caution in result.stderr
    assert "postgresql://appuser:***@db.invalid:5432/postgres" in result.stdout + result.stderr
    assert "touch ran" in result.stderr  # the commands are shown


def test_wrong_confirm_is_refused(tmp_path: Path, app_db: str) -> None:
    result = invoke("down", "-c", _config(tmp_path, app_db), "-D", REMOTE, "--confirm", "some_other_db")
    _assert_refused(result, tmp_path)
    assert "does not match" in result.stderr


def test_right_confirm_or_yes_passes_the_guard(tmp_path: Path, app_db: str) -> None:
    """Past the guard the unresolvable host fails to connect: exit 3, not 5."""
    cfg = _config(tmp_path, app_db)
    for extra in (["--confirm", app_db], ["--yes"]):
        result = invoke("down", "-c", cfg, "-D", REMOTE, *extra)
        assert result.returncode == 3, result.stdout + result.stderr
        assert SECRET not in result.stdout + result.stderr
        assert not (tmp_path / "ran").exists()


def test_forced_production_without_tty_is_refused(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = _config(tmp_path, app_db)
    assert invoke("up", "-c", cfg, "-D", pg_url).returncode == 0
    _assert_refused(invoke("down", "-c", cfg, "-D", pg_url, "--production"), tmp_path)
    _assert_refused(invoke("down", "-c", cfg, "-D", pg_url, env={"DBOS__CLOUD": "true"}), tmp_path)
    ok = invoke("down", "-c", cfg, "-D", pg_url, "--production", "--confirm", app_db)
    assert ok.returncode == 0, ok.stderr
    assert (tmp_path / "ran").exists()


def test_local_target_needs_no_confirmation(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = _config(tmp_path, app_db)
    assert invoke("up", "-c", cfg, "-D", pg_url).returncode == 0
    result = invoke("down", "-c", cfg, "-D", pg_url)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "ran").exists()


def _down_on_tty(cfg: Path, url: str, answer: str) -> tuple[int, str]:
    """Run `down --production` with stdin on a pseudo-terminal, answer the prompt, return (code, text)."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [*cli_command(), "down", "-c", str(cfg), "-D", url, "--production"],
        stdin=slave,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    os.close(slave)
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + 60
    while b"to roll it back:" not in seen:  # wait for the prompt, not for a fixed time
        assert time.monotonic() < deadline, seen.decode(errors="replace")
        ready, _, _ = select.select([proc.stdout], [], [], 1)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            assert chunk, "exited before prompting: " + seen.decode(errors="replace")
            seen += chunk
    os.write(master, answer.encode() + b"\n")
    rest, _ = proc.communicate(timeout=60)
    os.close(master)
    return proc.returncode, (seen + rest).decode(errors="replace")


def test_typed_confirmation_on_a_tty(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = _config(tmp_path, app_db)
    assert invoke("up", "-c", cfg, "-D", pg_url).returncode == 0
    code, text = _down_on_tty(cfg, pg_url, "not-the-name")
    assert code == 5, text
    assert not (tmp_path / "ran").exists()
    code, text = _down_on_tty(cfg, pg_url, app_db)
    assert code == 0, text
    assert (tmp_path / "ran").exists()


def test_rollback_runs_in_listed_order(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(
        tmp_path,
        app_db_name=app_db,
        migrate=["true"],
        rollback=["echo third-migration >> log", "echo second >> log", "echo first >> log"],
    )
    assert invoke("up", "-c", cfg, "-D", pg_url).returncode == 0
    result = invoke("down", "-c", cfg, "-D", pg_url)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "log").read_text().split() == ["third-migration", "second", "first"]
    rows = [r for r in history_rows(pg_url, app_db) if r["direction"] == "down"]
    assert [r["command_index"] for r in rows] == [1, 2, 3]


def test_down_never_creates_a_database(tmp_path: Path, pg_url: str, app_db: str) -> None:
    result = invoke("down", "-c", _config(tmp_path, app_db), "-D", pg_url)
    assert result.returncode == 3
    assert "does not exist" in result.stderr
    assert not db_exists(pg_url, app_db)


def test_missing_or_empty_rollback_is_exit_2(tmp_path: Path, pg_url: str, app_db: str) -> None:
    for rollback in (None, []):
        cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"], rollback=rollback)
        result = invoke("down", "-c", cfg, "-D", pg_url)
        assert result.returncode == 2
        assert "no rollback commands" in result.stderr and "rollback:" in result.stderr


def test_down_dry_run(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = _config(tmp_path, app_db)
    assert invoke("up", "-c", cfg, "-D", pg_url).returncode == 0
    result = invoke("down", "-c", cfg, "-D", pg_url, "--dry-run", "--output", "json")
    assert result.returncode == 0
    assert one_json(result.stdout)["planned_commands"] == ["touch ran"]
    assert not (tmp_path / "ran").exists()


def test_failing_rollback_stops_with_exit_1(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"], rollback=["exit 4", "touch ran"])
    assert invoke("up", "-c", cfg, "-D", pg_url).returncode == 0
    result = invoke("down", "-c", cfg, "-D", pg_url)
    assert result.returncode == 1 and "exit code 4" in result.stderr
    assert not (tmp_path / "ran").exists()


SAMPLE = Path(__file__).resolve().parent.parent / "sample_app"


@pytest.mark.skipif(not (SAMPLE / "dbos-config.yaml").exists(), reason="sample_app is missing")
def test_sample_app_up_down_up(tmp_path: Path, pg_url: str, app_db: str) -> None:
    app = tmp_path / "sample_app"
    shutil.copytree(SAMPLE, app, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = app / "dbos-config.yaml"
    tables = "select tablename from pg_tables where schemaname = 'public' order by 1"
    env: dict[str, str | None] = {"PATH": f"{Path(cli_command()[0]).parent}{os.pathsep}{os.environ['PATH']}"}

    result = invoke("up", "-c", cfg, "-D", pg_url, "--app-db-name", app_db, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [t for (t,) in query(pg_url, tables, dbname=app_db)] == ["alembic_version", "customers", "orders"]
    assert query(pg_url, "select count(*) from customers", dbname=app_db) == [(3,)]

    result = invoke("down", "-c", cfg, "-D", pg_url, "--app-db-name", app_db, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [t for (t,) in query(pg_url, tables, dbname=app_db)] == ["alembic_version"]

    result = invoke("up", "-c", cfg, "-D", with_dbname(pg_url, "postgres"), "--app-db-name", app_db, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert [t for (t,) in query(pg_url, tables, dbname=app_db)] == ["alembic_version", "customers", "orders"]
