"""`postgres start` with no port when 5432 is taken by a server we did not start.

On this project's machines the system PostgreSQL holds 127.0.0.1:5432; elsewhere the test holds
it with a listening socket of its own, so the situation is the same everywhere and nothing
outside the test is touched.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pgharness import cli_command, cli_env, run_cli

from dbos_migrate import localpg
from dbos_migrate.localpg.base import port_in_use


@pytest.fixture
def default_port_taken() -> Iterator[None]:
    """127.0.0.1:5432 held by something that is not ours: the machine's server, else a socket."""
    if port_in_use(localpg.DEFAULT_PORT):
        yield
        return
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", localpg.DEFAULT_PORT))
        sock.listen()
        yield


@pytest.fixture
def home(reachable_tmp: Path) -> Iterator[Path]:
    """A fresh DBOS_MIGRATE_HOME; whatever the test started in it is stopped afterwards."""
    path = reachable_tmp / "home"
    yield path
    for portdir in (path / "postgres").glob("[0-9]*"):
        localpg.stop(int(portdir.name), path)


def cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli("postgres", *args, env={"DBOS_MIGRATE_HOME": str(home), "PGPORT": None}, timeout=180)


def test_start_moves_to_a_free_port_and_status_stop_follow(default_port_taken: None, home: Path) -> None:
    assert "not started by dbos-migrate" in cli(home, "status").stdout  # not "not running"
    started = cli(home, "start")
    assert started.returncode == 0, started.stdout + started.stderr
    assert "Port 5432 is taken by a server dbos-migrate did not start" in started.stdout
    match = re.search(
        r"^  export DBOS_DATABASE_URL=(postgresql://postgres:dbos@localhost:(\d+)/postgres)$", started.stdout, re.M
    )
    assert match, started.stdout
    url, port = match.group(1), int(match.group(2))
    assert port != localpg.DEFAULT_PORT
    assert f"url:       postgresql://postgres:***@localhost:{port}" in started.stdout
    with psycopg.connect(url, connect_timeout=10, autocommit=True) as conn:
        conn.execute("create table kept (x int)")

    found = localpg.running_server({"DBOS_MIGRATE_HOME": str(home)})
    assert found is not None and found.port == port and found.running
    assert found.url == f"postgresql://postgres:dbos@localhost:{port}"

    status = cli(home, "status")
    assert status.returncode == 0 and f"PostgreSQL on port {port}: running" in status.stdout
    again = cli(home, "start")
    assert again.returncode == 0 and "already running" in again.stdout and f"port {port}:" in again.stdout

    stopped = cli(home, "stop")
    assert stopped.returncode == 0 and stopped.stdout.strip() == f"PostgreSQL on port {port}: stopped"
    assert localpg.running_server({"DBOS_MIGRATE_HOME": str(home)}) is None
    status = cli(home, "status")
    assert status.returncode == 1 and f"PostgreSQL on port {port}: not running" in status.stdout

    # The next start comes back on the same port, with the same data.
    restarted = cli(home, "start")
    assert restarted.returncode == 0 and f"localhost:{port}/postgres" in restarted.stdout
    with psycopg.connect(url, connect_timeout=10) as conn:
        conn.execute("select * from kept")
    assert cli(home, "stop").returncode == 0


def test_export_line_works_for_up(default_port_taken: None, home: Path, tmp_path: Path) -> None:
    started = cli(home, "start")
    assert started.returncode == 0, started.stdout + started.stderr
    export = next(line.strip() for line in started.stdout.splitlines() if "export " in line)
    cfg = tmp_path / "dbos-config.yaml"
    cfg.write_text("name: moved-port-app\ndatabase:\n  migrate:\n    - 'true'\n")
    env = {k: None for k in ("PGHOST", "PGPORT", "PGUSER", "PGPASSWORD", "DBOS_DATABASE_URL")}
    script = f'{export} && exec "$@"'
    up = subprocess.run(
        ["sh", "-c", script, "sh", *cli_command(), "up", "-c", str(cfg)],
        env=cli_env({**env, "DBOS_MIGRATE_HOME": str(home)}),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert up.returncode == 0, up.stdout + up.stderr
    assert "moved_port_app created" in up.stdout


def test_explicit_port_that_is_taken_stays_an_error(default_port_taken: None, home: Path) -> None:
    for result in (
        cli(home, "start", "--port", "5432"),
        run_cli("postgres", "start", env={"DBOS_MIGRATE_HOME": str(home), "PGPORT": "5432"}),
    ):
        assert result.returncode == 3, result.stdout + result.stderr
        assert "5432 on 127.0.0.1 is already in use" in result.stderr
    assert not (home / "postgres" / "5432" / "data").exists()  # refused before any initdb


def test_stop_leaves_a_server_it_did_not_start_alone(default_port_taken: None, home: Path) -> None:
    stopped = cli(home, "stop")
    assert stopped.returncode == 0
    assert "not started by dbos-migrate" in stopped.stdout and "left alone" in stopped.stdout
    assert port_in_use(localpg.DEFAULT_PORT)


def test_running_server_reads_the_given_environment(home: Path, reachable_tmp: Path) -> None:
    assert localpg.running_server({"DBOS_MIGRATE_HOME": str(home)}) is None  # nothing recorded
    port = localpg.free_port()
    localpg.start(port, home, backend="local")
    assert localpg.running_server({"DBOS_MIGRATE_HOME": str(reachable_tmp / "elsewhere")}) is None
    server = localpg.running_server({"DBOS_MIGRATE_HOME": str(home)})
    assert server is not None and server.port == port
    # A record others could have written must not pick our target (docs/security.md).
    records = home / "postgres"
    records.chmod(records.stat().st_mode | 0o002)
    assert localpg.running_server({"DBOS_MIGRATE_HOME": str(home)}) is None
    records.chmod(records.stat().st_mode & ~0o002)
    # Killed behind our back: the record says running, the server does not run.
    cluster = localpg.Cluster(home / "postgres" / str(port) / "data", port)
    cluster.kill()
    assert localpg.running_server({"DBOS_MIGRATE_HOME": str(home)}) is None


def test_running_server_is_import_light(home: Path) -> None:
    """It runs on every `dbos-migrate up`: no database driver, no subprocess, no tempfile."""
    code = (
        "import sys\n"
        "from dbos_migrate import localpg\n"
        f"assert localpg.running_server({{'DBOS_MIGRATE_HOME': {str(home)!r}}}) is None\n"
        "print(sorted({'psycopg', 'subprocess', 'tempfile', 'socket'} & set(sys.modules)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
