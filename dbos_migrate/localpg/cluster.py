"""Cluster: one PostgreSQL cluster in a data directory, run from local binaries by a keeper.

How it is kept safe when we are root (docs/local-postgres.md, "Security"): the data directory
belongs to the server's OS user, whom the public superuser password lets anyone drive, so we
never write, create, truncate or chown anything inside it. Our settings go on the server's
command line (`postgres -c key=value`, which beats postgresql.conf and ALTER SYSTEM); the
pg_hba file, the SSL certificate and key, and initdb's password file live in a directory of ours
beside the data directory (`confdir`); the log is ours (0600), handed to the server as a file
descriptor. What we read from the data directory (PG_VERSION, postmaster.pid) is read without
following symlinks, and the pid found there is signalled only as the server's user.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path

from dbos_migrate.localpg import fs, keeper
from dbos_migrate.localpg.base import (
    DEFAULT_PASSWORD,
    DEFAULT_USER,
    LocalPostgresError,
    child_env,
    pid_alive,
    require_free,
    wait_until,
)
from dbos_migrate.localpg.binaries import PgBinaries, find_binaries
from dbos_migrate.settings.conninfo import compose

if typing.TYPE_CHECKING:
    import pwd

#: Settings we always pass. `log_min_error_statement = panic` keeps the text of failing
#: statements (think `CREATE ROLE ... PASSWORD '...'`) out of the log; `log_statement` stays off.
BASE_SETTINGS: Mapping[str, object] = {
    "unix_socket_directories": "",
    "password_encryption": "scram-sha-256",
    "log_min_error_statement": "panic",
}


def _conf_value(value: object) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return str(value)


class Cluster:
    """One PostgreSQL cluster in a data directory, served on 127.0.0.1:`port`.

    Used by `start()`/`stop()`/`status()` for the development server, and by tests for
    throwaway clusters they may restart, crash (`kill()`), or run with SSL. It keeps no state
    beyond its directories and the keeper of a server it started itself, so a new Cluster
    object for the same directory can stop a server another process started.

    `password` is the superuser's (scram-sha-256, required for every connection); `ssl` is a
    (certfile, keyfile) pair to serve SSL with (needs binaries built with OpenSSL);
    `extra_conf` adds server settings; `extra_hba` adds pg_hba lines ahead of ours (first match
    wins, so `hostnossl all all all reject` forces SSL). `confdir` (default: `<datadir>.conf`
    beside it) holds our pg_hba file and SSL files; `log_file` defaults to `<datadir>.log`.
    `binaries` defaults to `find_binaries()` (matching the data directory's major version once
    it exists). As root, the server runs as `run_as` (a user name), else the data directory's
    owner, else `postgres`, else `nobody`. `host` is listen_addresses (127.0.0.1: local only).
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
        confdir: Path | str | None = None,
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
        self.log_file = Path(log_file).absolute() if log_file else self._beside(".log")
        self.confdir = Path(confdir).absolute() if confdir else self._beside(".conf")
        self.run_as = run_as
        self.host = host
        self._binaries = binaries
        self._keeper: subprocess.Popen[bytes] | None = None

    def _beside(self, suffix: str) -> Path:
        return self.datadir.with_name(self.datadir.name + suffix)

    def __repr__(self) -> str:
        return f"Cluster(datadir={str(self.datadir)!r}, port={self.port})"

    # -- facts

    @property
    def pidfile(self) -> Path:
        return self.datadir / "postmaster.pid"

    @property
    def hba_file(self) -> Path:
        return self.confdir / "pg_hba.conf"

    def is_initialized(self) -> bool:
        return fs.read_small(self.datadir / "PG_VERSION") is not None

    def data_major(self) -> int | None:
        """The major version the data directory was initialized with."""
        text = fs.read_small(self.datadir / "PG_VERSION") or ""
        try:
            return int(text.strip().split(".")[0])
        except ValueError:
            return None

    def pid(self) -> int | None:
        """The postmaster's pid if it is running, else None (a stale postmaster.pid is ignored)."""
        text = fs.read_small(self.pidfile) or ""
        try:
            pid = int(text.splitlines()[0].strip())
        except (ValueError, IndexError):
            return None
        return pid if pid > 1 and pid_alive(pid) else None

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
        if not fs.is_root():
            return None
        if self.run_as is not None:
            entry = fs.lookup_user(self.run_as)
            if entry is None:
                raise LocalPostgresError(f"there is no OS user '{self.run_as}' to run PostgreSQL as")
            return entry
        with contextlib.suppress(OSError, KeyError):
            import pwd

            owner = os.lstat(self.datadir).st_uid
            if owner != 0:
                return pwd.getpwuid(owner)
        return fs.default_service_user()

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
        return compose(user, password, host, self.port, dbname=dbname)

    def settings(self) -> dict[str, object]:
        """What the server is started with (`postgres -c key=value`): no secret, `ps` shows it."""
        settings: dict[str, object] = {"port": self.port, "listen_addresses": self.host, **BASE_SETTINGS}
        settings["hba_file"] = str(self.hba_file)
        if self.ssl is not None:
            settings.update(
                ssl=True,
                ssl_cert_file=str(self.confdir / "server.crt"),
                ssl_key_file=str(self.confdir / "server.key"),
            )
        settings.update(self.extra_conf)
        return settings

    # -- running PostgreSQL's tools

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
                env=child_env(),
                check=False,
                **fs.run_as_kwargs(self.service_user()),
            )
        except subprocess.TimeoutExpired as exc:
            raise LocalPostgresError(f"{Path(args[0]).name} did not finish within {timeout:.0f}s") from exc
        except OSError as exc:
            raise LocalPostgresError(f"cannot run {args[0]}: {exc}") from exc

    def _check_reachable(self, entry: pwd.struct_passwd | None) -> None:
        if entry is None:
            return
        blocked = fs.unreachable_prefix(self.datadir, entry)
        if blocked is not None:
            raise LocalPostgresError(
                f"PostgreSQL runs as '{entry.pw_name}' (it refuses to run as root), which cannot enter "
                f"{blocked}, on the way to the data directory {self.datadir}",
                hint="put the data elsewhere, e.g. DBOS_MIGRATE_HOME=/var/lib/dbos-migrate, or run as a normal user",
            )

    # -- life cycle

    def init(self, timeout: float = 120.0) -> None:
        """Create the cluster with initdb (no-op when it exists): superuser and password via a
        0600 --pwfile in our confdir, deleted afterwards; scram-sha-256 for every connection."""
        if self.is_initialized():
            return
        entry = self.service_user()
        fs.mkdirs(self.datadir.parent)
        self._check_reachable(entry)
        binaries = self.binaries
        if self.datadir.exists() and any(self.datadir.iterdir()):
            raise LocalPostgresError(
                f"{self.datadir} exists, is not empty and holds no PostgreSQL cluster",
                hint="remove it or pick another directory",
            )
        self._make_datadir(entry)
        fs.ensure_trusted_dir(self.confdir)
        import tempfile

        fd, pwfile = tempfile.mkstemp(prefix=".pwfile-", dir=self.confdir)
        try:
            os.fchmod(fd, 0o600)
            if entry is not None:
                os.fchown(fd, entry.pw_uid, entry.pw_gid)
            os.write(fd, (self.password + "\n").encode())
            os.close(fd)
            result = self._tool_run(
                [
                    str(binaries.tool("initdb")),
                    *("-D", str(self.datadir), "-U", self.superuser, f"--pwfile={pwfile}"),
                    *("--auth-host=scram-sha-256", "--auth-local=scram-sha-256"),
                    *("--encoding=UTF8", "--locale=C"),
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

    def _make_datadir(self, entry: pwd.struct_passwd | None) -> None:
        """The empty data directory, mode 0700, handed to the server's user (through a
        no-follow descriptor: the directory itself, never what a symlink points to)."""
        with contextlib.suppress(FileExistsError):
            os.mkdir(self.datadir, 0o700)
        fd = fs.open_dir(self.datadir)
        try:
            os.fchmod(fd, 0o700)
            if entry is not None:
                os.fchown(fd, entry.pw_uid, entry.pw_gid)
        finally:
            os.close(fd)

    def _write_confdir(self, entry: pwd.struct_passwd | None) -> None:
        """Our pg_hba file and SSL files, in our confdir, rewritten at each start. The key is
        0600 when we run the server as ourselves, else root's with mode 0640 and the server
        user's group (PostgreSQL accepts a root-owned key with that mode)."""
        fs.ensure_trusted_dir(self.confdir)
        lines = [
            "# Written by dbos-migrate: password (scram-sha-256) for every connection.",
            *self.extra_hba,
            "local   all all              scram-sha-256",
            "host    all all 127.0.0.1/32 scram-sha-256",
            "host    all all ::1/128      scram-sha-256",
        ]
        fs.write_atomic(self.hba_file, ("\n".join(lines) + "\n").encode(), 0o644)
        if self.ssl is not None:
            certfile, keyfile = self.ssl
            fs.write_atomic(self.confdir / "server.crt", certfile.read_bytes(), 0o644)
            key_owner = (os.geteuid(), entry.pw_gid) if entry is not None else None
            key_mode = 0o640 if entry is not None else 0o600
            fs.write_atomic(self.confdir / "server.key", keyfile.read_bytes(), key_mode, key_owner)

    def _probe_host(self) -> str:
        """Where to check readiness: 127.0.0.1 unless listen_addresses names only other hosts."""
        hosts = [h.strip() for h in self.host.split(",") if h.strip()]
        if not hosts or "*" in hosts or "0.0.0.0" in hosts or "127.0.0.1" in hosts:
            return "127.0.0.1"
        return hosts[0]

    def _ready(self) -> bool:
        args = [str(self.binaries.tool("pg_isready")), "-q", "-h", self._probe_host(), "-p", str(self.port)]
        result = self._tool_run([*args, "-t", "2"], 10)
        return result.returncode == 0 and self.is_running()

    def _open_log(self) -> int:
        """Our log file, opened for appending, mode 0600 (also when an older version made it
        0644): it may hold what clients got wrong."""
        fs.mkdirs(self.log_file.parent)
        fd = fs.open_own(self.log_file, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        os.fchmod(fd, 0o600)
        return fd

    def start(self, timeout: float = 60.0) -> None:
        """Start the server (no-op when running) and return once it accepts connections.

        Raises LocalPostgresError with the log's tail when it exits or is not ready in time.
        """
        if not self.is_initialized():
            raise LocalPostgresError(f"{self.datadir} holds no PostgreSQL cluster", hint="call init() first")
        if self.is_running():
            return
        if self._keeper is not None and keeper.reap(self._keeper, 0):
            self._keeper = None
        # A postmaster.pid whose process is gone or a zombie: PostgreSQL removes dead ones
        # itself but takes a zombie for a live postmaster. The keeper removes it as the server's user.
        stale = str(self.pidfile) if os.path.lexists(self.pidfile) else None
        require_free(self.port)
        entry = self.service_user()
        self._check_reachable(entry)
        binaries = self.binaries
        if self.ssl is not None and not binaries.supports_ssl():
            raise LocalPostgresError(
                f"the PostgreSQL binaries in {binaries.bindir} are built without SSL",
                hint="use binaries built with OpenSSL (e.g. the system's), see find_binaries(require_ssl=True)",
            )
        self._write_confdir(entry)
        argv = [str(binaries.tool("postgres")), "-D", str(self.datadir)]
        for key, value in self.settings().items():
            argv += ["-c", f"{key}={_conf_value(value)}"]
        log_fd = self._open_log()
        try:
            offset = os.fstat(log_fd).st_size
            self._keeper = keeper.launch(argv, entry, log_fd, stale)
        finally:
            os.close(log_fd)
        self._wait_ready(self._keeper, offset, timeout)

    def _wait_ready(self, proc: subprocess.Popen[bytes], offset: int, timeout: float) -> None:
        """Poll until the server accepts connections; on exit or timeout, crash what is left
        and raise with the log's tail."""
        deadline = time.monotonic() + timeout
        delay = 0.02
        while not self._ready():
            if proc.poll() is not None:
                self._keeper = None
                raise LocalPostgresError(
                    f"PostgreSQL exited during startup (port {self.port}, data {self.datadir}); "
                    f"log {self.log_file}:\n{fs.tail(self.log_file, offset)}",
                    hint="see the log above",
                )
            if time.monotonic() >= deadline:
                keeper.crash(proc)
                self._keeper = None
                raise LocalPostgresError(
                    f"PostgreSQL did not accept connections within {timeout:.0f}s; log {self.log_file}:\n"
                    f"{fs.tail(self.log_file, offset)}"
                )
            time.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    def _reap_keeper(self, timeout: float) -> bool:
        """Wait for the keeper of a server this object started; True once it is gone (which
        means every process of the cluster is gone)."""
        if self._keeper is None:
            return True
        if not keeper.reap(self._keeper, timeout):
            return False
        self._keeper = None
        return True

    def _gone_or_raise(self, timeout: float) -> None:
        if not self._reap_keeper(timeout):
            raise LocalPostgresError(f"PostgreSQL processes of {self.datadir} did not exit within {timeout:.0f}s")

    def stop(self, mode: str = "fast", timeout: float = 60.0) -> None:
        """Stop the server with `pg_ctl stop -m <mode> -w` (no-op when not running) and wait
        until its processes are gone."""
        if not self.is_running():
            self._reap_keeper(timeout)
            return
        try:
            pg_ctl = str(self.binaries.tool("pg_ctl"))
        except LocalPostgresError:  # no binaries of its major left (the venv that ran it is gone)
            self._stop_by_signal(mode, timeout)
            return
        args = [pg_ctl, "stop", "-D", str(self.datadir), "-m", mode, "-w", "-t", str(int(timeout))]
        result = self._tool_run(args, timeout + 10)
        if result.returncode != 0 and self.is_running():
            raise LocalPostgresError(
                f"pg_ctl stop failed (exit {result.returncode}): {(result.stdout + result.stderr).strip()}",
                hint=f"see {self.log_file}",
            )
        self._gone_or_raise(timeout)

    def _stop_by_signal(self, mode: str, timeout: float) -> None:
        """What `pg_ctl stop -m <mode>` does, without pg_ctl: the shutdown signal to the
        postmaster, then wait until it is gone. The signal is sent as the server's user (who
        controls postmaster.pid, so root must not signal a pid of its choosing), and only to a
        process whose command line names this data directory, where the system shows it."""
        pid = self.pid()
        if pid is None:
            return
        cmdline = fs.read_small(Path(f"/proc/{pid}/cmdline")) if Path("/proc/self").exists() else None
        ours = os.path.realpath(self.datadir)
        if cmdline is not None and not any(os.path.realpath(a) == ours for a in cmdline.split("\0") if a):
            raise LocalPostgresError(
                f"pid {pid}, named in {self.pidfile}, is not the postmaster of {self.datadir}",
                hint="the file was tampered with, or the pid was reused: stop that server by hand",
            )
        name = {"smart": "TERM", "fast": "INT", "immediate": "QUIT"}[mode]
        result = self._tool_run(["/bin/sh", "-c", 'kill -s "$1" "$2"', "sh", name, str(pid)], 30)
        if result.returncode != 0 and pid_alive(pid):
            raise LocalPostgresError(f"cannot signal the postmaster (pid {pid}): {result.stderr.strip()}")
        if not wait_until(lambda: not pid_alive(pid), timeout):
            raise LocalPostgresError(
                f"PostgreSQL (pid {pid}) did not stop within {timeout:.0f}s", hint=f"see {self.log_file}"
            )
        self._gone_or_raise(timeout)

    def restart(self, timeout: float = 60.0) -> None:
        """Stop (fast) and start again."""
        self.stop(timeout=timeout)
        self.start(timeout=timeout)

    def kill(self, timeout: float = 30.0) -> None:
        """Crash the server: SIGKILL the postmaster, then wait until all its processes are gone
        (its children notice the postmaster's death and exit), so `start()` can recover it.

        A server this object started is crashed through its keeper, which knows the real
        postmaster; otherwise the pid in postmaster.pid is signalled as the server's user, who
        controls that file and so must not get root to signal a pid of its choosing.
        """
        if self._keeper is not None:
            if not keeper.crash(self._keeper, timeout):
                raise LocalPostgresError(f"the keeper of {self.datadir} survived SIGKILL for {timeout:.0f}s")
            self._keeper = None
            return
        pid = self.pid()
        if pid is None:
            return
        self._signal_as_server_user(pid, timeout)
        if not wait_until(lambda: not pid_alive(pid), timeout):
            raise LocalPostgresError(f"postmaster {pid} survived SIGKILL for {timeout:.0f}s")

    def _signal_as_server_user(self, pid: int, timeout: float) -> None:
        """SIGKILL `pid` with no more rights than the server's user has (`pg_ctl kill`, as that user)."""
        pg_ctl = str(self.binaries.tool("pg_ctl"))
        result = self._tool_run([pg_ctl, "kill", "KILL", str(pid)], timeout)
        if result.returncode != 0 and pid_alive(pid):
            error = (result.stderr.strip().splitlines() or ["failed"])[-1]
            raise LocalPostgresError(
                f"cannot kill pid {pid}, named in {self.pidfile}: {error}",
                hint="that is not a process of the server's user: the file was tampered with",
            )

    def remove(self) -> None:
        """Stop the server (kill it if a stop fails) and delete the data directory, our confdir
        and the log. (shutil.rmtree works through descriptors: it follows no symlink.)"""
        try:
            self.stop(timeout=30)
        except LocalPostgresError:
            self.kill()
        shutil.rmtree(self.datadir, ignore_errors=True)
        shutil.rmtree(self.confdir, ignore_errors=True)
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
