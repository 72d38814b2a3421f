"""What the two local backends share: a development cluster in `<home>/postgres/<port>/`, run
from binaries on this machine. wheel.py and system.py say where their binaries are; which one
serves a port is the source recorded when its cluster was initialized (server.json).
"""

from __future__ import annotations

import abc
import contextlib
import json
import os
from collections.abc import Iterator
from pathlib import Path

from dbos_migrate.localpg import fs, homedir
from dbos_migrate.localpg.base import (
    BACKEND_SYSTEM,
    Backend,
    LocalPostgresError,
    LocalServer,
    require_free,
    server_url,
)
from dbos_migrate.localpg.binaries import PgBinaries, find_binaries, probe_bindir
from dbos_migrate.localpg.cluster import Cluster

BINARIES_RECORD = "server.json"


@contextlib.contextmanager
def locked(directory: Path) -> Iterator[None]:
    """Serialize start/stop across processes with a lock file in `directory` (one of ours)."""
    import fcntl

    fd = fs.open_own(directory / ".lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def dev_cluster(home: Path, port: int, binaries: PgBinaries | None = None) -> Cluster:
    """The development cluster of `port`, laid out as homedir.py describes."""
    portdir = homedir.port_dir(home, port)
    return Cluster(
        portdir / "data", port, binaries=binaries, log_file=portdir / "postgres.log", confdir=portdir / "conf"
    )


def recorded_binaries(home: Path, port: int) -> dict[str, str]:
    """What server.json says about the binaries that initialized the cluster of `port`."""
    try:
        data = json.loads(fs.read_small(homedir.port_dir(home, port) / BINARIES_RECORD) or "")
    except ValueError:
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


class LocalBackend(Backend):
    """A development cluster run from local binaries. `binaries`, when given, are the ones to
    initialize a new cluster with; an existing cluster keeps the binaries that made it (or,
    when those are gone, any others of its major version)."""

    def __init__(self, home: Path, binaries: PgBinaries | None = None) -> None:
        self.home = home
        self.binaries = binaries

    @staticmethod
    @abc.abstractmethod
    def bindirs() -> list[Path]:
        """Where this backend's binaries may be, most preferred first."""

    def _binaries_for(self, cluster: Cluster) -> PgBinaries:
        """The binaries that initialized the cluster if still there, else any of its major version."""
        recorded = recorded_binaries(self.home, cluster.port)
        if recorded.get("bindir"):
            probed = probe_bindir(Path(recorded["bindir"]), recorded.get("source", BACKEND_SYSTEM))
            if (
                probed is not None
                and probed.major == cluster.data_major()
                and probed.reachable_by(cluster.service_user())
            ):
                return probed
        return find_binaries(major=cluster.data_major(), run_as=cluster.service_user())

    def _state(self, port: int, *, changed: bool) -> LocalServer:
        recorded = recorded_binaries(self.home, port)
        cluster = dev_cluster(self.home, port)
        return LocalServer(
            port=port,
            running=cluster.is_running(),
            url=server_url(port),
            backend=recorded.get("source", BACKEND_SYSTEM),
            changed=changed,
            datadir=cluster.datadir,
            log_file=cluster.log_file,
            version=recorded.get("version"),
        )

    def status(self, port: int) -> LocalServer | None:
        if not dev_cluster(self.home, port).is_initialized():
            return None
        return self._state(port, changed=False)

    def stop(self, port: int, timeout: float) -> LocalServer | None:
        cluster = dev_cluster(self.home, port)
        if not cluster.is_initialized():
            return None
        with locked(homedir.port_dir(self.home, port)):
            if not cluster.is_running():
                return self._state(port, changed=False)
            try:
                binaries: PgBinaries | None = self._binaries_for(cluster)
            except LocalPostgresError:
                # The binaries that started it are gone (another install of the tool, a removed
                # venv) and none of its major are left: Cluster.stop signals the postmaster.
                binaries = None
            dev_cluster(self.home, port, binaries).stop(timeout=timeout)
        return self._state(port, changed=True)

    def start(self, port: int, timeout: float) -> LocalServer:
        homedir.prepare(self.home, port)
        with locked(homedir.port_dir(self.home, port)):
            cluster = dev_cluster(self.home, port, self.binaries)
            if cluster.is_running():
                return self._state(port, changed=False)
            require_free(port)
            if cluster.is_initialized():
                cluster = dev_cluster(self.home, port, self._binaries_for(cluster))
            else:
                cluster.init()
            binaries = cluster.binaries
            record = {"bindir": str(binaries.bindir), "source": binaries.source, "version": binaries.version}
            path = homedir.port_dir(self.home, port) / BINARIES_RECORD
            fs.write_atomic(path, (json.dumps(record, indent=2) + "\n").encode(), 0o644)
            cluster.start(timeout)
        return self._state(port, changed=True)
