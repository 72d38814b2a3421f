"""The local server's record cannot point `up` at someone else's server (docs/security.md,
"The local server's record").

After the recorded server died, its pid may belong to any live process and its port to any
user's listener. A record is used only once the server on the port proves to be the recorded
cluster: its system identifier equals the one in the data directory's control file.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import write_config
from inmemory import InMemoryContext
from pgharness import ClusterFactory

from dbos_migrate import localpg, verbs
from dbos_migrate.events import Event, Notice
from dbos_migrate.localpg import homedir
from dbos_migrate.localpg.base import BACKEND_SYSTEM, LocalServer, free_port, server_url
from dbos_migrate.localpg.identity import control_file_identifier, server_identifier
from dbos_migrate.model import StatusReport


@pytest.fixture
def home(reachable_tmp: Path) -> Iterator[Path]:
    path = reachable_tmp / "home"
    yield path
    for portdir in (path / "postgres").glob("[0-9]*"):
        if (portdir / "data" / "PG_VERSION").exists():
            localpg.stop(int(portdir.name), path)


def stale_record(home: Path, port: int) -> None:
    """What a killed `postgres start` server leaves: the record says running on `port`, the
    postmaster.pid names a pid that is alive again (ours, reused), and the data directory's
    control file is the dead cluster's."""
    homedir.prepare(home, port)
    data = homedir.port_dir(home, port) / "data"
    (data / "global").mkdir(parents=True, mode=0o700)
    (data / "global" / "pg_control").write_bytes(os.urandom(8) + bytes(8184))
    (data / "postmaster.pid").write_text(f"{os.getpid()}\n{data}\n1700000000\n{port}\n/tmp\nlocalhost\n")
    homedir.write_record(home, LocalServer(port=port, running=True, url=server_url(port), backend=BACKEND_SYSTEM))


def status(home: Path, tmp_path: Path) -> tuple[StatusReport, list[Event]]:
    cfg = write_config(tmp_path, app_db_name="t_recorded", migrate=["true"])
    environ = {"PATH": os.environ["PATH"], "DBOS_MIGRATE_HOME": str(home), "PGPORT": str(free_port())}
    events: list[Event] = []
    report = verbs.status(InMemoryContext(environ), verbs.StatusOptions(config=str(cfg)), events.append)
    return report, events


def test_a_stale_record_does_not_point_at_another_listener(
    tmp_path: Path, home: Path, own_cluster: ClusterFactory
) -> None:
    other = own_cluster(password=localpg.DEFAULT_PASSWORD)  # another user's server, same well-known password
    stale_record(home, other.port)
    assert localpg.running_server({"DBOS_MIGRATE_HOME": str(home)}) is not None  # the record alone believes it
    report, events = status(home, tmp_path)
    assert "local server" not in report.where.target_source
    assert f":{other.port}" not in (report.where.target or "")
    notices = [e.text for e in events if isinstance(e, Notice)]
    assert any(f"(port {other.port}) was ignored" in n and "another cluster" in n for n in notices), notices


def test_a_record_whose_control_file_cannot_be_read_is_ignored(
    tmp_path: Path, home: Path, own_cluster: ClusterFactory
) -> None:
    other = own_cluster(password=localpg.DEFAULT_PASSWORD)
    stale_record(home, other.port)
    control = homedir.port_dir(home, other.port) / "data" / "global" / "pg_control"
    control.unlink()
    control.symlink_to(other.datadir / "global" / "pg_control")  # a symlink is not followed
    report, events = status(home, tmp_path)
    assert "local server" not in report.where.target_source
    assert any("cannot be read" in e.text for e in events if isinstance(e, Notice))


def test_the_recorded_server_itself_is_used(tmp_path: Path, home: Path) -> None:
    port = free_port()
    started = localpg.start(port, home, backend="local", timeout=120)
    assert started.running and started.datadir is not None
    assert control_file_identifier(started.datadir) == server_identifier(started.url)
    report, events = status(home, tmp_path)
    assert "local server" in report.where.target_source, [e for e in events if isinstance(e, Notice)]
    assert report.reachable
