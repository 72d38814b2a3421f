"""The outside world of a run: environment, streams, terminal and clock, in one object.

The CLI builds one `Context` from the real process (`Context.from_process`); tests build
one from in-memory streams (tests/inmemory.py). Verbs, the runner and the reporters
receive it and never reach for `sys.stdout`, `os.environ` or the terminal themselves
(docs/architecture.md).

Writes to stdout and stderr never raise: a closed pipe (`dbos-migrate up | head`) or a
full disk must not abort a migration half-way, so a failing stream is marked broken and
later writes to it are dropped (docs/reliability.md, "Output failures never abort a run").
"""

from __future__ import annotations

import io
import os
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, BinaryIO, Protocol, TextIO

Ask = Callable[[str, bool], "str | None"]


class TextWriter(Protocol):
    """Where the tool's own text goes: a guarded stream (or any file-like object in tests)."""

    def write(self, text: str, /) -> int: ...

    def flush(self) -> None: ...


class ByteWriter(Protocol):
    """Where a command's output is written: a guarded stream, or the spinner's wrapper of one."""

    def write(self, data: bytes, /) -> int: ...

    def flush(self) -> None: ...


def utc_now() -> datetime:
    return datetime.now(timezone.utc)


class _Guarded:
    """What the two guarded streams share: after the first failed write or flush, `broken`
    is set and every later call is dropped silently."""

    broken: bool

    def _attempt(self, call: Callable[[], object]) -> None:
        if not self.broken:
            try:
                call()
            except (OSError, ValueError):
                self.broken = True


class GuardedText(_Guarded, io.TextIOBase):
    """A text stream whose write and flush never raise; `broken` tells whether one failed."""

    def __init__(self, raw: TextIO) -> None:
        self.raw = raw
        self.broken = False
        self.written = False  # whether anything was written: the CLI's last-resort JSON document

    def write(self, text: str) -> int:
        if text:
            self.written = True
        self._attempt(lambda: self.raw.write(text))
        return len(text)

    def flush(self) -> None:
        self._attempt(self.raw.flush)

    def isatty(self) -> bool:
        return _is_tty(self.raw)


class GuardedBytes(_Guarded, io.RawIOBase):
    """The binary twin of GuardedText, for the commands' streamed output."""

    def __init__(self, raw: BinaryIO) -> None:
        self.raw = raw
        self.broken = False

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        if len(data):
            self._attempt(lambda: self.raw.write(data))
        return len(data)

    def flush(self) -> None:
        self._attempt(self.raw.flush)


def _is_tty(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, OSError, ValueError):
        return False


@dataclass
class Context:
    """Everything a run may touch outside its own arguments.

    `stdout`/`stderr` are for the tool's own text; `out_bytes`/`err_bytes` carry the
    commands' streamed output (they share the same destinations). `ask` prompts a person
    (None: nobody is at a terminal); `clock` is monotonic seconds, `now` the UTC time.
    """

    environ: Mapping[str, str]
    stdout: GuardedText
    stderr: GuardedText
    out_bytes: ByteWriter
    err_bytes: ByteWriter
    stdout_isatty: bool = False
    stderr_isatty: bool = False
    ask: Ask | None = None
    clock: Callable[[], float] = time.monotonic
    now: Callable[[], datetime] = utc_now

    @classmethod
    def from_process(cls) -> Context:
        """The real process: its environment, sys.std*, and /dev/tty-style prompting."""
        return cls(
            environ=dict(os.environ),
            stdout=GuardedText(sys.stdout),
            stderr=GuardedText(sys.stderr),
            out_bytes=GuardedBytes(sys.stdout.buffer),
            err_bytes=GuardedBytes(sys.stderr.buffer),
            stdout_isatty=_is_tty(sys.stdout),
            stderr_isatty=_is_tty(sys.stderr),
            ask=_terminal_prompt() if _is_tty(sys.stdin) else None,
        )

    def color(self, stream: str = "stdout") -> bool:
        """Colour on this stream: NO_COLOR wins, then FORCE_COLOR, then whether it is a terminal."""
        if self.environ.get("NO_COLOR"):
            return False
        if self.environ.get("FORCE_COLOR"):
            return True
        return self.stdout_isatty if stream == "stdout" else self.stderr_isatty

    @property
    def live(self) -> bool:
        """Whether stdout is a terminal that can show a spinner (not TERM=dumb)."""
        return self.stdout_isatty and self.environ.get("TERM") != "dumb"

    def silence_broken_stdout(self) -> None:
        """After a closed pipe, point fd 1 at /dev/null so the interpreter's final flush is quiet."""
        if self.stdout.broken or getattr(self.out_bytes, "broken", False):
            try:
                fd = os.open(os.devnull, os.O_WRONLY)
                os.dup2(fd, 1)
                os.close(fd)
            except OSError:
                pass


def _terminal_prompt() -> Ask:
    """Read one answer from the terminal; `secret` turns echo off (the password prompt)."""

    def ask(prompt: str, secret: bool) -> str | None:
        if secret:
            import getpass

            try:  # getpass writes the prompt only once echo is off: nothing typed is ever shown
                return getpass.getpass(prompt, stream=sys.stderr)
            except (EOFError, KeyboardInterrupt):
                sys.stderr.write("\n")
                return None
        sys.stderr.write(prompt)
        sys.stderr.flush()
        line = sys.stdin.readline()
        return line.rstrip("\n") if line else None

    return ask
