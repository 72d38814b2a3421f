"""The local server's defences (docs/local-postgres.md, "Security"), each against a real cluster.

The attacker is another local user, or the server's own OS user (`postgres`), whom anyone who
knows the public superuser password can drive through `COPY ... TO PROGRAM`. As root, the
tests act as that user with `subprocess`'s `user=`; they touch only their own temp dirs.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import psycopg
import pytest
from pgharness import ClusterFactory, run_cli, ssl_cert_or_skip

from dbos_migrate import localpg
from dbos_migrate.localpg import Cluster, LocalPostgresError

RUN_AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
root_only = pytest.mark.skipif(not RUN_AS_ROOT, reason="only root runs the server as another OS user")


def as_server_user(cluster: Cluster, *args: str) -> None:
    """Run a command as the OS user that runs `cluster` (root only)."""
    entry = cluster.service_user()
    assert entry is not None
    subprocess.run(list(args), user=entry.pw_uid, group=entry.pw_gid, extra_groups=[], check=True, timeout=30)


def precious_file(directory: Path) -> Path:
    """A root-owned file the server's user must never get root to change."""
    target = directory / "precious"
    target.write_text("precious\n")
    target.chmod(0o644)
    return target


def assert_untouched(target: Path) -> None:
    st = target.stat()
    assert target.read_text() == "precious\n", "root wrote through a symlink planted by the server's user"
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o644)


@root_only
def test_start_never_writes_through_a_planted_symlink(reachable_tmp: Path) -> None:
    """The old code (re)wrote data/dbos_migrate.conf as root, following symlinks, at each start."""
    home, port = reachable_tmp / "home", localpg.free_port()
    target = precious_file(reachable_tmp)
    try:
        localpg.start(port, home, backend="local")
        localpg.stop(port, home)
        cluster = Cluster(home / "postgres" / str(port) / "data", port)
        for name in ("dbos_migrate.conf", "server.crt", "server.key"):
            as_server_user(cluster, "ln", "-sf", str(target), str(cluster.datadir / name))
        localpg.start(port, home, backend="local")
        localpg.stop(port, home)
        localpg.start(port, home, backend="local")
        with psycopg.connect(localpg.status(port, home).url, connect_timeout=10) as conn:
            assert conn.execute("select 1").fetchone() == (1,)
    finally:
        localpg.stop(port, home)
    assert_untouched(target)
    # Nothing in the data directory belongs to root: we never created anything there.
    rooted = [p for p in cluster.datadir.rglob("*") if p.lstat().st_uid == 0]
    assert rooted == []


@root_only
def test_ssl_files_stay_out_of_the_data_directory(own_cluster: ClusterFactory, reachable_tmp: Path) -> None:
    """The old code copied the SSL cert and key into the data directory at each start."""
    cert, key = ssl_cert_or_skip(reachable_tmp)
    target = precious_file(reachable_tmp)
    cluster: Cluster = own_cluster(ssl=(cert, key))
    cluster.stop()
    for name in ("server.crt", "server.key", "pg_hba.conf"):
        as_server_user(cluster, "ln", "-sf", str(target), str(cluster.datadir / name))
    cluster.start()
    with psycopg.connect(cluster.url() + "?sslmode=require", connect_timeout=10) as conn:
        assert conn.execute("select ssl from pg_stat_ssl where pid = pg_backend_pid()").fetchone() == (True,)
    assert_untouched(target)


@root_only
def test_kill_does_not_signal_a_pid_planted_in_postmaster_pid(own_cluster: ClusterFactory) -> None:
    """postmaster.pid belongs to the server's user; the old kill() SIGKILLed its pid as root."""
    cluster: Cluster = own_cluster()
    victim = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])  # a root process
    try:
        lines = cluster.pidfile.read_text().splitlines()
        forged = "\n".join([str(victim.pid), *lines[1:]]) + "\n"
        as_server_user(cluster, "sh", "-c", 'printf "%s" "$1" > "$2"', "sh", forged, str(cluster.pidfile))
        stranger = Cluster(cluster.datadir, cluster.port)  # knows only what is on disk
        with pytest.raises(LocalPostgresError) as info:
            stranger.kill(timeout=5)
        assert "tampered" in (info.value.hint or "")
        assert victim.poll() is None, "root killed the pid the server's user chose"
        cluster.kill()  # our own keeper knows the real postmaster
        assert victim.poll() is None
    finally:
        victim.kill()
        victim.wait()


def test_log_is_private_and_holds_no_failed_statement(reachable_tmp: Path) -> None:
    """The log was 0644 and recorded failing statements, e.g. `CREATE ROLE ... PASSWORD '...'`."""
    home, port = reachable_tmp / "home", localpg.free_port()
    try:
        server = localpg.start(port, home, backend="local")
        with (
            psycopg.connect(server.url, connect_timeout=10, autocommit=True) as conn,
            pytest.raises(psycopg.errors.DuplicateObject),
        ):
            conn.execute("CREATE ROLE postgres PASSWORD 'hunter2-secret'")
    finally:
        localpg.stop(port, home)
    assert server.log_file is not None
    st = server.log_file.stat()
    assert (st.st_uid, stat.S_IMODE(st.st_mode)) == (os.geteuid(), 0o600)
    log = server.log_file.read_text()
    assert 'role "postgres" already exists' in log  # the error is logged...
    assert "hunter2-secret" not in log  # ...its statement is not


def test_untrusted_home_is_refused(reachable_tmp: Path) -> None:
    """A home other users can write to could be made to redirect what we write there."""
    home = reachable_tmp / "home"
    home.mkdir()
    home.chmod(0o777)
    port = localpg.free_port()
    try:
        with pytest.raises(LocalPostgresError) as info:
            localpg.start(port, home, backend="local")
        assert "writable by other users" in info.value.message
        result = run_cli("postgres", "status", env={"DBOS_MIGRATE_HOME": str(home), "PGPORT": str(port)})
        assert result.returncode == 3 and "writable by other users" in result.stderr
        assert not (home / "postgres").exists()
    finally:  # (the old code started a server there: stop it)
        home.chmod(0o755)
        localpg.stop(port, home)


@root_only
def test_home_of_another_user_is_refused(reachable_tmp: Path) -> None:
    home = reachable_tmp / "home"
    home.mkdir(mode=0o755)
    entry = Cluster(home / "x", 1).service_user()
    assert entry is not None
    os.chown(home, entry.pw_uid, entry.pw_gid)
    port = localpg.free_port()
    try:
        with pytest.raises(LocalPostgresError) as info:
            localpg.start(port, home, backend="local")
        assert f"owned by uid {entry.pw_uid}" in info.value.message
    finally:  # (the old code started a server there: stop it)
        os.chown(home, 0, 0)
        localpg.stop(port, home)


def test_pwfile_and_settings_stay_off_the_data_directory(own_cluster: ClusterFactory) -> None:
    """Our settings travel on the command line; pg_hba is ours, outside the data directory."""
    cluster: Cluster = own_cluster(extra_hba=["host all nobody 127.0.0.1/32 reject"])
    assert not (cluster.datadir / "dbos_migrate.conf").exists()
    assert "dbos_migrate" not in (cluster.datadir / "postgresql.conf").read_text()
    with psycopg.connect(cluster.url(), connect_timeout=10) as conn:
        assert conn.execute("show hba_file").fetchone() == (str(cluster.hba_file),)
        assert conn.execute("show log_min_error_statement").fetchone() == ("panic",)
    assert "host all nobody" in cluster.hba_file.read_text()
    assert stat.S_IMODE(cluster.confdir.stat().st_mode) == 0o755
    assert not list(cluster.confdir.glob(".pwfile-*"))
