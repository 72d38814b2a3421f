"""The reliability guarantees of docs/reliability.md, each proven against the real CLI.

Every test here can fail without the behaviour it names: no test sleeps and then asserts.
They wait on conditions instead (a marker file a command writes, a process gone from /proc,
a session gone from pg_stat_activity), each bounded by a generous deadline, and they never
assert on timings. Faults that touch the server (restart, stop) use throwaway `own_cluster`s;
the shared server is only ever queried.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from urllib.parse import quote, quote_plus

import psycopg
import pytest
from helpers import history_rows, one_json, query, write_config
from pgharness import (
    PASSWORD,
    Cluster,
    ClusterFactory,
    LocalPostgresError,
    cli_command,
    cli_env,
    free_port,
    make_self_signed_cert,
    run_cli,
    skip_or_fail,
    with_dbname,
)

from dbos_migrate.settings.conninfo import compose

DEADLINE = 60.0  # seconds: a bound for conditions that normally hold within a second

# ---------------------------------------------------------------------------- /proc helpers


def _stat(pid: int) -> tuple[str, int, int] | None:
    """(state, ppid, pgrp) of a process, or None when it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return fields[0], int(fields[1]), int(fields[2])


def alive(pid: int) -> bool:
    """Alive and not a zombie (a container's PID 1 may never reap orphans)."""
    st = _stat(pid)
    return st is not None and st[0] not in ("Z", "X")


def children(pid: int) -> list[int]:
    """The children of `pid`, from its threads' /proc children lists (a targeted read)."""
    found: list[int] = []
    with contextlib.suppress(FileNotFoundError, ProcessLookupError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(FileNotFoundError, ProcessLookupError):
                found.extend(int(p) for p in (task / "children").read_text().split())
    return found


def descendants(root: int) -> set[int]:
    """Live descendants of `root` (not `root` itself), walked down from `root` through the
    children lists: only processes the test started and theirs are ever read."""
    found: set[int] = set()
    todo = children(root)
    while todo:
        pid = todo.pop()
        if pid not in found and alive(pid):
            found.add(pid)
            todo.extend(children(pid))
    return found


def group_empty(pgid: int) -> bool:
    """No process at all (zombies included) is left in process group `pgid`. Only for groups
    whose members dbos-migrate reaps itself: a member orphaned to a PID 1 that never reaps
    would stay a zombie and keep the group non-empty."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def known_pids(directory: Path) -> list[int]:
    """The pids the commands recorded in *.pid files in `directory`."""
    return [read_pid(path) for path in sorted(directory.glob("*.pid"))]


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def wait_until(cond: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
    """Poll `cond` until it holds; fail naming `what` once the deadline passes."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(0.02)


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


# ---------------------------------------------------------------------------- running the CLI in the background


class Running:
    """`dbos-migrate ARGS` in the background, in its own session; output goes to files."""

    def __init__(
        self,
        directory: Path,
        args: list[object],
        env: Mapping[str, str | None] | None = None,
        grace: float | None = None,
        name: str = "cli",
    ) -> None:
        self.out_path = directory / f"{name}.out"
        self.err_path = directory / f"{name}.err"
        argv = cli_command()
        full_env = cli_env(env)
        if grace is not None:
            args = [*args, "--kill-after", grace]
        with self.out_path.open("wb") as out, self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [*argv, *(str(a) for a in args)],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                env=full_env,
                cwd=directory,  # not the checkout: `python -c` puts its cwd first on sys.path
                start_new_session=True,
            )
        self.pid = self.proc.pid

    @property
    def stdout(self) -> str:
        return self.out_path.read_text(errors="replace")

    @property
    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")

    def output(self) -> str:
        return f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"

    def wait_for(self, cond: Callable[[], object], what: str, timeout: float = DEADLINE) -> None:
        """Wait for `cond` while the CLI is still running; fail with its output if it ends first."""

        def check() -> object:
            if cond():
                return True
            if self.proc.poll() is not None:
                raise AssertionError(f"dbos-migrate exited ({self.proc.returncode}) before {what}\n{self.output()}")
            return False

        wait_until(check, what, timeout)

    def wait(self, timeout: float = DEADLINE) -> int:
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"dbos-migrate still running after {timeout:g}s\n{self.output()}") from None


@pytest.fixture
def background() -> Iterator[Callable[..., Running]]:
    """Start `Running` CLIs; afterwards kill whatever is left of them and of their commands'
    process groups (pids the commands wrote to *.pid files in the directory they ran in)."""
    yield from background_clis()


def background_clis() -> Iterator[Callable[..., Running]]:
    """The body of the `background` fixture, shared with test_load.py."""
    started: list[tuple[Running, Path]] = []

    def start(directory: Path, args: list[object], **kwargs: object) -> Running:
        run = Running(directory, args, **kwargs)  # type: ignore[arg-type]
        started.append((run, directory))
        return run

    yield start
    for run, directory in started:
        _kill_group(run.pid)
        for pidfile in directory.rglob("*.pid"):
            with contextlib.suppress(ValueError, OSError):
                _kill_group(int(pidfile.read_text().strip()))
        with contextlib.suppress(subprocess.TimeoutExpired):
            run.proc.wait(10)


def read_pid(path: Path) -> int:
    return int(path.read_text().strip())


def sessions_of(instance_url: str, pid: int) -> list[tuple[object, ...]]:
    """pg_stat_activity rows of the dbos-migrate process `pid` (its application_name names it)."""
    return query(
        instance_url,
        "SELECT pid, application_name FROM pg_stat_activity WHERE application_name LIKE %s",
        (f"dbos-migrate % pid {pid})",),
    )


# A command that records its shell's pid (the leader of the command's process group) and its
# two children's pids (one in the background, one in the foreground), signals that it is
# running, and then would run for minutes.
LONG = "sleep 300 & echo $! > bg.pid; echo $$ > sh.pid; sleep 301 & echo $! > fg.pid; touch started; wait"


def assert_command_group_gone(directory: Path, *, reaped: bool = False) -> None:
    """The command's shell, its children and whatever they started are gone. With `reaped`
    (dbos-migrate lived to end the command itself), the process group must be empty the
    moment the CLI has exited; otherwise (dbos-migrate was SIGKILLed, and its orphans may be
    left as zombies by a PID 1 that never reaps) every process the command recorded, and
    every descendant of theirs, must die."""
    shell, pids = read_pid(directory / "sh.pid"), known_pids(directory)
    if reaped:
        assert group_empty(shell), [p for p in pids if alive(p)]
        return
    wait_until(
        lambda: not any(alive(p) or descendants(p) for p in pids),
        "the command's processes and their descendants to be gone",
    )


# ---------------------------------------------------------------------------- 1. signals


@pytest.mark.parametrize(
    ("signum", "code", "output"),
    [(signal.SIGINT, 130, "text"), (signal.SIGTERM, 143, "json")],
    ids=["SIGINT", "SIGTERM"],
)
def test_signal_stops_the_command_group_records_interrupted_and_frees_the_lock(
    tmp_path: Path,
    pg_url: str,
    app_db: str,
    background: Callable[..., Running],
    signum: int,
    code: int,
    output: str,
) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[LONG, "touch second-ran"])
    run = background(tmp_path, ["up", "-c", cfg, "-D", pg_url, "--output", output])
    run.wait_for(lambda: (tmp_path / "started").exists(), "the command to start")

    os.kill(run.pid, signum)
    assert run.wait() == code, run.output()
    assert_command_group_gone(tmp_path, reaped=True)
    assert not (tmp_path / "second-ran").exists(), "no command may start after an interrupt"
    rows = history_rows(pg_url, app_db)
    assert [(r["command_index"], r["status"]) for r in rows] == [(1, "interrupted")]
    if output == "json":
        doc = one_json(run.stdout)
        assert doc["ok"] is False and doc["error"]["code"] == "interrupted"
        assert [c["status"] for c in doc["commands"]] == ["interrupted"]
    else:
        assert "interrupted" in run.stderr

    # The lock is free at once: --lock-timeout 0 accepts only an immediately free lock.
    other = write_config(tmp_path / "next", app_db_name=app_db, migrate=["true"])
    after = run_cli("up", "-c", other, "-D", pg_url, "--lock-timeout", "0")
    assert after.returncode == 0, after.stdout + after.stderr


# The shell survives TERM: its trap records each one, and the loop goes on.
SURVIVES_TERM = "trap 'touch got-term' TERM; echo $$ > sh.pid; touch started; while :; do sleep 1; done"


def test_second_signal_kills_a_command_that_survives_term_at_once(
    tmp_path: Path, pg_url: str, app_db: str, background: Callable[..., Running]
) -> None:
    """With a grace period of an hour, only the second signal can end this run in time."""
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[SURVIVES_TERM])
    run = background(tmp_path, ["up", "-c", cfg, "-D", pg_url], grace=3600)
    run.wait_for(lambda: (tmp_path / "started").exists(), "the command to start")
    os.kill(run.pid, signal.SIGINT)
    run.wait_for(lambda: (tmp_path / "got-term").exists(), "the command group to get SIGTERM")
    os.kill(run.pid, signal.SIGINT)
    assert run.wait() == 130, run.output()
    assert group_empty(read_pid(tmp_path / "sh.pid")), "the command's process group should be gone"
    assert [r["status"] for r in history_rows(pg_url, app_db)] == ["interrupted"]


def test_command_ignoring_term_is_killed_after_the_grace_period(
    tmp_path: Path, pg_url: str, app_db: str, background: Callable[..., Running]
) -> None:
    """One SIGTERM, a command that ignores TERM: KILL follows the grace period (here 1 s)."""
    cmd = "trap '' TERM; sleep 300 & echo $! > bg.pid; echo $$ > sh.pid; touch started; sleep 301"
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[cmd])
    run = background(tmp_path, ["up", "-c", cfg, "-D", pg_url, "--output", "json"], grace=1)
    run.wait_for(lambda: (tmp_path / "started").exists(), "the command to start")
    os.kill(run.pid, signal.SIGTERM)
    assert run.wait() == 143, run.output()
    assert_command_group_gone(tmp_path, reaped=True)
    doc = one_json(run.stdout)
    assert doc["commands"][0]["status"] == "interrupted" and doc["commands"][0]["signal"] == signal.SIGKILL
    assert [r["status"] for r in history_rows(pg_url, app_db)] == ["interrupted"]


def test_signal_while_waiting_for_the_lock_runs_nothing(
    tmp_path: Path, pg_url: str, app_db: str, background: Callable[..., Running]
) -> None:
    """Outside a command a signal ends the run at once: here, while it waits for the lock."""
    from dbos_migrate.engine.database import LOCK_CLASS, lock_key

    query(pg_url, f'CREATE DATABASE "{app_db}"')
    holder = psycopg.connect(with_dbname(pg_url, app_db), autocommit=True, application_name="other-deploy")
    try:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, lock_key(app_db)))
        cfg = write_config(tmp_path, app_db_name=app_db, migrate=["touch ran"])
        run = background(tmp_path, ["up", "-c", cfg, "-D", pg_url, "--lock-timeout", "300"])
        run.wait_for(lambda: "waiting for the migration lock" in run.stdout, "the run to wait for the lock")
        os.kill(run.pid, signal.SIGTERM)
        assert run.wait() == 143, run.output()
    finally:
        holder.close()
    assert not (tmp_path / "ran").exists()
    wait_until(lambda: not sessions_of(pg_url, run.pid), "the interrupted run's sessions to end")


# ---------------------------------------------------------------------------- 2. parent death


def test_sigkilled_dbos_migrate_takes_its_command_with_it_and_frees_the_lock(
    tmp_path: Path, pg_url: str, app_db: str, background: Callable[..., Running]
) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[LONG, "touch second-ran"])
    run = background(tmp_path, ["up", "-c", cfg, "-D", pg_url])
    run.wait_for(lambda: (tmp_path / "started").exists(), "the command to start")
    assert sessions_of(pg_url, run.pid), "the lock holder's session should be visible"

    os.kill(run.pid, signal.SIGKILL)
    assert run.wait() == -signal.SIGKILL
    assert_command_group_gone(tmp_path)  # the shell and its background grandchild: no orphan
    # "A holder that dies releases the lock with its session": the server ends the session
    # when the socket closes; once it is gone the lock must be free.
    wait_until(lambda: not sessions_of(pg_url, run.pid), "the killed holder's session to end")
    other = write_config(tmp_path / "next", app_db_name=app_db, migrate=["true"])
    after = run_cli("up", "-c", other, "-D", pg_url, "--lock-timeout", "0")
    assert after.returncode == 0, after.stdout + after.stderr
    assert not (tmp_path / "second-ran").exists()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_parent_death_signal_alone_kills_the_command_shell(
    tmp_path: Path, pg_url: str, app_db: str, background: Callable[..., Running]
) -> None:
    """With the watchdog shell gone, the command's shell still dies with dbos-migrate (Linux).

    The runner starts the command's shell first and its watchdog right after, so the command
    can be running before the watchdog exists: the test waits for the watchdog of this very
    shell (its argument is the shell's pid) to be in place before killing it."""
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["echo $$ > sh.pid; touch started; sleep 300"])
    run = background(tmp_path, ["up", "-c", cfg, "-D", pg_url])
    run.wait_for(lambda: (tmp_path / "started").exists(), "the command to start")
    shell = read_pid(tmp_path / "sh.pid")

    def watchdogs() -> list[int]:
        return [p for p in descendants(run.pid) if cmdline(p).split()[-2:] == ["dbos-migrate-watchdog", str(shell)]]

    run.wait_for(lambda: len(watchdogs()) == 1, "the command's watchdog to be in place")
    (watchdog,) = watchdogs()
    os.kill(watchdog, signal.SIGKILL)
    wait_until(lambda: not alive(watchdog), "the watchdog to die")
    assert alive(shell)

    os.kill(run.pid, signal.SIGKILL)
    run.wait()
    wait_until(lambda: not alive(shell), "the command's shell to die by its parent-death signal")


# ---------------------------------------------------------------------------- 3. lost connection


WAIT_FOR_GO = "touch started; while [ ! -e go ]; do sleep 0.05; done"


def test_lost_lock_connection_stops_the_run_and_history_is_written_after_reconnecting(
    tmp_path: Path, own_cluster: ClusterFactory, background: Callable[..., Running]
) -> None:
    cluster = own_cluster()
    url = cluster.url()
    cfg = write_config(tmp_path, app_db_name="lost_lock_app", migrate=[WAIT_FOR_GO, "touch second-ran"])
    run = background(tmp_path, ["up", "-c", cfg, "-D", url])
    run.wait_for(lambda: (tmp_path / "started").exists(), "command 1 to start")

    cluster.restart()  # every session ends, the lock's included; the server is back at once
    (tmp_path / "go").touch()
    assert run.wait() == 3, run.output()
    assert "migration lock was lost" in run.stderr
    assert "no further command was started" in run.stderr
    assert not (tmp_path / "second-ran").exists()
    # Command 1 ended after the restart, so its row can only have come through a new session.
    rows = history_rows(url, "lost_lock_app")
    assert [(r["command_index"], r["status"]) for r in rows] == [(1, "succeeded")]
    assert "history not recorded" not in run.output()


@pytest.mark.parametrize("output", ["text", "json"])
def test_lost_lock_connection_with_server_down_says_history_was_not_recorded(
    tmp_path: Path, own_cluster: ClusterFactory, background: Callable[..., Running], output: str
) -> None:
    """Command 1's row is written; the server goes away during command 2 and stays away."""
    cluster = own_cluster()
    url = cluster.url()
    cfg = write_config(tmp_path, app_db_name="down_app", migrate=["true", WAIT_FOR_GO, "touch third-ran"])
    run = background(tmp_path, ["up", "-c", cfg, "-D", url, "--output", output])
    run.wait_for(lambda: (tmp_path / "started").exists(), "command 2 to start")

    cluster.stop()
    (tmp_path / "go").touch()
    assert run.wait() == 3, run.output()
    assert not (tmp_path / "third-ran").exists()
    if output == "json":
        doc = one_json(run.stdout)
        assert doc["ok"] is False and "migration lock was lost" in doc["error"]["message"]
        assert [c["status"] for c in doc["commands"]] == ["succeeded", "succeeded"]
        assert doc["history_written"] is False, "a row is missing: the document must not claim otherwise"
    else:
        assert "migration lock was lost" in run.stderr
        assert "history not recorded for 1 command(s)" in run.stdout
    assert_no_password(run.output(), PASSWORD, "the output")
    cluster.start()
    assert [r["command_index"] for r in history_rows(url, "down_app")] == [1]


# ---------------------------------------------------------------------------- 4. --wait


def test_wait_retries_until_the_server_is_up(
    tmp_path: Path, own_cluster: ClusterFactory, background: Callable[..., Running]
) -> None:
    cluster = own_cluster()
    cluster.stop()
    cfg = write_config(tmp_path, app_db_name="waited_app", migrate=["touch ran"])
    run = background(tmp_path, ["up", "-c", cfg, "-D", cluster.url(), "--wait", "60"])
    run.wait_for(lambda: "waiting for the server" in run.stdout, "dbos-migrate to report it is waiting")
    assert not (tmp_path / "ran").exists()
    cluster.start()
    assert run.wait(90) == 0, run.output()
    assert (tmp_path / "ran").exists()
    assert "created" in run.stdout


def test_wait_gives_up_with_exit_3(tmp_path: Path, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["touch ran"])
    url = f"postgresql://postgres:{quote(PASSWORD, safe='')}@127.0.0.1:{free_port()}/postgres"
    result = run_cli("up", "-c", cfg, "-D", url, "--wait", "1")
    assert result.returncode == 3, result.stdout + result.stderr
    assert "gave up after --wait 1s" in result.stderr
    assert "waiting for the server" in result.stdout
    assert not (tmp_path / "ran").exists()


# ---------------------------------------------------------------------------- 5. secrets


def password_forms(password: str) -> set[str]:
    """The raw password and every percent-encoded spelling of it."""
    return {password, quote(password, safe=""), quote(password), quote_plus(password)}


def assert_no_password(text: str, password: str, where: str) -> None:
    for form in password_forms(password):
        assert form not in text, f"password form {form!r} leaked into {where}:\n{text}"


# Commands that do their best to print the password: from the environment, inside the URL
# they are given, percent-encoded, split across two writes, and written literally in the
# command text (which the header, history and error messages then show).
ENCODED = quote(PASSWORD, safe="")
LEAKY = [
    'echo "pw=$PGPASSWORD"; echo "url=$DBOS_DATABASE_URL"; echo "sys=$DBOS_SYSTEM_DATABASE_URL" >&2',
    f"printf '%s\\n' 'enc={ENCODED}'; printf 'split=p@ss:w'; printf '/o%%r#d?&=x\\n'",
    'echo "$PGPASSWORD" >&2; printf \'%s\\n\' "$DBOS_DATABASE_URL" >&2',
]


def test_password_never_printed_or_recorded(tmp_path: Path, own_cluster: ClusterFactory) -> None:
    cluster = own_cluster()  # superuser password PASSWORD, full of @:/%#?&=
    url = cluster.url()
    assert ENCODED in url
    cfg = write_config(tmp_path, app_db_name="secret_app", migrate=LEAKY, rollback=LEAKY)
    summary = tmp_path / "summary.md"
    env: dict[str, str | None] = {
        "GITHUB_ACTIONS": "true",
        "GITHUB_STEP_SUMMARY": str(summary),
        "NO_COLOR": "1",
    }
    seen: list[str] = []

    def cli(*args: object, expect: int = 0) -> subprocess.CompletedProcess[str]:
        result = run_cli(*args, env=env)
        seen.append(f"$ {args[0]} -> {result.returncode}\n{result.stdout}\n{result.stderr}")
        assert result.returncode == expect, result.stdout + result.stderr
        return result

    for output in ("text", "json"):
        cli("up", "-c", cfg, "-D", url, "--output", output)
        cli("down", "-c", cfg, "-D", url, "--output", output)
        cli("status", "-c", cfg, "-D", url, "--output", output)
        cli("history", "-c", cfg, "-D", url, "--output", output)
        cli("plan", "-c", cfg, "-D", url, "--output", output)
    cli("url", "-c", cfg, "-D", url)
    failing = write_config(
        tmp_path / "failing", app_db_name="secret_app", migrate=[*LEAKY[:1], f"echo {ENCODED}; exit 7"]
    )
    cli("up", "-c", failing, "-D", url, expect=1)
    cli("up", "-c", failing, "-D", url, "--output", "json", expect=1)

    everything = "\n".join(seen)
    assert_no_password(everything, PASSWORD, "the output")
    assert "pw=***" in everything and "enc=***" in everything, "the leaky commands should have run"
    assert_no_password(summary.read_text(), PASSWORD, "$GITHUB_STEP_SUMMARY")
    rows = history_rows(url, "secret_app")
    assert len(rows) == 2 * 3 * 2 + 2 * 2  # up and down twice each, three commands; two failing runs
    assert_no_password(repr(rows), PASSWORD, "the history table")


def test_wrong_password_is_exit_3_and_not_echoed(tmp_path: Path, own_cluster: ClusterFactory) -> None:
    cluster = own_cluster()
    wrong = "wr0ng@:/%#?&=pass"
    url = compose("postgres", wrong, "localhost", cluster.port)
    cfg = write_config(tmp_path, app_db_name="wrong_pw_app", migrate=["touch ran"])
    for output in ("text", "json"):
        for verb in ("up", "status", "history"):
            result = run_cli(verb, "-c", cfg, "-D", url, "--output", output)
            text = result.stdout + result.stderr
            if verb != "status":  # status reports an unreachable server in its document
                assert result.returncode == 3, text
                assert "authentication" in text, text
            assert_no_password(text, wrong, f"{verb} --output {output}")
    assert not (tmp_path / "ran").exists()


def test_commands_get_credentials_only_through_their_environment(
    tmp_path: Path, own_cluster: ClusterFactory, background: Callable[..., Running]
) -> None:
    """No process that dbos-migrate starts (command shell, its children, the watchdog) has the
    password on its command line. The URL comes from $DBOS_DATABASE_URL, so not even
    dbos-migrate's own command line holds it."""
    cluster = own_cluster()
    cmd = "echo $$ > sh.pid; psql -Atc 'select 1' > psql.txt; touch started; while [ ! -e go ]; do sleep 0.05; done"
    cfg = write_config(tmp_path, app_db_name="cmdline_app", migrate=[cmd])
    run = background(tmp_path, ["up", "-c", cfg], env={"DBOS_DATABASE_URL": cluster.url(), "DBOS__CLOUD": None})
    run.wait_for(lambda: (tmp_path / "started").exists(), "the command to start")
    shell = read_pid(tmp_path / "sh.pid")
    tree = descendants(run.pid)
    assert shell in tree
    assert any("dbos-migrate-watchdog" in cmdline(p) for p in tree)
    for pid in [run.pid, *tree]:
        assert_no_password(cmdline(pid), PASSWORD, f"the command line of pid {pid}")
    assert PASSWORD in Path(f"/proc/{shell}/environ").read_bytes().decode(errors="replace")
    (tmp_path / "go").touch()
    assert run.wait() == 0, run.output()
    assert (tmp_path / "psql.txt").read_text().strip() == "1"  # the env alone reached the server


# ---------------------------------------------------------------------------- production guard


def test_refused_guard_runs_nothing_and_records_nothing(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """A production rollback without confirmation: exit 5, no command, no history row, and
    (docs/reliability.md, section 7) no connection: the first test of test_down.py shows it
    with a host that does not even resolve."""
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"], rollback=["touch ran"])
    assert run_cli("up", "-c", cfg, "-D", pg_url).returncode == 0
    before = history_rows(pg_url, app_db)
    for args in (
        ["--production"],
        ["--production", "--output", "json"],
        ["--production", "--confirm", "nope"],
    ):
        result = run_cli("down", "-c", cfg, "-D", pg_url, *args)
        assert result.returncode == 5, result.stdout + result.stderr
    assert not (tmp_path / "ran").exists()
    assert history_rows(pg_url, app_db) == before


# ---------------------------------------------------------------------------- 6. SSL


@pytest.fixture
def ssl_cluster(own_cluster: ClusterFactory, reachable_tmp: Path) -> tuple[Cluster, Path]:
    """A cluster that refuses non-SSL connections, with a self-signed certificate for localhost."""
    from dbos_migrate import localpg

    try:
        localpg.find_binaries(require_ssl=True)
        cert, key = make_self_signed_cert(reachable_tmp, cn="localhost")
    except (LocalPostgresError, FileNotFoundError) as exc:
        skip_or_fail(f"no SSL-capable PostgreSQL or openssl: {exc}")
    cluster = own_cluster(ssl=(cert, key), extra_hba=["hostnossl all all all reject"])
    return cluster, cert


# Records the environment and proves the command itself reaches the server over SSL.
SSL_PROBE = 'env > env.txt; psql -Atc "select ssl from pg_stat_ssl where pid = pg_backend_pid()" > ssl.txt'


def _command_env(directory: Path) -> dict[str, str]:
    lines = (directory / "env.txt").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines if "=" in line)


def test_sslmode_require(tmp_path: Path, ssl_cluster: tuple[Cluster, Path]) -> None:
    cluster, _ = ssl_cluster
    cfg = write_config(tmp_path, app_db_name="ssl_app", migrate=[SSL_PROBE])
    result = run_cli("up", "-c", cfg, "-D", cluster.url() + "?sslmode=require", env={"PGSSLMODE": None})
    assert result.returncode == 0, result.stdout + result.stderr
    assert _command_env(tmp_path)["PGSSLMODE"] == "require"
    assert (tmp_path / "ssl.txt").read_text().strip() == "t"
    # Without SSL the server refuses: the require really mattered.
    plain = run_cli("up", "-c", cfg, "-D", cluster.url() + "?sslmode=disable")
    assert plain.returncode == 3 and "pg_hba.conf" in plain.stderr, plain.stdout + plain.stderr


def test_sslmode_verify_full_with_root_cert(tmp_path: Path, ssl_cluster: tuple[Cluster, Path]) -> None:
    cluster, cert = ssl_cluster
    cfg = write_config(tmp_path, app_db_name="ssl_app", migrate=[SSL_PROBE])
    url = cluster.url(host="localhost") + f"?sslmode=verify-full&sslrootcert={quote(str(cert))}"
    result = run_cli("up", "-c", cfg, "-D", url, env={"PGSSLMODE": None, "PGSSLROOTCERT": None})
    assert result.returncode == 0, result.stdout + result.stderr
    env = _command_env(tmp_path)
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == str(cert)
    assert (tmp_path / "ssl.txt").read_text().strip() == "t"


def test_sslmode_verify_full_with_wrong_root_cert_exits_3(
    tmp_path: Path, ssl_cluster: tuple[Cluster, Path], reachable_tmp: Path
) -> None:
    cluster, _ = ssl_cluster
    other = reachable_tmp / "other"
    other.mkdir()
    wrong_cert, _ = make_self_signed_cert(other, cn="localhost")  # same name, another key
    cfg = write_config(tmp_path, app_db_name="ssl_app", migrate=["touch ran"])
    url = cluster.url(host="localhost") + f"?sslmode=verify-full&sslrootcert={quote(str(wrong_cert))}"
    result = run_cli("up", "-c", cfg, "-D", url)
    assert result.returncode == 3, result.stdout + result.stderr
    assert "certificate verify failed" in result.stderr
    assert not (tmp_path / "ran").exists()


def _legacy_config(directory: Path, port: int, ca: Path, migrate: list[str]) -> Path:
    import json

    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "dbos-config.yaml"
    lines = [
        "name: legacy-ssl-app",
        "database:",
        "  app_db_name: legacy_ssl_app",
        "  hostname: localhost",
        f"  port: {port}",
        "  username: postgres",
        f"  password: {json.dumps(PASSWORD)}",
        "  ssl: true",
        f"  ssl_ca: {json.dumps(str(ca))}",
        "  migrate:",
        *(f"    - {json.dumps(c)}" for c in migrate),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


LEGACY_ENV: dict[str, str | None] = {
    name: None
    for name in (
        "DBOS_DATABASE_URL",
        "DBOS__CLOUD",
        "DBOS_DBHOST",
        "DBOS_DBPORT",
        "DBOS_DBUSER",
        "DBOS_DBPASSWORD",
        "PGSSLMODE",
        "PGSSLROOTCERT",
    )
}


def test_legacy_ssl_fields_reach_psycopg_and_the_commands(
    tmp_path: Path, ssl_cluster: tuple[Cluster, Path], reachable_tmp: Path
) -> None:
    cluster, cert = ssl_cluster
    port = cluster.port
    cfg = _legacy_config(tmp_path, port, cert, [SSL_PROBE])
    result = run_cli("up", "-c", cfg, env=LEGACY_ENV)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "legacy fields" in result.stdout
    env = _command_env(tmp_path)
    assert env["PGSSLMODE"] == "verify-full" and env["PGSSLROOTCERT"] == str(cert)
    assert env["PGHOST"] == "localhost" and env["PGPORT"] == str(port)
    assert (tmp_path / "ssl.txt").read_text().strip() == "t"
    assert_no_password(result.stdout + result.stderr, PASSWORD, "the output")

    # ssl_ca reaches dbos-migrate's own connection: a CA that did not sign the server's
    # certificate fails verification before anything runs.
    other = reachable_tmp / "other"
    other.mkdir()
    wrong_cert, _ = make_self_signed_cert(other, cn="localhost")
    bad = _legacy_config(tmp_path / "bad", port, wrong_cert, ["touch ran"])
    refused = run_cli("up", "-c", bad, env=LEGACY_ENV)
    assert refused.returncode == 3, refused.stdout + refused.stderr
    assert "certificate verify failed" in refused.stderr
    assert not (tmp_path / "bad" / "ran").exists()
