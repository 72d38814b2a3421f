"""The system backend: PostgreSQL installed on the machine, found at `pg_config --bindir`,
`/usr/lib/postgresql/<highest>/bin`, `/usr/local/pgsql/bin`, Homebrew's `postgresql*` kegs,
then `initdb`/`postgres`/`pg_ctl` on PATH. (`$DBOS_MIGRATE_PG_BINDIR`, which also counts as
system binaries, comes before every backend's own places: see binaries.py.)
"""

from __future__ import annotations

import contextlib
import re
import shutil
import subprocess
from pathlib import Path

from dbos_migrate.localpg.base import BACKEND_SYSTEM
from dbos_migrate.localpg.local import LocalBackend


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.as_posix()))


class SystemBackend(LocalBackend):
    """A development cluster run from PostgreSQL installed on the machine."""

    name = BACKEND_SYSTEM

    @staticmethod
    def bindirs() -> list[Path]:
        """Candidate bin dirs of PostgreSQL installed on the machine, most preferred first."""
        dirs: list[Path] = []
        pg_config = shutil.which("pg_config")
        if pg_config:
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                out = subprocess.run(
                    [pg_config, "--bindir"], capture_output=True, text=True, timeout=10, check=False
                ).stdout.strip()
                if out:
                    dirs.append(Path(out))
        dirs += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=_version_key, reverse=True)
        dirs.append(Path("/usr/local/pgsql/bin"))
        for prefix in ("/opt/homebrew/opt", "/usr/local/opt"):
            dirs += sorted(Path(prefix).glob("postgresql*/bin"), key=_version_key, reverse=True)
        for tool in ("initdb", "postgres", "pg_ctl"):
            found = shutil.which(tool)
            if found:
                dirs.append(Path(found).resolve().parent)
        return dirs
