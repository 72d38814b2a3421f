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
# password=, sslpassword=, PGPASSWORD=, DB_PASSWORD=...: any key that ends in "password".
_KV_PASSWORD = re.compile(r"\b(\w*password\s*=\s*)('[^']*'|\S+)", re.I)


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
        # One leftmost-longest pass: the stream scrubber uses the same pattern, so a stream
        # read in any chunks comes out exactly as `data` of the whole.
        self._bpattern = re.compile(b"|".join(re.escape(f) for f in self._bforms)) if self._bforms else None

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
        if self._bpattern is None:
            return value
        return self._bpattern.sub(MASK.encode(), value)

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
    The held-back bytes stay raw: scrubbing them early could replace a shorter secret
    inside a longer one that is not complete yet, and leak the longer one's ends.
    """

    def __init__(self, scrubber: Scrubber) -> None:
        self._scrubber = scrubber
        self._keep = max(scrubber.longest - 1, 0)
        self._newline_safe = not scrubber.spans_newline
        self._buffer = b""

    def feed(self, chunk: bytes) -> bytes:
        pattern = self._scrubber._bpattern
        if pattern is None:
            return chunk
        buf = self._buffer + chunk
        # A match starting before `limit` is final: every secret starting there fits in buf
        # (or, with no newline in any secret, ends before the last newline).
        limit = max(len(buf) - self._keep, 0)
        if self._newline_safe:
            limit = max(limit, buf.rfind(b"\n") + 1)
        out: list[bytes] = []
        pos = 0
        for match in pattern.finditer(buf):
            if match.start() >= limit:
                break
            out += [buf[pos : match.start()], MASK.encode()]
            pos = match.end()
        cut = max(limit, pos)
        out.append(buf[pos:cut])
        self._buffer = buf[cut:]
        return b"".join(out)

    def flush(self) -> bytes:
        out = self._scrubber.data(self._buffer)
        self._buffer = b""
        return out
