"""Runs never overlap when the lock's session dies, ride out restarts, and print one JSON
document whatever the instant of a signal (docs/reliability.md, sections 4, 5 and 11).

Ordering is read from marker lines the commands append to one shared file, never from
timings; every wait is on a condition (a file, a line of output, a session in pg_locks).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from helpers import history_rows, one_json, query, write_config
from jsonschema import Draft202012Validator
from pgharness import ClusterFactory, cli_command, cli_env, with_dbname
from test_reliability import Running, background_clis, wait_until

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "output.schema.json").read_text())

# Command of the first run: log its start, wait for the test's `go`, log its end.
FIRST = (
    "echo first-start >> ../order; touch started; while [ ! -e go ]; do sleep 0.05; done; echo first-end >> ../order"
)
SECOND = "echo second-start >> ../order"


@pytest.fixture
def background() -> Iterator[Callable[..., Running]]:
    yield from background_clis()


def _order(base: Path) -> list[str]:
    path = base / "order"
    return path.read_text().split() if path.exists() else []


def _lock_backend(url: str, app_db: str) -> int | None:
    rows = query(
        url,
        """SELECT l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
            WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 AND d.datname = %s""",
        (app_db,),
    )
    return int(rows[0][0]) if rows else None  # type: ignore[call-overload]


def _two_dirs(tmp_path: Path, app_db: str, *, second: str = SECOND) -> tuple[Path, Path, Path, Path]:
    one, two = tmp_path / "one", tmp_path / "two"
    return (
        one,
        two,
        write_config(one, app_db_name=app_db, migrate=[FIRST]),
        write_config(two, app_db_name=app_db, migrate=[second]),
    )


def test_a_killed_lock_session_lets_no_second_run_start_before_the_first_command_ends(
    tmp_path: Path, pg_url: str, app_db: str, background: Callable[..., Running]
) -> None:
    """pg_terminate_backend of the lock's session while command 1 runs: a second run takes
    the advisory lock at once, but must wait for the first run's lease, so its command starts
    only after the first run's command has ended; it says whose lease it waited for."""
    one, two, cfg1, cfg2 = _two_dirs(tmp_path, app_db)
    first = background(one, ["up", "-c", cfg1, "-D", pg_url, "--system-db", "skip"], name="first")
    first.wait_for(lambda: (one / "started").exists(), "the first run's command to start")
    holder = _lock_backend(pg_url, app_db)
    assert holder is not None
    query(pg_url, "SELECT pg_terminate_backend(%s)", (holder,))
    wait_until(lambda: _lock_backend(pg_url, app_db) != holder, "the lock session to end")

    second = background(
        two, ["up", "-c", cfg2, "-D", pg_url, "--system-db", "skip", "--lock-timeout", "120"], name="second"
    )
    # Either the second run waits for the lease (fixed) or its command runs at once (broken).
    wait_until(
        lambda: (
            "waiting for the lease" in second.output()
            or "second-start" in _order(tmp_path)
            or second.proc.poll() is not None
        ),
        "the second run to wait for the lease or to run its command",
    )
    (one / "go").touch()
    assert first.wait() == 3, first.output()
    assert second.wait() == 0, second.output()
    assert _order(tmp_path) == ["first-start", "first-end", "second-start"], second.output()
    assert "no other run overlapped" in first.stderr and "may have overlapped" not in first.output()
    assert f"pid {first.pid}" in second.output() and "waited" in second.output()
    assert [r["status"] for r in history_rows(pg_url, app_db)] == ["succeeded", "succeeded"]


def test_a_sigkilled_holder_whose_machine_is_gone_frees_the_app_when_its_lease_expires(
    tmp_path: Path, pg_url: str, app_db: str, background: Callable[..., Running]
) -> None:
    """The holder is SIGKILLed and its row is made to look like another machine's (whose
    processes nobody here can see): the next run waits until the lease's TTL has passed by
    the server's clock, then runs, saying it waited for an expired lease."""
    one, two, cfg1, cfg2 = _two_dirs(tmp_path, app_db)
    # A TTL long enough for the second run to start while the lease is still live, even on a
    # loaded machine; its expiry is what the second run must wait for.
    first = background(one, ["up", "-c", cfg1, "-D", pg_url, "--system-db", "skip", "--lease-ttl", "15"], name="first")
    first.wait_for(lambda: (one / "started").exists(), "the first run's command to start")
    os.kill(first.pid, signal.SIGKILL)
    first.proc.wait()
    wait_until(lambda: _lock_backend(pg_url, app_db) is None, "the killed holder's lock session to end")
    app_url = with_dbname(pg_url, app_db)
    query(app_url, "UPDATE dbos_migrate.lease SET host_id = 'a machine that is gone'")
    live = query(app_url, "SELECT expires_at > clock_timestamp() FROM dbos_migrate.lease")
    assert live == [(True,)], "the lease must still be live when the second run starts"

    second = background(two, ["up", "-c", cfg2, "-D", pg_url, "--system-db", "skip", "--lease-ttl", "3"], name="second")
    assert second.wait() == 0, second.output()
    assert "waiting for the lease" in second.output(), second.output()
    assert "(it expired)" in second.output(), second.output()
    assert _order(tmp_path)[-1] == "second-start"


def test_a_run_waiting_for_the_lock_rides_out_a_server_restart(
    tmp_path: Path, own_cluster: ClusterFactory, background: Callable[..., Running]
) -> None:
    """The second run has run nothing: when the server restarts it reconnects within --wait,
    waits for the lock and the first run's lease again, and runs after the first run's command."""
    cluster = own_cluster()
    url = cluster.url()
    one, two, cfg1, cfg2 = _two_dirs(tmp_path, "restart_app")
    first = background(one, ["up", "-c", cfg1, "-D", url, "--system-db", "skip"], name="first")
    first.wait_for(lambda: (one / "started").exists(), "the first run's command to start")
    second = background(two, ["up", "-c", cfg2, "-D", url, "--system-db", "skip", "--wait", "60"], name="second")
    second.wait_for(lambda: "waiting for the migration lock" in second.stdout, "the second run to wait for the lock")

    cluster.restart()
    second.wait_for(lambda: "waiting for the lease" in second.output(), "the second run to wait for the lease")
    (one / "go").touch()
    assert first.wait() == 3, first.output()
    assert second.wait() == 0, second.output()
    assert _order(tmp_path) == ["first-start", "first-end", "second-start"]
    assert "no other run overlapped" in first.stderr


def test_history_is_retried_until_the_server_is_back(
    tmp_path: Path, own_cluster: ClusterFactory, background: Callable[..., Running]
) -> None:
    """The server is down when the command ends: the run retries, says so, and writes the
    row once the server is back (it used to try once and give up)."""
    cluster = own_cluster()
    url = cluster.url()
    cfg = write_config(
        tmp_path, app_db_name="history_app", migrate=["touch started; while [ ! -e go ]; do sleep 0.05; done"]
    )
    run = background(tmp_path, ["up", "-c", cfg, "-D", url, "--system-db", "skip", "--wait", "120"])
    run.wait_for(lambda: (tmp_path / "started").exists(), "the command to start")
    cluster.stop()
    (tmp_path / "go").touch()
    run.wait_for(lambda: "history: retrying" in run.output(), "the run to say it retries history")
    cluster.start()
    assert run.wait(150) == 3, run.output()
    assert "history not recorded" not in run.output()
    assert [(r["command_index"], r["status"]) for r in history_rows(url, "history_app")] == [(1, "succeeded")]


def _catches(pid: int, signum: int) -> bool:
    """Whether process `pid` has a handler installed for `signum` (SigCgt in /proc): the
    earliest instant at which a signal can be anything but the default action."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("SigCgt:"):
                return bool(int(line.split()[1], 16) & (1 << (signum - 1)))
    except (FileNotFoundError, ProcessLookupError):
        return True  # gone: let communicate() report it
    return False


def test_a_sigterm_at_the_first_instant_still_prints_one_json_document(tmp_path: Path) -> None:
    """SIGTERM arrives as soon as the process catches it at all, before the command line is
    even loaded: exit 143 and one JSON document that validates against the schema. (SIGINT
    has no such instant to test: the interpreter itself catches it from its start.)"""
    signum = signal.SIGTERM
    write_config(tmp_path, app_db_name="never_created", migrate=["true"])
    proc = subprocess.Popen(
        [*cli_command(), "up", "-o", "json", "-D", "postgresql://nobody@127.0.0.1:1/"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env=cli_env(),
    )
    try:
        wait_until(lambda: _catches(proc.pid, signum), "the process to catch the signal")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 128 + signum, err
    doc = one_json(out)
    errors = list(Draft202012Validator({"$ref": "#/$defs/run", "$defs": SCHEMA["$defs"]}).iter_errors(doc))
    assert not errors, errors
    assert doc["ok"] is False and doc["error"]["code"] == "interrupted"
