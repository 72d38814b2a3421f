"""A cache of validated configs, so the pre-deploy path skips YAML parsing and JSON Schema.

`dbos-migrate up` runs before every deploy; importing yaml and jsonschema and validating
costs more than the rest of a no-op run. The cache stores the *parsed* file (before
`${...}` substitution, so no value from the environment is ever written) keyed by the
file's bytes, the schema text and the tool version. Validation depends on substituted
values too, so an entry also lists HMACs of the substituted values it was validated
with; the HMAC key is random and private to the cache directory, so the entry reveals
nothing about those values. Any mismatch, unreadable or corrupt entry means a full load.

Location: `$DBOS_MIGRATE_CACHE_DIR`, else `${XDG_CACHE_HOME:-~/.cache}/dbos-migrate`.
`DBOS_MIGRATE_NO_CACHE=1` turns it off. Files are 0600 in a 0700 directory.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dbos_migrate import __version__

MAX_FINGERPRINTS = 16


def cache_dir(environ: Mapping[str, str]) -> Path | None:
    if environ.get("DBOS_MIGRATE_NO_CACHE", "").lower() in ("1", "true", "yes"):
        return None
    if environ.get("DBOS_MIGRATE_CACHE_DIR"):
        return Path(environ["DBOS_MIGRATE_CACHE_DIR"])
    base = environ.get("XDG_CACHE_HOME") or os.path.join(
        environ.get("HOME") or os.path.expanduser("~"), ".cache"
    )
    return Path(base) / "dbos-migrate"


class ConfigCache:
    """Entries by content key; never raises: a cache that fails is a cache that misses."""

    def __init__(self, directory: Path, schema_text: str) -> None:
        self.directory = directory
        self._schema_digest = hashlib.sha256(schema_text.encode()).hexdigest()
        self._key: bytes | None = None

    def _entry_path(self, text: str) -> Path:
        digest = hashlib.sha256(f"{__version__}\0{self._schema_digest}\0{text}".encode()).hexdigest()
        return self.directory / f"config-{digest[:40]}.json"

    def _hmac_key(self, create: bool) -> bytes | None:
        if self._key is not None:
            return self._key
        path = self.directory / "key"
        try:
            key = path.read_bytes()
            if len(key) == 32:
                self._key = key
                return key
        except OSError:
            pass
        if not create:
            return None
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            key = os.urandom(32)
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as fh:
                fh.write(key)
            self._key = key
            return key
        except FileExistsError:
            return self._hmac_key(create=False)
        except OSError:
            return None

    def fingerprint(self, substituted: Mapping[str, str | None], *, create: bool) -> str | None:
        key = self._hmac_key(create)
        if key is None:
            return None
        payload = json.dumps(sorted(substituted.items()), separators=(",", ":")).encode()
        return hmac.new(key, payload, hashlib.sha256).hexdigest()

    def get(self, text: str) -> dict[str, Any] | None:
        try:
            entry = json.loads(self._entry_path(text).read_text("utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("fingerprints"), list):
            return None
        return entry

    def put(self, text: str, entry: dict[str, Any], fingerprint: str) -> None:
        old = self.get(text)
        prints = [fingerprint] + [f for f in (old or {}).get("fingerprints", []) if f != fingerprint]
        entry = dict(entry, fingerprints=prints[:MAX_FINGERPRINTS])
        path = self._entry_path(text)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        try:
            self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entry, fh, separators=(",", ":"))
            os.replace(tmp, path)
        except (OSError, TypeError, ValueError):
            with contextlib.suppress(OSError):
                tmp.unlink()


def open_cache(environ: Mapping[str, str], schema_text: str) -> ConfigCache | None:
    directory = cache_dir(environ)
    return ConfigCache(directory, schema_text) if directory is not None else None
