"""The system backend: PostgreSQL installed on the machine, found at `pg_config --bindir`,
`/usr/lib/postgresql/<highest>/bin`, `/usr/local/pgsql/bin`, Homebrew's `postgresql*` kegs,
then `initdb`/`postgres`/`pg_ctl` on PATH. (`$DBOS_MIGRATE_PG_BINDIR`, which also counts as
system binaries, comes before every backend's own places: see binaries.py.)
"""

from __future__ import annotations

from dbos_migrate.localpg.base import BACKEND_SYSTEM
from dbos_migrate.localpg.binaries import system_bindirs
from dbos_migrate.localpg.local import LocalBackend


class SystemBackend(LocalBackend):
    """A development cluster run from PostgreSQL installed on the machine."""

    name = BACKEND_SYSTEM
    bindirs = staticmethod(system_bindirs)
