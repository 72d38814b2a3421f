"""What the app's own DBOS generation provisions in the app database, done by that
generation's own code, so that a runtime role can run the app (docs/dbos-compatibility.md,
"App shapes and the runtime role"):

- DBOS Python 1.x-2.x (an app database with `@DBOS.transaction`): `dbos migrate -D APP -s SYS
  [-r ROLE]`, the app's own CLI; it creates `dbos.transaction_outputs` in the app database
  (and migrates the system database again, which changes nothing);
- DBOS Python 3.x with `SQLAlchemyDatasource.migrate` (a datasource's checkpoint table):
  `SQLAlchemyDatasource.migrate(url, schema="dbos", application_role=ROLE)`, run by the
  Python the app's `dbos` runs with; it creates `dbos.datasource_outputs` and its version
  table in the app database;
- TypeScript `@dbos-inc/dbos-sdk` 1.x-3.x: the system schema's step (tsprovision.py) already
  creates `dbos.transaction_outputs`; the runtime role's grants on the system database are
  given here (tsprovision.grant_system_database), which those SDKs' migrate does not do.

`--datasource skip` leaves the app database to the app. No password is on these command
lines: the URLs go without it and PGPASSWORD carries it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

from dbos_migrate.events import Notice
from dbos_migrate.model import AppSchemaSkipped, SchemaStep

if TYPE_CHECKING:
    from dbos_migrate.engine.frame import Run
    from dbos_migrate.engine.options import UpOptions
    from dbos_migrate.engine.runner import Interrupts
    from dbos_migrate.engine.sysdb import Toolchain
    from dbos_migrate.model import PlannedStep

DATASOURCE_SCHEMA = "dbos"
#: Run by the app's Python: exit 3 when its DBOS has no SQLAlchemyDatasource.migrate.
DATASOURCE_MIGRATE = (
    "import os, sys\n"
    "try:\n"
    "    from dbos import SQLAlchemyDatasource\n"
    "except ImportError:\n"
    "    sys.exit(3)\n"
    "if not hasattr(SQLAlchemyDatasource, 'migrate'):\n"
    "    sys.exit(3)\n"
    "SQLAlchemyDatasource.migrate(os.environ['DBOS_MIGRATE_DATASOURCE_URL'], "
    "schema=os.environ['DBOS_MIGRATE_DATASOURCE_SCHEMA'], "
    "application_role=os.environ.get('DBOS_MIGRATE_DATASOURCE_ROLE') or None)\n"
)
NO_API = 3


def python_major(toolchain: Toolchain | None) -> int | None:
    """The release line of a Python `dbos` toolchain, from its name ("dbos 3.4.0 (Python)")."""
    match = re.match(r"dbos (\d+)\.", toolchain.name) if toolchain is not None else None
    return int(match[1]) if match and toolchain is not None and toolchain.name.endswith("(Python)") else None


def with_app_database(run: Run[UpOptions], toolchain: Toolchain) -> Toolchain:
    """The system toolchain of DBOS Python 1.x-2.x, given `-D APP` too: its own `dbos migrate`
    then provisions the app database as well (skipped with --datasource skip, or when the app
    database is on another server than the system database, whose password the command gets)."""
    from dataclasses import replace

    major = python_major(toolchain)
    system = run.target.system.endpoint
    if major not in (1, 2) or run.options.datasource == "skip" or system is None:
        return toolchain
    if not system.same_server(run.target.app):
        run.emit(
            Notice(
                "app database: on another server than the system database; "
                f"its DBOS tables are left to the app ({toolchain.name})",
                "warning",
            )
        )
        return toolchain
    app_url = run.target.app.url.without_secrets().libpq_text()
    argv = (*toolchain.argv[:2], "-D", app_url, *toolchain.argv[2:])
    return replace(toolchain, argv=argv)


def _interpreter(script: str) -> str | None:
    """The Python a console script runs with, from its #! line."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline(300).decode("utf-8", "replace")
    except OSError:
        return None
    interp = first[2:].strip().split()[0] if first.startswith("#!") and first[2:].strip() else ""
    return interp if "python" in os.path.basename(interp) else None


#: Directories that hold no app code of the app's own: environments, dependencies, caches.
_NOT_APP_CODE = {
    ".git",
    ".venv",
    "venv",
    "env",
    "node_modules",
    "site-packages",
    "__pycache__",
    ".tox",
    "build",
    "dist",
}


def uses_datasource(directory: Path, *, max_files: int = 2000, max_bytes: int = 1_000_000) -> bool:
    """Whether the app's Python code (under the config's directory) names SQLAlchemyDatasource:
    `--datasource auto` prepares the datasource schema only for an app that has one, so an app
    without a datasource gets no unused `dbos` schema. Bounded: at most `max_files` files, each
    read only when smaller than `max_bytes`; symlinks are not followed."""
    seen = 0
    for root, dirs, files in os.walk(directory):
        dirs[:] = sorted(d for d in dirs if d not in _NOT_APP_CODE and not d.startswith("."))
        for name in sorted(files):
            if not name.endswith(".py"):
                continue
            seen += 1
            if seen > max_files:
                return False
            path = Path(root) / name
            try:
                if path.is_symlink() or path.stat().st_size > max_bytes:
                    continue
                if b"SQLAlchemyDatasource" in path.read_bytes():
                    return True
            except OSError:
                continue
    return False


def datasource_toolchain(run: Run[UpOptions], toolchain: Toolchain | None) -> Toolchain | None:
    """`SQLAlchemyDatasource.migrate` by the app's own DBOS Python 3.x, or None (also when the
    app's code has no SQLAlchemyDatasource, under `--datasource auto`)."""
    from dbos_migrate.engine.sysdb import Toolchain as Tool
    from dbos_migrate.engine.sysdb import toolchain_env

    if run.options.datasource == "skip" or toolchain is None or (python_major(toolchain) or 0) < 3:
        return None
    if run.options.datasource == "auto" and not uses_datasource(run.config.directory):
        return None
    interp = _interpreter(toolchain.argv[0])
    if interp is None:
        return None
    app = run.target.app
    env = toolchain_env(run.command_env(), app)
    env.update(
        DBOS_MIGRATE_DATASOURCE_URL=app.url.without_secrets().libpq_text(),
        DBOS_MIGRATE_DATASOURCE_SCHEMA=DATASOURCE_SCHEMA,
        DBOS_MIGRATE_DATASOURCE_ROLE=run.options.app_role or "",
    )
    name = toolchain.name.replace("(Python)", "(Python): SQLAlchemyDatasource.migrate")
    return Tool(name, (interp, "-c", DATASOURCE_MIGRATE), env, None)


def provision(run: Run[UpOptions], interrupts: Interrupts, system_toolchain: Toolchain | None) -> None:
    """Prepare the datasource schema of a DBOS Python 3.x app in the app database; for a
    TypeScript SDK 1.x-3.x app (whose toolchain already provisioned the app database), grant
    the runtime role on the system database, which that SDK's migrate does not do."""
    from dbos_migrate.engine import tsprovision
    from dbos_migrate.engine.sysdb import run_toolchain

    if system_toolchain is not None:
        tsprovision.grant_system_database(run, system_toolchain.name, system_toolchain.argv)
    tool = datasource_toolchain(run, system_toolchain)
    if tool is None:
        return
    shown = f"SQLAlchemyDatasource.migrate({run.target.app_database!r}, schema={DATASOURCE_SCHEMA!r}"
    shown += f", application_role={run.options.app_role!r})" if run.options.app_role else ")"
    code = run_toolchain(
        run, tool, interrupts, step="app schema", shown=f"{shown}   # {tool.name}", ok_codes=(0, NO_API)
    )
    if code == NO_API:
        run.emit(
            Notice(
                f"app database: {system_toolchain.name if system_toolchain else 'dbos'} "
                "has no SQLAlchemyDatasource.migrate: nothing to prepare"
            )
        )
    else:
        run.emit(
            Notice(
                f"app database {run.target.app_database}: datasource schema "
                f"{DATASOURCE_SCHEMA!r} prepared by {tool.name}"
            )
        )


def planned(run: Run[UpOptions], system_toolchain: Toolchain | None) -> list[PlannedStep]:
    """The app-database steps, for --print-migrations."""
    if run.options.datasource == "skip":
        return [AppSchemaSkipped("left to the app (--datasource skip)")]
    name = system_toolchain.name if system_toolchain is not None else None
    major = python_major(system_toolchain)
    if major in (1, 2) and system_toolchain is not None and "-D" in system_toolchain.argv:
        action = "dbos.transaction_outputs, by the system schema's command above (-D)"
        return [SchemaStep("app_schema", name, action)]
    from dbos_migrate.engine import tsprovision

    if system_toolchain is not None and tsprovision.sdk_major(system_toolchain.name, system_toolchain.argv):
        if system_toolchain.env.get("DBOS_MIGRATE_TS_MODE") == "both":
            action = "dbos.transaction_outputs, by the system schema's step above (the SDK's migrate)"
        else:
            action = "left to the app (on another server than the system database)"
        return [SchemaStep("app_schema", name, action)]
    if datasource_toolchain(run, system_toolchain) is not None:
        action = f"SQLAlchemyDatasource.migrate: schema {DATASOURCE_SCHEMA!r} (datasource_outputs), "
        action += "when the app's DBOS has it"
        return [SchemaStep("app_schema", name, action)]
    return []
