"""Colour and the live spinner line: what a terminal gets and a pipe does not."""

from __future__ import annotations

import dataclasses
import re
import threading
import time
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from dbos_migrate.context import ByteWriter, TextWriter

_SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"

# C0 controls but newline and tab, DEL, C1 controls, and the bidirectional overrides that
# make a terminal show text other than what it is (docs/security.md, "Text that others
# control"). A single-line field has its line feeds and tabs escaped too.
_UNPRINTABLE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
_UNPRINTABLE_LINE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]")
#: The most characters of one field that any renderer shows (text, GitHub, step summary):
#: a longer value shows its beginning and its length (docs/security.md).
FIELD_LIMIT = 400
#: The same for free text of several lines (an error message and its hint).
TEXT_LIMIT = 4000
_COMMAND_LINE = re.compile(r"^([ \t]*)::", re.M)
T = TypeVar("T")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]


def printable(text: str, limit: int | None = FIELD_LIMIT, *, lines: bool = False) -> str:
    """`text` as one line that cannot drive a terminal or a CI log: every control character,
    line feed and tab included, and every bidirectional control shown as an escape (`\\x1b`,
    `\\n`, `\\u202e`), and at most `limit` characters of it, then its length. With `lines`,
    line feeds and tabs stay (free text of several lines)."""
    if limit is not None and len(text) > limit:
        text = f"{text[:limit]}... ({len(text)} characters)"
    pattern = _UNPRINTABLE if lines else _UNPRINTABLE_LINE
    return pattern.sub(_escape, text) if pattern.search(text) else text


def printable_text(text: str) -> str:
    """Free text of several lines (an error message, a hint): as printable(), lines kept, and
    a line that would begin with `::` gets a backslash before it, so that no line of it can be
    read as a GitHub workflow command (`::warning::`, `::add-mask::`)."""
    return _COMMAND_LINE.sub("\\1\\\\::", printable(text, TEXT_LIMIT, lines=True))


def printable_fields(value: T) -> T:
    """`value` (an event, a report, a string, tuples, lists and dicts of them) with `printable()`
    applied to every string inside: each one a single line of at most FIELD_LIMIT characters.
    Strings from a server, a history table or a config are rendered through this, never raw."""
    item: Any = value
    if type(item) is str:
        item = printable(item)
    elif dataclasses.is_dataclass(item) and not isinstance(item, type):
        changes = {}
        for f in dataclasses.fields(item):
            if f.init:
                before = getattr(item, f.name)
                after = printable_fields(before)
                if after is not before:
                    changes[f.name] = after
        if changes:  # nothing to escape, the common case: no copy
            item = dataclasses.replace(item, **changes)
    elif type(item) in (tuple, list):
        cleaned = [printable_fields(x) for x in item]
        if any(a is not b for a, b in zip(cleaned, item, strict=True)):
            item = type(item)(cleaned)
    elif type(item) is dict:  # keys too: workflow names and statuses read from a database
        pairs = [(printable_fields(k), printable_fields(v)) for k, v in item.items()]
        if any(k2 is not k or v2 is not v for (k2, v2), (k, v) in zip(pairs, item.items(), strict=True)):
            item = dict(pairs)
    result: T = item
    return result


class Style:
    """ANSI colour, or nothing at all when colour is off (NO_COLOR, not a terminal)."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled

    def _wrap(self, code: str, text: str) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.enabled else text

    def bold(self, text: str) -> str:
        return self._wrap("1", text)

    def red(self, text: str) -> str:
        return self._wrap("31;1", text)

    def green(self, text: str) -> str:
        return self._wrap("32", text)

    def yellow(self, text: str) -> str:
        return self._wrap("33;1", text)

    def dim(self, text: str) -> str:
        return self._wrap("2", text)


class LiveLine:
    """A spinner line on a terminal that steps aside whenever command output is written."""

    def __init__(self, term: TextWriter, style: Style) -> None:
        self.term = term
        self.style = style
        self.lock = threading.RLock()
        self.label = ""
        self.start = 0.0
        self.drawn = False
        self.at_line_start = True
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def begin(self, label: str) -> None:
        self.label = label
        self.start = time.monotonic()
        self._stop.clear()
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()

    def end(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        with self.lock:
            self.clear()

    def show(self, text: str) -> None:
        """A transient status line (a countdown), replaced by whatever is written next."""
        with self.lock:
            self.term.write(f"\r\x1b[K{text}")
            self.term.flush()
            self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            self.term.write("\r\x1b[K")
            self.term.flush()
            self.drawn = False

    def _spin(self) -> None:
        frame = 0
        while not self._stop.wait(0.1):
            with self.lock:
                if not self.at_line_start:
                    continue
                elapsed = time.monotonic() - self.start
                glyph = _SPINNER[frame % len(_SPINNER)]
                self.term.write(f"\r\x1b[K{self.style.dim(f'{glyph} {self.label} {elapsed:.1f}s')}")
                self.term.flush()
                self.drawn = True
                frame += 1


class LiveStream:
    """A binary stream that clears the spinner line before command output lands."""

    def __init__(self, raw: ByteWriter, live: LiveLine) -> None:
        self.raw = raw
        self.live = live

    def write(self, data: bytes) -> int:
        if not data:
            return 0
        with self.live.lock:
            self.live.clear()
            self.raw.write(data)
            self.raw.flush()
            self.live.at_line_start = data.endswith(b"\n")
        return len(data)

    def flush(self) -> None:
        self.raw.flush()
