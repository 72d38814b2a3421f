"""No command outlives its run (docs/reliability.md): proven with real processes and PostgreSQL.

A command whose processes ignore SIGTERM, or leave the command's process group (`setsid`,
`nohup ... &`, a double fork), must be gone before dbos-migrate exits, and so before the
migration lock is released. As in test_reliability.py, nothing sleeps and then asserts:
every wait is on a condition (a marker file, the CLI's exit), and /proc is read only for
pids the commands recorded themselves.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import history_rows, one_json, write_config
from pgharness import run_cli, with_dbname
from test_reliability import Running, alive, background_clis, read_pid

from dbos_migrate.engine.database import LOCK_CLASS, lock_key

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc (Linux)")


@pytest.fixture
def background() -> Iterator[Callable[..., Running]]:
    yield from background_clis()


@pytest.fixture
def reap_leftovers(tmp_path: Path) -> Iterator[None]:
    """Whatever the outcome, SIGKILL every process (and process group) the commands recorded
    in *.pid files under tmp_path: on the old code these tests leave them running."""
    yield
    for pidfile in tmp_path.rglob("*.pid"):
        with contextlib.suppress(ValueError, OSError):
            pid = read_pid(pidfile)
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)


# A migration that ignores SIGTERM: its handler says so on stdout and in a file, and it goes
# on writing a heartbeat until SIGKILL ends it.
IGNORE_TERM = """\
import os, signal, time
from pathlib import Path

def on_term(signum, frame):
    print("got SIGTERM, still migrating", flush=True)
    Path("term-seen").touch()

signal.signal(signal.SIGTERM, on_term)
Path("script.pid").write_text(str(os.getpid()))
beat = 0
while True:
    beat += 1
    Path("heartbeat.tmp").write_text(str(beat))
    os.replace("heartbeat.tmp", "heartbeat")
    time.sleep(0.05)
"""


def ignore_term_config(directory: Path, app_db: str) -> Path:
    (directory / "ignore_term.py").write_text(IGNORE_TERM)
    command = f"echo $$ > sh.pid; echo start && {shlex.quote(sys.executable)} ignore_term.py"
    return write_config(directory, app_db_name=app_db, migrate=[command, "touch second-ran"])


def lock_held(conn: psycopg.Connection[Any], app_db: str) -> bool:
    """Whether some session holds the app's migration lock (read from pg_locks, not taken)."""
    row = conn.execute(
        """SELECT count(*) FROM pg_locks l JOIN pg_database d ON d.oid = l.database
            WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s
              AND l.objsubid = 2 AND d.datname = %s""",
        (LOCK_CLASS, lock_key(app_db), app_db),
    ).fetchone()
    return bool(row and row[0])


def watch_until_exit(run: Running, pg_url: str, app_db: str, script: int) -> tuple[int, list[str]]:
    """Until the CLI has exited, and once more after, watch the lock and the script: the lock
    seen free while the script is still alive afterwards is a violation. Returns the exit
    code and the violations."""
    violations: list[str] = []
    deadline = time.monotonic() + 60
    with psycopg.connect(with_dbname(pg_url, app_db), autocommit=True) as conn:
        while True:
            exited = run.proc.poll() is not None
            free = not lock_held(conn, app_db)
            if free and alive(script):
                violations.append("the lock was free while the script still ran")
                break
            if exited:
                break
            assert time.monotonic() < deadline, f"dbos-migrate still running\n{run.output()}"
            time.sleep(0.02)  # a polling interval, not a wait for an outcome
    return run.wait(), violations


def assert_script_ended_before_exit(directory: Path, script: int) -> None:
    assert not alive(script), "the TERM-ignoring script was still running when dbos-migrate exited"
    assert (directory / "term-seen").exists(), "the script should have got SIGTERM and survived it"


def test_sigterm_ends_a_term_ignoring_script_before_exit_and_frees_the_lock_after_it(
    tmp_path: Path, pg_url: str, app_db: str, background: Callable[..., Running], reap_leftovers: None
) -> None:
    cfg = ignore_term_config(tmp_path, app_db)
    run = background(tmp_path, ["up", "-c", cfg, "-D", pg_url, "--output", "json"], grace=1)
    run.wait_for(lambda: (tmp_path / "heartbeat").exists(), "the script's first heartbeat")
    script = read_pid(tmp_path / "script.pid")

    os.kill(run.pid, signal.SIGTERM)
    code, violations = watch_until_exit(run, pg_url, app_db, script)
    assert code == 143, run.output()
    assert violations == []
    assert_script_ended_before_exit(tmp_path, script)
    # Output kept streaming while the script was given its grace period.
    assert "got SIGTERM, still migrating" in run.stderr, run.output()
    doc = one_json(run.stdout)
    assert doc["error"]["code"] == "interrupted"
    assert [c["status"] for c in doc["commands"]] == ["interrupted"]
    assert [r["status"] for r in history_rows(pg_url, app_db)] == ["interrupted"]
    assert not (tmp_path / "second-ran").exists()
    with psycopg.connect(with_dbname(pg_url, app_db), autocommit=True) as conn:
        assert not lock_held(conn, app_db)


def test_command_timeout_ends_a_term_ignoring_script_before_exit(
    tmp_path: Path, pg_url: str, app_db: str, background: Callable[..., Running], reap_leftovers: None
) -> None:
    cfg = ignore_term_config(tmp_path, app_db)
    run = background(tmp_path, ["up", "-c", cfg, "-D", pg_url, "--output", "json", "--command-timeout", "2"], grace=1)
    run.wait_for(lambda: (tmp_path / "heartbeat").exists(), "the script's first heartbeat")
    script = read_pid(tmp_path / "script.pid")

    code, violations = watch_until_exit(run, pg_url, app_db, script)
    assert code == 124, run.output()
    assert violations == []
    assert_script_ended_before_exit(tmp_path, script)
    doc = one_json(run.stdout)
    assert doc["error"]["code"] == "command_timeout"
    assert [c["status"] for c in doc["commands"]] == ["timed_out"]
    assert [r["status"] for r in history_rows(pg_url, app_db)] == ["timed_out"]


# Three ways out of the command's process group or out of its shell's reach, each recording
# its own pid before it execs `sleep`; the shell waits for all three records, then exits 0.
ESCAPES = (
    "setsid sh -c 'echo $$ > setsid.pid; exec sleep 300' & "
    "nohup sh -c 'echo $$ > nohup.pid; exec sleep 300' >/dev/null 2>&1 & "
    "(sh -c 'echo $$ > daemon.pid; exec sleep 300' &) ; "
    "echo $$ > sh.pid; "
    "while [ ! -s setsid.pid ] || [ ! -s nohup.pid ] || [ ! -s daemon.pid ]; do sleep 0.01; done; "
    "echo escaped"
)


@pytest.mark.parametrize("output", ["json", "text"])
def test_descendants_that_escape_the_group_are_ended_and_named(
    tmp_path: Path, pg_url: str, app_db: str, reap_leftovers: None, output: str
) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[ESCAPES, "true"])
    result = run_cli("up", "-c", cfg, "-D", pg_url, "--output", output)
    assert result.returncode == 0, result.stdout + result.stderr
    sleeps = [read_pid(tmp_path / f"{name}.pid") for name in ("setsid", "nohup", "daemon")]
    assert [p for p in sleeps if alive(p)] == [], "a descendant outlived the run"
    names = [f"pid {pid} (sleep)" for pid in sleeps]
    if output == "json":
        commands = one_json(result.stdout)["commands"]
        assert sorted(commands[0]["ended_descendants"]) == sorted(names)
        assert commands[1]["ended_descendants"] == []
    else:
        warning = next(line for line in result.stdout.splitlines() if "ended what the command left running" in line)
        assert all(name in warning for name in names), warning
    assert [r["status"] for r in history_rows(pg_url, app_db)] == ["succeeded", "succeeded"]
