"""The tool's home and what it records there: which development server `postgres start` ran.

Layout (docs/local-postgres.md, "Where data lives")::

    <home>/postgres/current.json         the server `postgres start` last ran (port, backend, state)
    <home>/postgres/<port>/data          a local cluster (owned by the user that runs the server)
    <home>/postgres/<port>/conf/         our pg_hba file (the server reads it; it cannot change it)
    <home>/postgres/<port>/postgres.log  the server's log, 0600
    <home>/postgres/<port>/server.json   which binaries initialized it (for `status`)
    <home>/postgres/<port>/.lock         serializes concurrent start/stop

`running_server()` is here, away from the rest, because target resolution calls it on every
`dbos-migrate up`: this module imports nothing heavy and connects to nothing.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path

from dbos_migrate.localpg import fs
from dbos_migrate.localpg.base import (
    BACKEND_DOCKER,
    LocalPostgresError,
    LocalServer,
    pid_alive,
    port_in_use,
    server_url,
)

ROOT_FALLBACK_HOME = Path("/var/lib/dbos-migrate")
RECORD = "current.json"


def default_home(env: Mapping[str, str] | None = None) -> Path:
    """Where the development server keeps its data: `$DBOS_MIGRATE_HOME`, else
    `${XDG_DATA_HOME:-~/.local/share}/dbos-migrate`. As root, when that XDG directory is one the
    server's unprivileged user cannot reach (/root is 0700), /var/lib/dbos-migrate instead."""
    env = os.environ if env is None else env
    explicit = env.get("DBOS_MIGRATE_HOME")
    if explicit:
        return Path(explicit).expanduser()
    xdg = env.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    home = Path(xdg).expanduser() / "dbos-migrate"
    if fs.is_root() and fs.unreachable_prefix(home, fs.default_service_user()) is not None:
        return ROOT_FALLBACK_HOME
    return home


def servers_dir(home: Path) -> Path:
    return home / "postgres"


def port_dir(home: Path, port: int) -> Path:
    return servers_dir(home) / str(port)


def trusted_dirs(home: Path, port: int | None = None) -> list[Path]:
    """The directories we keep our own files in, outermost first. The home may be a symlink
    (the user named it); below it, nothing may be."""
    dirs = [home, servers_dir(home)]
    if port is not None:
        dirs.append(port_dir(home, port))
    return dirs


def prepare(home: Path, port: int | None = None) -> None:
    """Create our directories (0755) where missing and refuse any that is not ours alone."""
    for i, directory in enumerate(trusted_dirs(home, port)):
        fs.ensure_trusted_dir(directory, follow=i == 0)


def check(home: Path, port: int | None = None) -> None:
    """Refuse (LocalPostgresError) any of our directories that exists but is not ours alone."""
    for i, directory in enumerate(trusted_dirs(home, port)):
        if os.path.lexists(directory):
            fs.require_trusted(directory, follow=i == 0)


def _trusted(home: Path) -> bool:
    return all(fs.untrusted_reason(directory, follow=i == 0) is None for i, directory in enumerate(trusted_dirs(home)))


def read_record(home: Path) -> dict[str, object] | None:
    """The record of the server `postgres start` last ran, or None (no record, or not ours)."""
    if not _trusted(home):
        return None
    try:
        fd = fs.open_own(servers_dir(home) / RECORD, os.O_RDONLY | os.O_NONBLOCK)
    except (OSError, LocalPostgresError):
        return None
    try:
        data = json.loads(os.read(fd, 65536).decode("utf-8", "replace"))
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)
    if not isinstance(data, dict) or not isinstance(data.get("port"), int):
        return None
    return data


def recorded_port(home: Path) -> int | None:
    record = read_record(home)
    return int(str(record["port"])) if record is not None else None


def write_record(home: Path, server: LocalServer) -> None:
    """Record `server` (0600, atomic rename in our own directory) as the one `status` and
    `stop` without --port act on, with its state."""
    record = {
        "port": server.port,
        "backend": server.backend,
        "container": server.container,
        "state": "running" if server.running else "stopped",
    }
    fs.write_atomic(servers_dir(home) / RECORD, (json.dumps(record, indent=2) + "\n").encode())


def _local_alive(home: Path, port: int) -> bool:
    """Whether the postmaster named in the cluster's postmaster.pid lives and serves `port`
    (postmaster.pid's fourth line)."""
    text = fs.read_small(port_dir(home, port) / "data" / "postmaster.pid") or ""
    lines = text.splitlines()
    try:
        pid, served = int(lines[0]), int(lines[3])
    except (ValueError, IndexError):
        return False
    return pid > 1 and served == port and pid_alive(pid)


def running_server(environ: Mapping[str, str]) -> LocalServer | None:
    """The development server that `dbos-migrate postgres start` started, if it still runs.

    For target resolution (`dbos-migrate up` with no other target): returns a LocalServer whose
    `url` is `postgresql://postgres:dbos@localhost:<port>`, or None when nothing is recorded,
    the record says it was stopped, or it no longer runs.

    - The home is `default_home(environ)`: `DBOS_MIGRATE_HOME` (else `XDG_DATA_HOME`) is taken
      from `environ`, not from os.environ.
    - Cheap: no database connection, no subprocess, no heavy import. A local cluster counts as
      running when the pid in its postmaster.pid is alive and serves the recorded port; a
      Docker container, when something listens on the recorded port of 127.0.0.1.
    - A home or record that is not ours alone (wrong owner, writable by others, a symlink) is
      ignored (None): another user must not be able to point our target elsewhere.

    Use: `from dbos_migrate.localpg import running_server` (which loads only the light modules
    of the package), then `running_server(os.environ)`.
    """
    try:
        home = default_home(environ)
    except LocalPostgresError:
        return None
    return running_in(home)


def running_in(home: Path) -> LocalServer | None:
    """`running_server()` for a given home."""
    record = read_record(home)
    if record is None or record.get("state") != "running":
        return None
    port = int(str(record["port"]))
    backend = record.get("backend")
    if backend == BACKEND_DOCKER:
        alive = port_in_use(port)
        datadir = log_file = None
    else:
        alive = _local_alive(home, port)
        datadir, log_file = port_dir(home, port) / "data", port_dir(home, port) / "postgres.log"
    if not alive:
        return None
    container = record.get("container")
    return LocalServer(
        port=port,
        running=True,
        url=server_url(port),
        backend=str(backend) if backend is not None else None,
        datadir=datadir,
        log_file=log_file,
        container=str(container) if container is not None else None,
    )
