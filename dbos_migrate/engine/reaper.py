"""Ending what a command leaves running: its process group and, on Linux, every descendant.

A migration that keeps running after dbos-migrate has released the lock is the failure this
module exists to prevent (docs/reliability.md, "No command outlives its run"). The runner
asks it, once the shell has exited or a stop was requested, to end the command's process
group and every process the command started, including those that left the group (`setsid`,
`nohup ... &`, daemonizing double forks), before `run_command` returns and the lock is freed.

How those are found without scanning all of /proc: dbos-migrate makes itself a child
subreaper (Linux), so an orphaned descendant is re-parented to us instead of to PID 1, and
stays reachable from `/proc/self/task/*/children` downwards. We reap the ones re-parented to
us by pid (`waitpid(pid, WNOHANG)`), never with `waitpid(-1)`, which would steal the exit
status of the subprocess.Popen children (the command's shell, the watchdog).

Elsewhere (no /proc children lists, no subreaper) only the process group is handled.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable
from typing import NamedTuple

PR_SET_PDEATHSIG = 1
PR_SET_CHILD_SUBREAPER = 36
POLL = 0.05  # seconds between looks at the group while it is being ended
AFTER_KILL = 5.0  # seconds to wait for SIGKILLed processes before giving up on them

Key = tuple[int, int]  # (pid, start time): one process, even if its pid is reused later


def prctl() -> Callable[..., int] | None:
    """libc's prctl on Linux, else None. Loaded in the parent: a preexec_fn must not import."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        import ctypes

        fn: Callable[..., int] = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    return fn


_subreaper: dict[int, bool] = {}  # by pid: the flag is not inherited across fork


def become_subreaper() -> bool:
    """Make this process the child subreaper of what it starts from now on; True if it is.

    Done once per process, before the first command. Only when /proc lists children: without
    those lists the orphans re-parented to us could be neither found nor reaped.
    """
    pid = os.getpid()
    if pid not in _subreaper:
        fn = prctl()
        listed = os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children")
        _subreaper[pid] = bool(fn is not None and listed and fn(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) == 0)
    return _subreaper[pid]


class Proc(NamedTuple):
    """The fields of /proc/<pid>/stat that ending a tree needs."""

    pid: int
    ppid: int
    pgrp: int
    state: str
    start: int

    @property
    def key(self) -> Key:
        return (self.pid, self.start)

    @property
    def zombie(self) -> bool:
        return self.state in ("Z", "X")


def stat(pid: int) -> Proc | None:
    """One process's stat, or None once it is gone (comm may hold spaces and parentheses)."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
        return Proc(pid, int(fields[1]), int(fields[2]), fields[0].decode(), int(fields[19]))
    except (OSError, IndexError, ValueError):
        return None


def children(pid: int | str) -> list[int]:
    """The children of `pid` ("self": ours), from every thread's /proc children list."""
    base = f"/proc/{pid}/task"
    try:
        tasks = os.listdir(base)
    except OSError:
        return []
    found: list[int] = []
    for tid in tasks:
        with contextlib.suppress(OSError, ValueError), open(f"{base}/{tid}/children", "rb") as f:
            found.extend(int(p) for p in f.read().split())
    return found


def descendants(spare: set[Key]) -> list[Proc]:
    """Our descendants, zombies included, found by walking the children lists down from us;
    the subtrees rooted at `spare` (processes that are not the command's) are left out."""
    found: list[Proc] = []
    seen: set[Key] = set()
    todo = children("self")
    while todo:
        proc = stat(todo.pop())
        if proc is None or proc.key in seen or proc.key in spare:
            continue
        seen.add(proc.key)
        found.append(proc)
        if not proc.zombie:  # a zombie's children have already been re-parented
            todo.extend(children(proc.pid))
    return found


def own_children() -> set[Key]:
    """Our children now: processes a command must never be confused with."""
    return {p.key for p in (stat(pid) for pid in children("self")) if p is not None}


def describe(pid: int) -> str:
    """`pid 1234 (sleep)`: the name from comm, never the command line (it can hold secrets)."""
    try:
        with open(f"/proc/{pid}/comm", "rb") as f:
            name = f.read().decode(errors="replace").strip()
    except OSError:
        name = "?"
    return f"pid {pid} ({name})"


def _signal(pid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)


class Ending:
    """Ends one command: TERM, a grace period while anything is left, then KILL.

    `begin` starts it (a signal, a timeout); `step` starts it by itself once the shell has
    exited and something is left, and says when everything is gone. The process group gets
    TERM once, as a whole; descendants outside it get TERM one by one as they are found.
    After the grace period, or on `kill` (a second signal), everything gets KILL.
    """

    def __init__(self, proc: subprocess.Popen[bytes], grace: float, spare: set[Key], tracking: bool) -> None:
        self._proc = proc
        self._pgid = proc.pid
        self._grace = grace
        self._spare = spare
        self._tracking = tracking
        self._kill_at: float | None = None
        self._give_up_at: float | None = None
        self._group_gone = False
        self._termed: set[Key] = set()
        self._ended: dict[Key, str] = {}

    @property
    def started(self) -> bool:
        return self._kill_at is not None

    @property
    def ended(self) -> tuple[str, ...]:
        """What was still running after the shell had exited and had to be ended."""
        return tuple(self._ended.values())

    def begin(self, now: float) -> None:
        """Start the end: TERM the group now, and start the grace period (once)."""
        if self._kill_at is None:
            self._kill_at = now + self._grace
            self._signal_group(signal.SIGTERM)

    def kill(self, now: float) -> None:
        """KILL now (grace over, or a second signal); then wait at most AFTER_KILL."""
        self.begin(now)
        if self._give_up_at is None:
            self._give_up_at = now + AFTER_KILL
            self._signal_group(signal.SIGKILL)

    def wait(self, now: float) -> float:
        """How long the runner may block on output before the next `step`."""
        if self._kill_at is not None and self._give_up_at is None:
            return max(min(POLL, self._kill_at - now), 0)
        return POLL

    def step(self, now: float) -> bool:
        """Look once: reap, signal what is left, and say whether everything is gone."""
        shell_done = self._proc.poll() is not None
        if not shell_done and not self.started:
            return False
        if self._kill_at is not None and now >= self._kill_at:
            self.kill(now)
        live = self._live()
        group = self._group_alive()
        if shell_done:
            if not live and not group:
                return True
            self.begin(now)
            self._name(live, group)
        self._signal_each(live)
        if self._give_up_at is not None and now >= self._give_up_at:
            self._give_up(live, group)
            return True
        return False

    def abort(self) -> None:
        """KILL everything at once, without waiting: the runner itself is failing."""
        self._signal_group(signal.SIGKILL)
        for proc in self._live():
            _signal(proc.pid, signal.SIGKILL)

    def _live(self) -> list[Proc]:
        """Live descendants other than the shell; zombies re-parented to us are reaped."""
        if not self._tracking:
            return []
        me, live = os.getpid(), []
        for proc in descendants(self._spare):
            if proc.pid == self._pgid:
                continue  # the shell: subprocess.Popen reaps it; its group is signalled whole
            if proc.zombie:
                if proc.ppid == me:
                    with contextlib.suppress(ChildProcessError, OSError):
                        os.waitpid(proc.pid, os.WNOHANG)
                continue
            live.append(proc)
        return live

    def _group_alive(self) -> bool:
        """Whether the process group has any member, zombies included. Once seen empty it is
        never signalled again: its number may then be reused by someone else's group."""
        if self._group_gone:
            return False
        try:
            os.killpg(self._pgid, 0)
        except ProcessLookupError:
            self._group_gone = True
            return False
        except PermissionError:
            return True
        return True

    def _signal_group(self, sig: int) -> None:
        if not self._group_gone:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._pgid, sig)

    def _signal_each(self, live: Iterable[Proc]) -> None:
        if self._give_up_at is not None:
            self._signal_group(signal.SIGKILL)  # again: a member may have forked meanwhile
            for proc in live:
                _signal(proc.pid, signal.SIGKILL)
        elif self.started:
            for proc in live:
                if proc.pgrp != self._pgid and proc.key not in self._termed:
                    self._termed.add(proc.key)
                    _signal(proc.pid, signal.SIGTERM)

    def _name(self, live: list[Proc], group: bool) -> None:
        for proc in live:
            if proc.key not in self._ended:
                self._ended[proc.key] = describe(proc.pid)
        if group and not any(p.pgrp == self._pgid for p in live):
            self._ended.setdefault((self._pgid, -1), f"process group {self._pgid}")

    def _give_up(self, live: list[Proc], group: bool) -> None:
        note = f" (still there {AFTER_KILL:g}s after SIGKILL)"
        for proc in live:
            self._ended[proc.key] = self._ended.get(proc.key, describe(proc.pid)) + note
        if group and not live:
            self._ended[(self._pgid, -1)] = f"process group {self._pgid}{note}"
