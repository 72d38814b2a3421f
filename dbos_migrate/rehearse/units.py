"""Sizes, counts and durations: parsed from settings and written for people (no I/O, no
driver import, so the text reporter can use them without loading psycopg)."""

from __future__ import annotations

import re

from dbos_migrate.errors import UsageError

_SIZE = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(b|kb|mb|gb|tb)?\s*", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1024, "mb": 1024**2, "gb": 1024**3, "tb": 1024**4}


def parse_size(text: str, what: str) -> int:
    """`128MB`, `64kB`, `1GB` or a number of bytes, as PostgreSQL writes sizes."""
    match = _SIZE.fullmatch(text)
    if match is None:
        raise UsageError(f"{what} must be a size such as 64kB, 128MB or 1GB, not {text!r}")
    return int(float(match[1]) * _UNITS[(match[2] or "b").lower()])


def human_bytes(size: int | float) -> str:
    value = float(size)
    for unit in ("bytes", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "bytes" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} TB"  # pragma: no cover


def human_count(n: int | float) -> str:
    if n >= 1_000_000:
        return f"{n / 1_000_000:.1f}M"
    if n >= 10_000:
        return f"{n / 1000:.0f}k"
    return f"{int(n):,}"


def human_seconds(seconds: float) -> str:
    if seconds < 1:
        return "under a second"
    if seconds < 90:
        return f"about {seconds:.0f} s"
    if seconds < 5400:
        return f"about {seconds / 60:.0f} min"
    return f"about {seconds / 3600:.1f} h"


def human_age(seconds: float) -> str:
    seconds = max(seconds, 0)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    if seconds < 172800:
        return f"{seconds / 3600:.1f}h"
    return f"{seconds / 86400:.1f}d"
