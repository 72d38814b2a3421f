"""Run one migration command: `/bin/sh -c`, its own process group, live scrubbed output.

Three guarantees live here (docs/reliability.md):
- a command never outlives dbos-migrate: the shell gets PR_SET_PDEATHSIG on Linux, and a
  watchdog shell kills the whole process group when our end of its pipe closes, which
  the kernel does for us even under SIGKILL (this also covers other POSIX systems);
- no command outlives its run: `run_command` returns only once the command's process group
  and (on Linux) every descendant it left running are gone (TERM, the grace period, KILL;
  a second signal kills at once), so the lock is released after them (see reaper.py);
- output is streamed as it comes, with every form of the password scrubbed out.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from types import FrameType

from dbos_migrate.context import ByteWriter
from dbos_migrate.engine import reaper
from dbos_migrate.engine.scrub import PipeFeeder, Scrubber
from dbos_migrate.errors import Interrupted
from dbos_migrate.model import CommandResult

DEFAULT_GRACE = 5.0
SHELL = "/bin/sh"
_WATCHDOG = 'read -r line; [ "$line" = done ] || kill -KILL -"$1" 2>/dev/null'


class Interrupts:
    """SIGINT/SIGTERM while a run is in progress.

    Outside a command the signal raises Interrupted at once. During a command it is
    recorded instead, so the runner can stop the process group and the run can be
    recorded as interrupted before exiting 130/143.
    """

    def __init__(self) -> None:
        self.received: list[int] = []
        self.in_command = False
        self._previous: dict[int, object] = {}
        self._wake_r = self._wake_w = -1
        self._old_wakeup = -1
        self.stop_reason: str | None = None
        self.stop_grace = DEFAULT_GRACE

    def stop(self, reason: str, grace: float) -> None:
        """Ask the running command (and any later one) to stop, from any thread: TERM, `grace`
        seconds, KILL, as for a signal; the run then ends with the caller's error (the lease's,
        docs/reliability.md)."""
        self.stop_grace = grace
        self.stop_reason = reason
        if self._wake_w != -1:
            with contextlib.suppress(OSError):
                os.write(self._wake_w, b"\0")

    def __enter__(self) -> Interrupts:
        if os.name != "posix":
            return self
        try:
            self._wake_r, self._wake_w = os.pipe()
            os.set_blocking(self._wake_r, False)
            os.set_blocking(self._wake_w, False)
            self._old_wakeup = signal.set_wakeup_fd(self._wake_w)
            for sig in (signal.SIGINT, signal.SIGTERM):
                self._previous[sig] = signal.signal(sig, self._handle)
        except ValueError:  # not the main thread: leave signals alone
            self._close_pipe()
        return self

    def __exit__(self, *exc: object) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
        if self._wake_w != -1:
            signal.set_wakeup_fd(self._old_wakeup)
        self._close_pipe()

    def _close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            if fd != -1:
                os.close(fd)
        self._wake_r = self._wake_w = -1

    @property
    def wake_fd(self) -> int:
        return self._wake_r

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received.append(signum)
        if not self.in_command:
            raise Interrupted(signum)

    def drain(self) -> None:
        if self._wake_r != -1:
            try:
                while os.read(self._wake_r, 512):
                    pass
            except (BlockingIOError, OSError):
                pass


def _child_setup(parent: int) -> Callable[[], None]:
    """preexec_fn: die with our parent (Linux), and exit if it is already gone."""
    prctl = reaper.prctl()

    def setup() -> None:
        if prctl is not None:
            prctl(reaper.PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:
            os._exit(137)

    return setup


def _wire(scrub: Scrubber, out: ByteWriter, err: ByteWriter) -> tuple[PipeFeeder, PipeFeeder]:
    """How the command's stdout and stderr pipes reach the scrubber and our streams: one
    scrubber for both, so a password split between the two pipes is caught too
    (docs/security.md). The streams never raise (Context guards them), so a broken terminal
    or pipe of ours never aborts a command."""
    return scrub.streams(out, err)


def _start(command: str, cwd: str, env: Mapping[str, str]) -> tuple[subprocess.Popen[bytes], subprocess.Popen[bytes]]:
    """The command's shell, leading a session of its own, and its watchdog (module docstring).
    If the watchdog cannot start, the command is killed: it must never run unwatched."""
    proc = subprocess.Popen(
        [SHELL, "-c", command],
        cwd=cwd,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
        preexec_fn=_child_setup(os.getpid()),
    )
    try:
        watchdog = subprocess.Popen(
            [SHELL, "-c", _WATCHDOG, "dbos-migrate-watchdog", str(proc.pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except BaseException:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return proc, watchdog


def _exit_fd(pid: int) -> int:
    """A pidfd that becomes readable when `pid` exits (Linux 5.3+), so the loop wakes at once;
    -1 where there is none and the loop polls instead."""
    pidfd_open = getattr(os, "pidfd_open", None)
    if pidfd_open is None:
        return -1
    try:
        fd: int = pidfd_open(pid)
    except OSError:
        return -1
    return fd


def run_command(
    index: int,
    command: str,
    shown: str,
    *,
    cwd: str,
    env: Mapping[str, str],
    scrub: Scrubber,
    out: ByteWriter,
    err: ByteWriter,
    timeout: float | None,
    interrupts: Interrupts,
    grace: float = DEFAULT_GRACE,
) -> CommandResult:
    """Run `command` with `/bin/sh -c` to completion, timeout or interruption.

    It returns (or raises CommandInterrupted) only once the command's process group and every
    process it left running are gone, so the caller releases the lock after them, never before
    (docs/reliability.md, "No command outlives its run"). `shown` is the masked text recorded
    in results; `command` itself is never printed.
    """
    started_at = datetime.now(timezone.utc)
    start = time.monotonic()
    deadline = start + timeout if timeout else None
    tracking = reaper.become_subreaper()
    spare = reaper.own_children() if tracking else set()
    interrupts.drain()
    first_signal = len(interrupts.received)
    interrupts.in_command = True
    try:
        proc, watchdog = _start(command, cwd, env)
        helper = reaper.stat(watchdog.pid) if tracking else None
        if helper is not None:
            spare.add(helper.key)  # our own helper: never ended as a leftover of the command
        ending = reaper.Ending(proc, grace, spare, tracking)
        watched = _Watched(proc, watchdog, ending, _wire(scrub, out, err), interrupts, first_signal, deadline)
        stop_signal, timed_out = watched.supervise()
        stopped = watched.stopped
        code = proc.poll()  # reaped by the loop, unless it survived even SIGKILL (reaper.AFTER_KILL)
        if code is None:
            code = -signal.SIGKILL
    finally:
        interrupts.in_command = False
    # A signal that came after the loop had ended still stops the run (no further command);
    # the result keeps the status the command really ended with.
    late = interrupts.received[first_signal:]
    duration = time.monotonic() - start
    finished_at = datetime.now(timezone.utc)
    exit_code: int | None = code if code >= 0 else None
    sig = -code if code < 0 else None
    if stop_signal is not None or stopped:
        status = "interrupted"
    elif timed_out:
        status = "timed_out"
    elif code == 0:
        status = "succeeded"
    else:
        status = "failed"
    ended = tuple(scrub.text(name) for name in ending.ended)
    result = CommandResult(index, shown, status, exit_code, sig, duration, started_at, finished_at, ended)
    if stop_signal is not None or late:
        raise CommandInterrupted(result, stop_signal if stop_signal is not None else late[0])
    if stopped:
        raise CommandStopped(result, interrupts.stop_reason or "stopped")
    return result


class CommandStopped(Exception):
    """The command was stopped on request (`Interrupts.stop`); carries its result for the history."""

    def __init__(self, result: CommandResult, reason: str) -> None:
        super().__init__(f"stopped: {reason}")
        self.result = result
        self.reason = reason


class CommandInterrupted(Exception):
    """The command was stopped by SIGINT/SIGTERM; carries its result for the history."""

    def __init__(self, result: CommandResult, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.result = result
        self.signum = signum


@dataclass
class _Watched:
    """A started command and what watches over it, while `run_command` waits for its end."""

    proc: subprocess.Popen[bytes]
    watchdog: subprocess.Popen[bytes]
    ending: reaper.Ending
    sinks: tuple[PipeFeeder, PipeFeeder]
    interrupts: Interrupts
    first_signal: int
    deadline: float | None
    stopped: bool = False

    def supervise(self) -> tuple[int | None, bool]:
        """Stream the output until the command and all it left running are gone; then stand
        the watchdog down. Returns the first signal received meanwhile and whether the
        deadline passed. Should anything here fail, the command is killed on the way out:
        the watchdog, told nothing, kills its group too."""
        done = False
        try:
            outcome = self._stream_until_gone()
            done = True
            return outcome
        finally:
            if not done:
                self.ending.abort()
            for sink in self.sinks:
                sink.flush()
            for pipe in (self.proc.stdout, self.proc.stderr):
                if pipe is not None:
                    pipe.close()
            self._stand_down(done)

    def _stand_down(self, done: bool) -> None:
        try:
            assert self.watchdog.stdin is not None
            if done:
                self.watchdog.stdin.write(b"done\n")
            self.watchdog.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        self.watchdog.wait()

    def _stream_until_gone(self) -> tuple[int | None, bool]:
        """The loop: read both pipes as data comes, and start or escalate the ending on a
        signal, a second signal or the deadline. Output keeps streaming while the group is
        being ended; the loop ends when `ending.step` finds nothing left, not when the
        shell exits."""
        proc, ending, interrupts = self.proc, self.ending, self.interrupts
        assert proc.stdout is not None and proc.stderr is not None
        pipes = {proc.stdout.fileno(): self.sinks[0], proc.stderr.fileno(): self.sinks[1]}
        exit_fd = _exit_fd(proc.pid)
        sel = selectors.DefaultSelector()
        for fd in pipes:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        for fd in (interrupts.wake_fd, exit_fd):
            if fd != -1:
                sel.register(fd, selectors.EVENT_READ)
        stop_signal: int | None = None
        timed_out = False
        stop_kill_at = 0.0
        try:
            while True:
                now = time.monotonic()
                signals = interrupts.received[self.first_signal :]
                if signals and stop_signal is None:
                    stop_signal = signals[0]
                    ending.begin(now)
                if len(signals) >= 2:
                    ending.kill(now)
                if interrupts.stop_reason is not None and stop_signal is None:
                    if not self.stopped:
                        self.stopped, stop_kill_at = True, now + interrupts.stop_grace
                        ending.begin(now)
                    if now >= stop_kill_at:
                        ending.kill(now)
                overdue = self.deadline is not None and now >= self.deadline
                if overdue and not ending.started and proc.poll() is None:
                    timed_out = True
                    ending.begin(now)
                if ending.step(now):
                    break
                for key, _ in sel.select(self._wait(now, exit_fd, sel, pipes)):
                    fd = int(key.fd)
                    if fd == interrupts.wake_fd:
                        interrupts.drain()
                    elif fd == exit_fd:
                        sel.unregister(fd)
                    else:
                        _pump(fd, pipes[fd], sel)
            for fd, sink in pipes.items():  # what the last writers left in the pipes
                if fd in sel.get_map():
                    _pump(fd, sink, sel, final=True)
        finally:
            sel.close()
            if exit_fd != -1:
                os.close(exit_fd)
        return stop_signal, timed_out

    def _wait(self, now: float, exit_fd: int, sel: selectors.BaseSelector, pipes: Mapping[int, PipeFeeder]) -> float:
        """How long to block on output: while ending, until the next look at the group; while
        the command runs, until the deadline (a pidfd wakes us when the shell exits; without
        one we poll, briefly once both pipes are closed: the shell is then about to exit)."""
        if self.ending.started:
            return self.ending.wait(now)
        reading = any(fd in sel.get_map() for fd in pipes)
        wait = 1.0 if exit_fd != -1 else 0.1 if reading else 0.01
        if self.deadline is not None:
            wait = min(wait, self.deadline - now)
        return max(wait, 0)


def _pump(fd: int, sink: PipeFeeder, sel: selectors.BaseSelector, final: bool = False) -> None:
    """Read what `fd` has (all of it when `final`) into its sink; unregister it at EOF."""
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            if final:
                sel.unregister(fd)
            return
        if not chunk:
            sel.unregister(fd)
            return
        sink.feed(chunk)
        if not final:
            return
