"""The holes a hostile review found, each proven closed against real PostgreSQL and the real CLI
(docs/security.md, docs/reliability.md). Every test here failed on dbos-migrate 0.1.0, except
the unset-variable check, which guards that 0.1.0's behaviour survived leaving `${VAR}` to the shell."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest
from helpers import history_rows, one_json, query, write_config
from pgharness import ClusterFactory, cli_command, cli_env, invoke, start_standby, with_user

DEADLINE = 60.0


def wait_for(path: Path, timeout: float = DEADLINE) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < deadline, f"timed out waiting for {path}"
        time.sleep(0.02)


def background(
    args: list[object], tmp: Path, name: str, env: dict[str, str | None] | None = None
) -> subprocess.Popen[bytes]:
    out = (tmp / f"{name}.out").open("wb")
    return subprocess.Popen(
        [*cli_command(), *map(str, args)],
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=subprocess.STDOUT,
        env=cli_env(env),
    )


# ---------------------------------------------------------------------------- the lock's session


def wait_until_idle_longer_than_timeout_or_gone(pg_url: str, app_db: str) -> None:
    """Until the lock holder's session has sat idle past idle_session_timeout (1 s), or is gone."""
    from dbos_migrate.engine.database import LOCK_CLASS, lock_key

    deadline = time.monotonic() + DEADLINE
    while time.monotonic() < deadline:
        rows = query(
            pg_url,
            """SELECT extract(epoch FROM now() - a.state_change) FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                WHERE l.locktype = 'advisory' AND l.classid = %s AND l.objid = %s AND l.granted""",
            (LOCK_CLASS, lock_key(app_db)),
        )
        if not rows or float(rows[0][0]) > 1.5:
            return
        time.sleep(0.05)
    raise AssertionError("the lock holder neither outlived idle_session_timeout nor went away")


def test_idle_session_timeout_cannot_end_the_lock_session(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """With idle_session_timeout = 1s on the deploy role, the first run's lock session used to
    be killed while its command ran, and a second run started on top of it.

    No timing is assumed: the first run's command holds until the test says go, which it
    does only once the lock session has sat idle past the timeout (or is gone) and the second
    run has either reported waiting for the lock or started its command (the bug)."""
    role = f"deployer_{app_db}"
    marks, go = tmp_path / "marks", tmp_path / "go"
    a = write_config(
        tmp_path / "a",
        app_db_name=app_db,
        migrate=[f"echo a-start >> {marks}; while [ ! -e {go} ]; do sleep 0.02; done; echo a-end >> {marks}"],
    )
    b = write_config(tmp_path / "b", app_db_name=app_db, migrate=[f"echo b-start >> {marks}"])

    def marked() -> list[str]:
        return marks.read_text().split() if marks.exists() else []

    try:
        query(pg_url, f"CREATE ROLE \"{role}\" LOGIN CREATEDB PASSWORD 'deploy-pw'")
        query(pg_url, f"ALTER ROLE \"{role}\" SET idle_session_timeout = '1s'")
        url = with_user(pg_url, role, "deploy-pw")
        first = background(["up", "-c", a, "-D", url, "--system-db", "skip"], tmp_path, "a")
        deadline = time.monotonic() + DEADLINE
        while "a-start" not in marked():
            assert time.monotonic() < deadline and first.poll() is None, (tmp_path / "a.out").read_text()
            time.sleep(0.02)
        wait_until_idle_longer_than_timeout_or_gone(pg_url, app_db)
        second = background(["up", "-c", b, "-D", url, "--system-db", "skip", "--lock-timeout", "60"], tmp_path, "b")
        deadline = time.monotonic() + DEADLINE
        while "waiting for the migration lock" not in (tmp_path / "b.out").read_text() and "b-start" not in marked():
            assert time.monotonic() < deadline and second.poll() is None, (tmp_path / "b.out").read_text()
            time.sleep(0.02)
        go.touch()
        assert first.wait(DEADLINE) == 0, (tmp_path / "a.out").read_text()
        assert second.wait(DEADLINE) == 0, (tmp_path / "b.out").read_text()
        assert marked() == ["a-start", "a-end", "b-start"]  # never overlapped
    finally:
        for db in (app_db,):
            query(pg_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        query(pg_url, f'DROP ROLE IF EXISTS "{role}"')


def test_a_lock_lost_while_a_command_ran_is_exit_3_and_recorded(tmp_path: Path, own_cluster: ClusterFactory) -> None:
    """A server restart during the only command used to end in `succeeded`, exit 0. The run's
    lease was held throughout (docs/reliability.md, section 1b), so the message and the row's
    note say that no other run overlapped it (before the lease: "may have overlapped")."""
    cluster = own_cluster()
    url = cluster.url(dbname="postgres")
    go, started = tmp_path / "go", tmp_path / "started"
    cfg = write_config(
        tmp_path, app_db_name="restart_app", migrate=[f"touch {started}; while [ ! -e {go} ]; do sleep 0.05; done"]
    )
    run = background(["up", "-c", cfg, "-D", url, "-o", "json", "--system-db", "skip"], tmp_path, "run")
    wait_for(started)
    cluster.restart()
    go.touch()
    assert run.wait(DEADLINE) == 3
    doc = one_json(_json_of(tmp_path / "run.out"))
    assert doc["error"]["code"] == "lock_lost"
    assert "no other run overlapped" in doc["error"]["message"]
    (row,) = history_rows(url, "restart_app")
    assert row["status"] == "succeeded" and "no other run overlapped" in (row["note"] or "")


def _json_of(path: Path) -> str:
    """The JSON document in a file that also holds the commands' output (stderr merged)."""
    text = path.read_text()
    return text[text.index("{\n") :]


# ---------------------------------------------------------------------------- the production guard


@pytest.mark.parametrize(
    ("db_url", "env"),
    [
        ("postgresql://u:pw@localhost:6545/postgres?hostaddr=192.0.2.2", {}),
        ("postgresql://u:pw@:6545/postgres", {"PGHOST": "192.0.2.2"}),
        ("postgresql://u:pw@localhost:6545/postgres", {"PGHOSTADDR": "192.0.2.2"}),
    ],
)
def test_a_remote_address_behind_localhost_is_production(tmp_path: Path, db_url: str, env: dict[str, str]) -> None:
    cfg = write_config(tmp_path, app_db_name="guarded", rollback=[f"touch {tmp_path / 'ran'}"])
    result = invoke("down", "-c", cfg, "-D", db_url, env={**env, "PGCONNECT_TIMEOUT": "2"})
    assert result.returncode == 5, result.stdout + result.stderr
    assert "192.0.2.2" in result.stdout + result.stderr
    assert not (tmp_path / "ran").exists()


# ---------------------------------------------------------------------------- hostile or broken servers and outputs


def test_a_hot_standby_is_refused_before_anything(
    tmp_path: Path, own_cluster: ClusterFactory, reachable_tmp: Path
) -> None:
    primary = own_cluster(extra_hba=["host replication all 127.0.0.1/32 scram-sha-256"])
    standby = start_standby(primary, reachable_tmp)
    try:
        cfg = write_config(tmp_path, app_db_name="on_standby", migrate=[f"touch {tmp_path / 'ran'}"])
        result = invoke("up", "-c", cfg, "-D", standby.url(dbname="postgres"))
        assert result.returncode == 3, result.stdout + result.stderr
        assert "read-only standby" in result.stderr
        assert not (tmp_path / "ran").exists()
        with psycopg.connect(primary.url(dbname="postgres")) as conn:  # nothing was created upstream either
            assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'on_standby'").fetchone() is None
    finally:
        standby.remove()


PEAK_RSS = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=120).returncode
print(code, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
"""


@pytest.mark.parametrize("kind", ["sparse 3 GB file", "/dev/zero"])
def test_a_huge_or_endless_config_is_refused_before_it_is_read(tmp_path: Path, kind: str) -> None:
    path = Path("/dev/zero")
    if kind.startswith("sparse"):
        path = tmp_path / "dbos-config.yaml"
        with path.open("wb") as fh:
            fh.truncate(3 * 1024**3)
    out = subprocess.run(
        [sys.executable, "-c", PEAK_RSS, *cli_command(), "validate", "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=180,
        env=cli_env(),
    )
    code, rss_kb = map(int, out.stdout.split())
    assert code == 2
    assert rss_kb < 200 * 1024  # read no more than the limit, never the whole file


def test_a_closed_stdout_never_aborts_the_migration(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """`dbos-migrate up | head -1`: the pipe closes early; the run must finish and be recorded."""
    done = tmp_path / "done"
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["seq 1 200000", f"touch {done}"])
    proc = subprocess.Popen(
        [*cli_command(), "up", "-c", str(cfg), "-D", pg_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
        env=cli_env(),
    )
    assert proc.stdout is not None
    proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does
    assert proc.wait(DEADLINE) == 0
    assert done.exists()
    assert [r["status"] for r in history_rows(pg_url, app_db)] == ["succeeded", "succeeded"]
    assert proc.stderr is not None and b"Traceback" not in proc.stderr.read()


def test_a_variable_in_a_command_is_never_spliced_into_shell_code(tmp_path: Path, pg_url: str, app_db: str) -> None:
    hostile = 'main"; touch injected; echo "'
    cfg = write_config(
        tmp_path, app_db_name=app_db, migrate=['echo "deploying ${GIT_REF}"', 'echo "${UNSET_OK:-fallback}"']
    )
    result = invoke("up", "-c", cfg, "-D", pg_url, env={"GIT_REF": hostile})
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "injected").exists()
    assert f"deploying {hostile}" in result.stdout and "fallback" in result.stdout


def test_a_docker_secret_is_substituted_shell_quoted_and_scrubbed(tmp_path: Path, pg_url: str, app_db: str) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text("'; touch pwned; echo 'Sekr3t\n")
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["echo token=${DOCKER_SECRET:token}"])
    result = invoke("up", "-c", cfg, "-D", pg_url, env={"DBOS_MIGRATE_SECRETS_DIR": str(secrets)})
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / "pwned").exists()
    assert "token=***" in result.stdout and "Sekr3t" not in result.stdout + result.stderr
    assert all("Sekr3t" not in json.dumps(r, default=str) for r in history_rows(pg_url, app_db))


def test_shell_behaviour_of_unset_variables_is_checked_before_anything_runs(
    tmp_path: Path, pg_url: str, app_db: str
) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[f"touch {tmp_path / 'first'}", "echo ${NOT_SET_HERE}"])
    result = invoke("up", "-c", cfg, "-D", pg_url, env={"NOT_SET_HERE": None})
    assert result.returncode == 2 and "${NOT_SET_HERE}" in result.stderr
    assert not (tmp_path / "first").exists()


# ---------------------------------------------------------------------------- text that could drive a terminal

CONTROL = "\x1b]0;pwned\x07\x1b[2J\u202eevil"


class HostileServer:
    """A socket that speaks just enough of PostgreSQL's protocol to answer every connection
    with an error whose text is `message`: what a hostile or compromised server can send."""

    def __init__(self, message: str) -> None:
        import socket
        import threading

        self.message = message
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port: int = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import struct

        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                while True:
                    head = conn.recv(8)
                    if len(head) < 8:
                        break
                    length, code = struct.unpack("!ii", head)
                    if length == 8 and code in (80877103, 80877104):  # SSLRequest, GSSENCRequest
                        conn.sendall(b"N")
                        continue
                    conn.recv(length - 8)
                    fields = b"SFATAL\0VFATAL\0C28000\0M" + self.message.encode() + b"\0\0"
                    conn.sendall(b"E" + struct.pack("!i", len(fields) + 4) + fields)
                    break

    def close(self) -> None:
        self.sock.close()


def test_a_hostile_server_message_cannot_drive_the_terminal(tmp_path: Path) -> None:
    server = HostileServer(f"no such role{CONTROL}")
    try:
        cfg = write_config(tmp_path, app_db_name="hostile_text", migrate=[f"touch {tmp_path / 'ran'}"])
        url = f"postgresql://someone@127.0.0.1:{server.port}/postgres?sslmode=disable"
        result = invoke("up", "-c", cfg, "-D", url, "--system-db", "skip")
    finally:
        server.close()
    assert result.returncode == 3, result.stdout + result.stderr
    assert "no such role" in result.stderr
    assert "\\x1b]0;pwned\\x07" in result.stderr  # shown, escaped
    for char in ("\x1b", "\x07", "\u202e"):
        assert char not in result.stdout + result.stderr
    assert not (tmp_path / "ran").exists()


def test_a_hostile_history_row_cannot_drive_the_terminal(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """Anyone who can write to the app database can write its history table."""
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    assert invoke("up", "-c", cfg, "-D", pg_url, "--system-db", "skip").returncode == 0
    query(pg_url, "UPDATE dbos_migrate.history SET command = %s, note = %s, os_user = %s", (CONTROL,) * 3, app_db)
    ((run_id,),) = query(pg_url, "SELECT run_id::text FROM dbos_migrate.history", (), app_db)
    for args in (["history"], ["history", "--run", run_id], ["status"]):
        result = invoke(*args, "-c", cfg, "-D", pg_url)
        assert result.returncode == 0, result.stdout + result.stderr
        for char in ("\x1b", "\x07", "\u202e"):
            assert char not in result.stdout + result.stderr, args
    assert "\\x1b]0;pwned" in invoke("history", "-c", cfg, "-D", pg_url).stdout
