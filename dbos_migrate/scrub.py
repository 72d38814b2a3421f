"""The one mechanism that keeps passwords out of everything dbos-migrate prints or records.

URLs are masked structurally where they are rendered (target.PgUrl.masked). Everything
else that is free text (driver errors, command output, headers, history rows) passes
through a Scrubber, which replaces each secret in its raw and percent-encoded forms.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote, quote_plus

MASK = "***"
# The documented DBOS and PostgreSQL defaults. They are public, and scrubbing them from
# free text would mangle names such as `dbos_migrate`; they are still masked in URLs.
PUBLIC_PASSWORDS = frozenset({"dbos", "postgres"})
_URL_PASSWORD = re.compile(r"(://[^:/?#@\s]*:)[^@\s]+@")
_KV_PASSWORD = re.compile(r"\b(password\s*=\s*)('[^']*'|\S+)", re.I)


def secret_forms(secret: str) -> set[str]:
    """The spellings a secret can take in output: raw and percent-encoded variants."""
    forms = {secret, quote(secret, safe=""), quote_plus(secret, safe=""), quote(secret)}
    return {f for f in forms if f}


class Scrubber:
    """Replaces known secrets, and any `scheme://user:password@` or `password=...`, with ***."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        forms: set[str] = set()
        for secret in secrets:
            if secret and secret not in PUBLIC_PASSWORDS:
                forms |= secret_forms(secret)
        self._forms = sorted(forms, key=len, reverse=True)
        self._bforms = [f.encode("utf-8") for f in self._forms]

    @property
    def active(self) -> bool:
        return bool(self._forms)

    def text(self, value: str) -> str:
        for form in self._forms:
            if form in value:
                value = value.replace(form, MASK)
        value = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + "@", value)
        return _KV_PASSWORD.sub(lambda m: m.group(1) + MASK, value)

    def data(self, value: bytes) -> bytes:
        for form in self._bforms:
            if form in value:
                value = value.replace(form, MASK.encode())
        return value

    def stream(self) -> StreamScrubber:
        return StreamScrubber(self)

    @property
    def longest(self) -> int:
        return max((len(f) for f in self._bforms), default=0)

    @property
    def spans_newline(self) -> bool:
        return any(b"\n" in f for f in self._bforms)


class StreamScrubber:
    """Scrubs a byte stream that arrives in arbitrary chunks.

    A secret split across two reads must still be caught, so the last `longest - 1`
    bytes are held back until more data (or a newline, or the end) shows they are safe.
    """

    def __init__(self, scrubber: Scrubber) -> None:
        self._scrubber = scrubber
        self._keep = max(scrubber.longest - 1, 0)
        self._newline_safe = not scrubber.spans_newline
        self._buffer = b""

    def feed(self, chunk: bytes) -> bytes:
        if not self._keep:
            return chunk
        buf = self._scrubber.data(self._buffer + chunk)
        cut = max(len(buf) - self._keep, 0)
        if self._newline_safe:
            cut = max(cut, buf.rfind(b"\n") + 1)
        self._buffer = buf[cut:]
        return buf[:cut]

    def flush(self) -> bytes:
        out = self._scrubber.data(self._buffer)
        self._buffer = b""
        return out
