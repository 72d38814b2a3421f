"""Proving that the server on a recorded port is the one `postgres start` recorded.

The record says a port and, for a local cluster, a data directory whose postmaster.pid names
a live process. A pid is reused after a crash or a reboot, and the port is then free for any
user's listener: a target taken from the record alone could be someone else's server
(docs/local-postgres.md, "How `up` finds the server"; docs/security.md).

Proof for a local cluster: the system identifier the server reports
(`pg_control_system()`) equals the one in the data directory's `global/pg_control`, which
only the server's owner (and root) can read. Proof for a container: Docker says our
container runs and publishes the port. Anything else: the record is ignored, and why is
said. Only `up` and the other verbs that would use the record pay for it (one connection).
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

from dbos_migrate.localpg.base import BACKEND_DOCKER, LocalPostgresError, LocalServer

CONTROL_FILE = Path("global") / "pg_control"
CONNECT_TIMEOUT = 5


def control_file_identifier(datadir: Path) -> int | None:
    """The system identifier in `datadir/global/pg_control` (its first 8 bytes, in the
    machine's byte order), or None when it cannot be read. The file is opened without
    following a symlink and must be a regular file."""
    flags = os.O_RDONLY | os.O_NOFOLLOW | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(datadir / CONTROL_FILE, flags)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        data = os.read(fd, 8)
    except OSError:
        return None
    finally:
        os.close(fd)
    if len(data) != 8:
        return None
    return int.from_bytes(data, sys.byteorder)


def server_identifier(url: str) -> int | None:
    """The system identifier of the server at `url`, or None when it cannot be asked."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=CONNECT_TIMEOUT, autocommit=True) as conn:
            conn.execute("SET search_path = pg_catalog, pg_temp; SET default_transaction_read_only = on")
            row = conn.execute("SELECT system_identifier FROM pg_catalog.pg_control_system()").fetchone()
    except (psycopg.Error, OSError):
        return None
    return int(row[0]) if row and row[0] is not None else None


def unproven(server: LocalServer) -> str | None:
    """Why the server listening on the recorded port may not be the recorded one, or None
    when it is proven to be."""
    if server.backend == BACKEND_DOCKER:
        from dbos_migrate.localpg.docker import DockerBackend, docker_available

        if not docker_available():
            return "Docker does not answer, so its container cannot be told from another listener"
        try:
            found = DockerBackend().status(server.port)
        except LocalPostgresError as exc:
            return exc.message
        if found is None or not found.running:
            return f"dbos-migrate's container for port {server.port} is not running"
        return None
    if server.datadir is None:
        return "the record names no data directory"
    recorded = control_file_identifier(server.datadir)
    if recorded is None:
        return f"the control file of {server.datadir} cannot be read"
    answered = server_identifier(server.url)
    if answered is None:
        return f"the server on port {server.port} does not say which cluster it is"
    if answered != recorded:
        return f"the server on port {server.port} is another cluster than the one in {server.datadir}"
    return None
