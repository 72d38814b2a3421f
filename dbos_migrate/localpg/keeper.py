"""The keeper: a tiny Python process that forks the postmaster and reaps everything below it.

Why not `pg_ctl start`: on machines whose PID 1 does not reap orphans (containers without an
init, CI sandboxes), a daemonized postmaster that dies becomes a zombie; `kill(pid, 0)` succeeds
on a zombie, so the next postmaster refuses to start ("lock file postmaster.pid already
exists") and the dead server's children linger as `<defunct>`. The keeper marks itself a child
subreaper (Linux), so every process of the cluster ends up its child and is reaped; it exits
once all are gone, which is how `Cluster.stop()`/`kill()` know the cluster is really down.

As root the keeper stays root (so the server's user cannot signal it) and drops to the
server's user only in the forked child, which then does the only thing we ever do inside the
data directory: remove a stale postmaster.pid, as that user.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import typing
from collections.abc import Sequence

from dbos_migrate.localpg.base import child_env
from dbos_migrate.localpg.fs import groups_of

if typing.TYPE_CHECKING:
    import pwd

KEEPER_SOURCE = r"""# dbos-migrate postgres keeper: fork the postmaster, reap everything below it
import ctypes, json, os, signal, sys
spec = json.loads(sys.argv[2])
for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTERM):
    signal.signal(sig, signal.SIG_IGN)
try:
    ctypes.CDLL(None, use_errno=True).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
except Exception:
    pass
# SIGUSR1 from the starter: crash the server (we then reap all and exit).
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
        if spec["stale_pidfile"]:
            try:
                os.unlink(spec["stale_pidfile"])
            except OSError:
                pass
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


def launch(
    argv: Sequence[str], entry: pwd.struct_passwd | None, log_fd: int, stale_pidfile: str | None
) -> subprocess.Popen[bytes]:
    """Start a keeper that runs `argv` (the postmaster) as `entry` (None: ourselves), its output
    on `log_fd`, in a session of its own. `stale_pidfile`, if given, is removed first, as
    `entry`. The command line holds no secret: `ps` shows it."""
    spec = {
        "argv": list(argv),
        "uid": entry.pw_uid if entry else None,
        "gid": entry.pw_gid if entry else None,
        "groups": groups_of(entry) if entry else [],
        "stale_pidfile": stale_pidfile,
    }
    # The program comes on stdin (`python -`) so `ps` shows a short, readable command.
    keeper = subprocess.Popen(
        [sys.executable, "-I", "-", "dbos-migrate-postgres-keeper", json.dumps(spec)],
        stdin=subprocess.PIPE,
        stdout=log_fd,
        stderr=log_fd,
        cwd="/",
        env=child_env(),
        start_new_session=True,
    )
    assert keeper.stdin is not None
    with keeper.stdin:
        keeper.stdin.write(KEEPER_SOURCE.encode())
    return keeper


def crash(keeper: subprocess.Popen[bytes], timeout: float = 15.0) -> bool:
    """SIGKILL the postmaster through its keeper (SIGUSR1) and wait until the keeper has reaped
    every process of the cluster. If even that fails, SIGKILL the keeper's process group (it
    leads its own session). True once the keeper is gone."""
    with contextlib.suppress(ProcessLookupError):
        keeper.send_signal(signal.SIGUSR1)
    if reap(keeper, timeout):
        return True
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(keeper.pid, signal.SIGKILL)
    return reap(keeper, 10)


def reap(keeper: subprocess.Popen[bytes], timeout: float) -> bool:
    """Wait for `keeper` to exit; True once it is gone (so is every process of its cluster)."""
    try:
        keeper.wait(timeout)
    except subprocess.TimeoutExpired:
        return False
    return True
