"""Run one migration command: `/bin/sh -c`, its own process group, live scrubbed output.

Three guarantees live here:
- a command never outlives dbos-migrate: the shell gets PR_SET_PDEATHSIG on Linux, and a
  watchdog shell kills the whole process group when our end of its pipe closes, which
  the kernel does for us even under SIGKILL (this also covers other POSIX systems);
- Ctrl-C or SIGTERM stops the whole group: TERM first, KILL after a grace period, and a
  second signal kills at once;
- output is streamed as it comes, with every form of the password scrubbed out.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from types import FrameType

from dbos_migrate.context import ByteWriter
from dbos_migrate.errors import Interrupted
from dbos_migrate.model import CommandResult
from dbos_migrate.scrub import PipeFeeder, Scrubber

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
    prctl = None
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            prctl = ctypes.CDLL(None, use_errno=True).prctl
        except (OSError, AttributeError):
            prctl = None

    def setup() -> None:
        if prctl is not None:
            prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
        if os.getppid() != parent:
            os._exit(137)

    return setup


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


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

    `shown` is the masked text recorded in results; `command` itself is never printed.
    """
    started_at = datetime.now(timezone.utc)
    start = time.monotonic()
    deadline = start + timeout if timeout else None
    interrupts.drain()
    first_signal = len(interrupts.received)
    interrupts.in_command = True
    try:
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
        watchdog = subprocess.Popen(
            [SHELL, "-c", _WATCHDOG, "dbos-migrate-watchdog", str(proc.pid)],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        timed_out = False
        stop_signal: int | None = None
        kill_at: float | None = None
        assert proc.stdout is not None and proc.stderr is not None
        # One scrubber for both pipes, so a password split between them is caught too.
        feeders = scrub.streams(out, err)
        streams: dict[int, PipeFeeder] = {proc.stdout.fileno(): feeders[0], proc.stderr.fileno(): feeders[1]}
        sel = selectors.DefaultSelector()
        for fd in streams:
            os.set_blocking(fd, False)
            sel.register(fd, selectors.EVENT_READ)
        if interrupts.wake_fd != -1:
            sel.register(interrupts.wake_fd, selectors.EVENT_READ)
        open_fds = set(streams)
        while True:
            now = time.monotonic()
            signals = interrupts.received[first_signal:]
            if signals and stop_signal is None:
                stop_signal = signals[0]
                _kill_group(proc.pid, signal.SIGTERM)
                kill_at = now + grace
            if len(signals) >= 2 and kill_at is not None:
                _kill_group(proc.pid, signal.SIGKILL)
                kill_at = None
            if deadline is not None and now >= deadline and not timed_out and stop_signal is None:
                timed_out = True
                _kill_group(proc.pid, signal.SIGTERM)
                kill_at = now + grace
            if kill_at is not None and now >= kill_at:
                _kill_group(proc.pid, signal.SIGKILL)
                kill_at = None
            exited = proc.poll() is not None
            if not open_fds and exited:
                break
            waits = [0.1]
            if deadline is not None and not timed_out:
                waits.append(deadline - now)
            if kill_at is not None:
                waits.append(kill_at - now)
            # Once the shell has exited, read only what is already buffered: a background
            # child holding the pipe open must not keep the run waiting.
            for key, _ in sel.select(0 if exited else max(min(waits), 0)):
                fd = int(key.fd)
                if fd == interrupts.wake_fd:
                    interrupts.drain()
                    continue
                _pump(fd, streams, open_fds, sel)
            if exited:
                for fd in list(open_fds):
                    _pump(fd, streams, open_fds, sel, final=True)
        sel.close()
        code = proc.wait()
        for feeder in feeders:
            feeder.flush()
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        try:
            assert watchdog.stdin is not None
            watchdog.stdin.write(b"done\n")
            watchdog.stdin.close()
        except (BrokenPipeError, OSError):
            pass
        watchdog.wait()
    finally:
        interrupts.in_command = False
    duration = time.monotonic() - start
    finished_at = datetime.now(timezone.utc)
    exit_code: int | None = code if code >= 0 else None
    sig = -code if code < 0 else None
    if stop_signal is not None:
        status = "interrupted"
    elif timed_out:
        status = "timed_out"
    elif code == 0:
        status = "succeeded"
    else:
        status = "failed"
    result = CommandResult(index, shown, status, exit_code, sig, duration, started_at, finished_at)
    if stop_signal is not None:
        raise CommandInterrupted(result, stop_signal)
    return result


class CommandInterrupted(Exception):
    """The command was stopped by SIGINT/SIGTERM; carries its result for the history."""

    def __init__(self, result: CommandResult, signum: int) -> None:
        super().__init__(f"interrupted by signal {signum}")
        self.result = result
        self.signum = signum


def _pump(
    fd: int,
    streams: dict[int, PipeFeeder],
    open_fds: set[int],
    sel: selectors.BaseSelector,
    final: bool = False,
) -> None:
    feeder = streams[fd]
    while True:
        try:
            chunk = os.read(fd, 65536)
        except BlockingIOError:
            if final:
                sel.unregister(fd)
                open_fds.discard(fd)
            return
        if not chunk:
            sel.unregister(fd)
            open_fds.discard(fd)
            return
        feeder.feed(chunk)  # writes (and flushes) what is safe, to whichever pipe's sink
        if not final:
            return
