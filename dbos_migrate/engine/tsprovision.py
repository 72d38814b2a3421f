"""The system database and the app database's DBOS tables of a TypeScript app on
`@dbos-inc/dbos-sdk` 1.x-3.x, provisioned by that SDK's own code (docs/dbos-compatibility.md,
"App shapes and the runtime role").

These SDKs' `npx dbos migrate` also runs the user's `database.migrate` commands, so `up`
cannot call it. Instead the app's own node runs tsprovision.js, which loads the app's own SDK
from its node_modules and calls the SDK's `migrate` function with an empty command list: the
same code `npx dbos migrate` runs, minus the user's commands. It creates the system schema
(knex's migrations in 1.x-2.x, `dbos.dbos_migrations` in 3.x) and the app database's
`dbos.transaction_outputs`. With `--datasource skip` only the system database is provisioned.

No password is on the command line: the URLs go without it, PGPASSWORD carries it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING

from dbos_migrate.events import Notice

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from dbos_migrate.engine.frame import Run
    from dbos_migrate.engine.options import UpOptions
    from dbos_migrate.settings.target import Endpoint

SCRIPT = Path(__file__).with_name("tsprovision.js")
#: The SDK lines provisioned here; 4.x and later have `dbos schema` for the system database
#: and no longer keep tables in the app database.
LINES = (1, 2, 3)


def sdk_major(name: str, argv: Sequence[str]) -> int | None:
    """The SDK line of a toolchain made here ("@dbos-inc/dbos-sdk 1.30.13 (TypeScript)")."""
    if str(SCRIPT) not in argv:
        return None
    match = re.match(r"@dbos-inc/dbos-sdk (\d+)\.", name)
    return int(match[1]) if match else None


def toolchain(
    run: Run[UpOptions],
    system: Endpoint,
    found: tuple[str, str],
    node: str | None,
    env_for: Callable[[Endpoint], dict[str, str]],
) -> tuple[tuple[str, tuple[str, ...], dict[str, str]] | None, str]:
    """(name, argv, env) of the app's `node` running tsprovision.js with the app's SDK
    (`found`: its node_modules/.bin/dbos and version), or None and why not. `env_for`
    gives the commands' environment with PG* pointed at an endpoint (sysdb.toolchain_env)."""
    binary, version = found
    if node is None:
        return None, f"@dbos-inc/dbos-sdk {version} is installed but there is no `node` on the commands' PATH"
    sdk = Path(binary).parent.parent / "@dbos-inc" / "dbos-sdk"
    app = run.target.app
    both = run.options.datasource != "skip"
    if both and not system.same_server(app):
        run.emit(
            Notice(
                f"app database: on another server than the system database; its DBOS tables are "
                f"left to the app (@dbos-inc/dbos-sdk {version})",
                "warning",
            )
        )
        both = False
    # SDK 1.x takes host, port and user from PG*: those of the app database when it provisions both.
    env = env_for(app if both else system)
    env.update(
        DBOS_MIGRATE_SDK_DIR=str(sdk),
        DBOS_MIGRATE_TS_MODE="both" if both else "system",
        DBOS_MIGRATE_APP_URL=app.url.without_secrets().libpq_text(),
        DBOS_MIGRATE_SYS_URL=system.url.without_secrets().libpq_text(),
    )
    return (f"@dbos-inc/dbos-sdk {version} (TypeScript)", (node, str(SCRIPT)), env), ""


def grant_system_database(run: Run[UpOptions], name: str, argv: Sequence[str]) -> None:
    """Grant the runtime role, on the system database, what `dbos migrate -r` grants on schema
    `dbos` (the seven statements; 3.5's own `dbos schema -r` grants the same, 1.x-2.x and
    early 3.x have no such option) and, where knex's two tables exist (1.x-2.x, early 3.x),
    what knex's migrate at each launch needs on them."""
    from dbos_migrate.engine import database as db
    from dbos_migrate.engine.grants import KNEX_TABLES, grant_schema_and_tables

    role = run.options.app_role
    system = run.target.system.endpoint
    if not role or system is None or sdk_major(name, argv) is None:
        return
    conn = db.connect(
        system,
        run.scrub,
        app_name=db.application_name("up"),
        where=f"granting role {role!r} access to the system database",
    )
    with db.closing(conn):
        grant_schema_and_tables(conn, role, "dbos", [("public", t) for t in KNEX_TABLES], run.scrub)
    run.emit(Notice(f"system database: granted role {role!r} runtime privileges on schema 'dbos'"))
