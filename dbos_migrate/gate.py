"""A start-up gate for concurrent runs of the same app on the same machine.

When many runs start at once (a deploy fan-out, a CI matrix on one runner), they all load
the database driver at the same moment, competing for the CPU, and only then queue on
the PostgreSQL lock. Queuing on a local file lock *before* loading the driver, and leaving
it right after the first lock attempt, lets each run's start-up overlap the previous
run's commands instead. Nothing depends on it for correctness (the advisory lock does
that): the wait is bounded, and any failure to use the file means no gate.
"""

from __future__ import annotations

import hashlib
import os
import time

MAX_WAIT = 10.0


class StartGate:
    """Held from before the driver loads until the run's first try-lock has answered."""

    def __init__(self, name: str) -> None:
        digest = hashlib.sha256(name.encode()).hexdigest()[:20]
        uid = os.getuid() if hasattr(os, "getuid") else 0
        # Not tempfile.gettempdir(): importing tempfile costs ~10 ms, on every run's start-up.
        tmp = os.environ.get("TMPDIR") or "/tmp"
        self.path = os.path.join(tmp, f"dbos-migrate-{uid}", f"gate-{digest}")
        self._fd: int | None = None

    def enter(self, max_wait: float = MAX_WAIT) -> StartGate:
        try:
            import fcntl
        except ImportError:  # not POSIX: no gate
            return self
        try:
            os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return self
        deadline = time.monotonic() + max_wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                self._fd = fd
                return self
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    os.close(fd)
                    return self
                time.sleep(0.005)
            except OSError:
                os.close(fd)
                return self

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None
