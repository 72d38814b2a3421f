"""Tests of dbos_migrate.localpg against real PostgreSQL processes, and of the pytest harness."""

from __future__ import annotations

import os
import socket
import stat
import subprocess
import time
from pathlib import Path

import psycopg
import pytest
from pgharness import (
    PASSWORD,
    ClusterFactory,
    check_connect,
    cluster_processes,
    drop_database,
    find_instance,
    run_cli,
    ssl_cert_or_skip,
    with_dbname,
)

from dbos_migrate import localpg
from dbos_migrate.localpg import Cluster, LocalPostgresError
from dbos_migrate.localpg.base import pid_alive

RUN_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0


def _refused(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError:
        return True
    return False


def _all_gone(pids: dict[int, str], within: float = 30.0) -> bool:
    """Whether every one of these processes (of one cluster) has exited (zombies count as gone).

    The keeper (the postmaster's parent) exits on its own once the postmaster is gone, a moment
    after `stop` returns: wait for that condition, bounded, rather than sample it once."""
    deadline = time.monotonic() + within
    while [pid for pid in pids if pid_alive(pid)]:
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


# ---------------------------------------------------------------- pure helpers


def test_free_port_is_bindable() -> None:
    port = localpg.free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))  # raises if the port were taken
        assert sock.getsockname() == ("127.0.0.1", port)


def test_default_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert localpg.default_home({"DBOS_MIGRATE_HOME": str(tmp_path)}) == tmp_path
    xdg = tmp_path / "xdg"
    home = localpg.default_home({"XDG_DATA_HOME": str(xdg)})
    if RUN_AS_ROOT:
        # tmp_path is under pytest's 0700 directory: the postgres user cannot reach it
        assert home == localpg.ROOT_FALLBACK_HOME
        reachable = Path("/tmp") / "xdg-never-created"
        assert localpg.default_home({"XDG_DATA_HOME": str(reachable)}) == reachable / "dbos-migrate"
    else:
        assert home == xdg / "dbos-migrate"


def test_candidate_binaries_found() -> None:
    found = localpg.candidate_binaries()
    assert found, "no PostgreSQL binaries on this machine"
    for b in found:
        assert b.major >= 10
        assert b.source in (localpg.BACKEND_PACKAGE, localpg.BACKEND_SYSTEM)
        assert (b.bindir / "postgres").exists()
    best = localpg.find_binaries()
    assert best == found[0] or not found[0].reachable_by(None)


def test_find_binaries_error_has_hint() -> None:
    with pytest.raises(LocalPostgresError) as info:
        localpg.find_binaries(major=3)
    assert "PostgreSQL 3" in info.value.message
    assert info.value.hint and "pip install" in info.value.hint


def test_error_carries_hint() -> None:
    err = LocalPostgresError("boom", hint="do this")
    assert str(err) == "boom" and err.hint == "do this"


# ---------------------------------------------------------------- start / status / stop


def test_start_status_stop(reachable_tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = reachable_tmp / "home"
    monkeypatch.setenv("DBOS_MIGRATE_HOME", str(home))
    port = localpg.free_port()
    assert localpg.default_home() == home

    before = localpg.status(port)
    assert not before.running and before.backend is None

    try:
        started = localpg.start(port, backend="local")
        assert started.changed and started.running
        assert started.url == f"postgresql://postgres:dbos@localhost:{port}"
        assert started.datadir == home / "postgres" / str(port) / "data"
        assert started.backend in (localpg.BACKEND_PACKAGE, localpg.BACKEND_SYSTEM)
        with psycopg.connect(started.url, connect_timeout=5) as conn:
            assert conn.execute("select current_user").fetchone() == ("postgres",)
            conn.execute("create table kept (x int)")
        # scram over TCP: a wrong password is refused
        assert _refused(f"postgresql://postgres:wrong@localhost:{port}")
        if RUN_AS_ROOT:
            assert started.datadir is not None and started.datadir.stat().st_uid != 0

        again = localpg.start(port, home, backend="auto")
        assert not again.changed and again.running and again.url == started.url

        st = localpg.status(port, home)
        assert st.running and st.backend == started.backend
        assert st.masked_url == f"postgresql://postgres:***@localhost:{port}"
        assert ":dbos@" not in st.describe() and "running" in st.describe()
        assert str(st.datadir) in st.describe()

        processes = cluster_processes(Cluster(home / "postgres" / str(port) / "data", port))
        assert len(processes) >= 3  # keeper, postmaster, at least one auxiliary process
        stopped = localpg.stop(port, home)
        assert stopped.changed and not stopped.running
        assert _refused(started.url)
        assert _all_gone(processes)
        after = localpg.status(port, home)
        assert not after.running and "not running" in after.describe()
        assert not localpg.stop(port, home).changed

        # a second start reuses the data
        assert localpg.start(port, home).changed
        with psycopg.connect(started.url, connect_timeout=5) as conn:
            conn.execute("select * from kept")
    finally:
        localpg.stop(port, home)


def test_start_refuses_a_busy_port(reachable_tmp: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(LocalPostgresError) as info:
            localpg.start(port, reachable_tmp, backend="local")
    assert "already in use" in info.value.message
    assert info.value.hint and "--port" in info.value.hint


def test_no_password_on_command_lines(reachable_tmp: Path) -> None:
    cluster = Cluster(reachable_tmp / "data", localpg.free_port(), password=PASSWORD)
    with cluster:
        processes = cluster_processes(cluster)
        assert any("keeper" in line for line in processes.values()) or not Path("/proc").is_dir()
        assert not [line for line in processes.values() if PASSWORD in line]
        assert not list(cluster.confdir.glob(".pwfile-*")), "the initdb password file was left behind"
        check_connect(cluster.url())
    assert not cluster.datadir.exists() and not cluster.log_file.exists() and not cluster.confdir.exists()
    assert list(reachable_tmp.iterdir()) == [], "files left behind beside the cluster"


@pytest.mark.skipif(not RUN_AS_ROOT, reason="only root runs the server as another user")
def test_root_refuses_unreachable_data_dir(tmp_path: Path) -> None:
    hidden = tmp_path / "hidden"
    hidden.mkdir(mode=0o700)
    hidden.chmod(0o700)
    cluster = Cluster(hidden / "data", localpg.free_port())
    with pytest.raises(LocalPostgresError) as info:
        cluster.init()
    assert "cannot enter" in info.value.message and info.value.hint


# ---------------------------------------------------------------- Cluster


def test_cluster_kill_and_restart(own_cluster: ClusterFactory) -> None:
    cluster: Cluster = own_cluster()
    url = cluster.url()
    assert "%40" in url and "%23" in url  # the password is percent-encoded
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("create table t (x int)")
        conn.execute("insert into t values (1)")
    held = psycopg.connect(url, autocommit=True)
    pid = cluster.pid()
    assert pid is not None

    processes = cluster_processes(cluster)
    cluster.kill()
    assert not cluster.is_running()
    assert _all_gone(processes), "processes of the killed cluster remain"
    with pytest.raises(psycopg.OperationalError):
        held.execute("select 1")
    held.close()
    assert _refused(url)

    cluster.start()  # crash recovery
    with psycopg.connect(url) as conn:
        assert conn.execute("select x from t").fetchall() == [(1,)]
    first = cluster.pid()
    cluster.restart()
    assert cluster.pid() not in (None, first)
    check_connect(url)
    cluster.stop()
    cluster.stop()  # idempotent
    assert _refused(url)


def test_cluster_password_auth(own_cluster: ClusterFactory) -> None:
    cluster: Cluster = own_cluster(password="s3cret")
    check_connect(cluster.url())
    assert _refused(cluster.url(password="nope"))
    with psycopg.connect(cluster.url()) as conn:
        assert conn.execute("show password_encryption").fetchone() == ("scram-sha-256",)
        assert conn.execute(
            "select rolpassword like 'SCRAM-SHA-256$%' from pg_authid where rolname = 'postgres'"
        ).fetchone() == (True,)


def test_cluster_ssl(own_cluster: ClusterFactory, reachable_tmp: Path) -> None:
    cert, key = ssl_cert_or_skip(reachable_tmp)
    cluster: Cluster = own_cluster(ssl=(cert, key), extra_hba=["hostnossl all all all reject"])
    with psycopg.connect(cluster.url() + "?sslmode=require") as conn:
        row = conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone()
        assert row == (True,)
    assert _refused(cluster.url() + "?sslmode=disable")
    # Cert and key live in our own confdir, not in the server user's data directory.
    assert not (cluster.datadir / "server.key").exists()
    key_copy = cluster.confdir / "server.key"
    if RUN_AS_ROOT:  # root's, readable by the server's group: PostgreSQL accepts that
        assert (key_copy.stat().st_uid, stat.S_IMODE(key_copy.stat().st_mode)) == (0, 0o640)
    else:
        assert stat.S_IMODE(key_copy.stat().st_mode) == 0o600


def test_cluster_remove(own_cluster: ClusterFactory) -> None:
    cluster: Cluster = own_cluster()
    datadir = cluster.datadir
    processes = cluster_processes(cluster)
    cluster.remove()
    assert not datadir.exists() and not cluster.confdir.exists() and not cluster.is_running()
    assert _all_gone(processes)


def test_start_after_failed_start_reports_log(reachable_tmp: Path) -> None:
    cluster = Cluster(reachable_tmp / "data", localpg.free_port(), extra_conf={"shared_buffers": "-5"})
    try:
        cluster.init()
        with pytest.raises(LocalPostgresError) as info:
            cluster.start(timeout=30)
        assert "exited during startup" in info.value.message
        assert "shared_buffers" in info.value.message  # the log's tail is included
        assert not cluster.is_running()
    finally:
        cluster.remove()


# ---------------------------------------------------------------- harness


def test_pg_url_fixture(pg_url: str) -> None:
    with psycopg.connect(pg_url, connect_timeout=10) as conn:
        assert conn.execute("select 1").fetchone() == (1,)
        assert conn.execute("select rolsuper from pg_roles where rolname = current_user").fetchone() == (True,)


def test_app_db_fixture(pg_url: str, app_db: str) -> None:
    assert app_db.startswith("t_") and len(app_db) == 14
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'create database "{app_db}"')
        conn.execute(f'create database "{app_db}_dbos_sys"')
    with psycopg.connect(with_dbname(pg_url, app_db)) as conn:
        assert conn.execute("select current_database()").fetchone() == (app_db,)


def test_find_instance_prefers_env_url(own_cluster: ClusterFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    cluster: Cluster = own_cluster()
    monkeypatch.setenv("DBOS_MIGRATE_TEST_DATABASE_URL", cluster.url())
    instance, _ = find_instance()
    assert instance is not None and instance.source == "env" and instance.url == cluster.url()
    assert PASSWORD not in repr(instance)
    check_connect(instance.url)


def test_run_cli_returns_completed_process() -> None:
    result = run_cli("--help", timeout=60)
    assert isinstance(result, subprocess.CompletedProcess)
    assert isinstance(result.stdout, str) and isinstance(result.stderr, str)


def test_drop_database_forces_sessions_out(pg_url: str, app_db: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'create database "{app_db}"')
    held = psycopg.connect(with_dbname(pg_url, app_db))
    try:
        drop_database(pg_url, app_db)
        drop_database(pg_url, app_db)  # IF EXISTS
    finally:
        held.close()
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("select count(*) from pg_database where datname = %s", (app_db,)).fetchone() == (0,)


def test_docker_check_is_quick() -> None:
    t0 = time.monotonic()
    available = localpg.docker_available(timeout=3)
    assert isinstance(available, bool) and time.monotonic() - t0 < 10
    if not available:
        with pytest.raises(LocalPostgresError) as info:
            localpg.start(localpg.free_port(), "/nonexistent-home", backend="docker")
        assert "Docker" in info.value.message


def test_start_timeout_leaves_nothing_running(reachable_tmp: Path) -> None:
    """A server that never accepts connections makes start() time out on any machine, fast or
    slow: a standby (standby.signal) with hot_standby off and no primary rejects every
    connection while it waits for WAL. The timeout's message is checked, nothing is left
    running, and the cluster starts normally once it is no longer a standby."""
    cluster = Cluster(reachable_tmp / "data", localpg.free_port(), extra_conf={"hot_standby": False})
    try:
        cluster.init()
        standby = cluster.datadir / "standby.signal"
        standby.touch()
        with pytest.raises(LocalPostgresError) as info:
            cluster.start(timeout=1)
        assert info.value.message.startswith("PostgreSQL did not accept connections within 1s; log ")
        assert not cluster.is_running()
        standby.unlink()
        cluster.start()
        processes = cluster_processes(cluster)
        check_connect(cluster.url())
    finally:
        cluster.remove()
    assert _all_gone(processes)
