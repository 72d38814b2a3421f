"""A TypeScript app on @dbos-inc/dbos-sdk 1.x, 2.x and 3.x runs as its runtime role after one
`up --app-role`, measured with the real SDK from the npm registry (docs/dbos-compatibility.md,
"App shapes and the runtime role").

On the machine's server, with names of its own: the SDK's own `npx dbos migrate` (3.x: and
`dbos schema -r`) provisions a reference app, which the role then cannot run; `up --app-role`
as the admin provisions another. Both leave the same tables and
schema version in the system database and the same DBOS tables in the app database. Then the
app connects as the role (LOGIN NOCREATEDB, owner of nothing), launches and completes a
workflow whose `@Transaction` writes the app database with knex. The control
(`--datasource skip`: the app database left to the app) must fail at launch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg
import pytest
from helpers import query
from pgharness import SUBPROCESS_TIMEOUT, drop_database, invoke, skip_or_fail, with_dbname, with_user

from dbos_migrate.settings.conninfo import parse_url

CREATE_ITEMS = "psql -v ON_ERROR_STOP=1 -qc 'CREATE TABLE IF NOT EXISTS items(id serial PRIMARY KEY, tag text)'"

#: The same app for every line: legacy decorators applied by hand (what TypeScript emits), a
#: @Transaction writing with the SDK's knex client, a workflow calling it. The SDK loads
#: reflect-metadata, where TypeScript's emitDecoratorMetadata leaves the parameter types.
APP_JS = """
const { DBOS } = require('@dbos-inc/dbos-sdk');
class Shop {
  static async insertRow(tag) {
    const result = await DBOS.knexClient.raw('INSERT INTO items(tag) VALUES (?) RETURNING id', [tag]);
    return result.rows[0].id;
  }
  static async checkout(tag) {
    return await Shop.insertRow(tag);
  }
}
for (const [name, decorator] of [['insertRow', DBOS.transaction()], ['checkout', DBOS.workflow()]]) {
  Reflect.defineMetadata('design:paramtypes', [String], Shop, name);  // emitDecoratorMetadata
  const descriptor = Object.getOwnPropertyDescriptor(Shop, name);
  Object.defineProperty(Shop, name, decorator(Shop, name, descriptor) || descriptor);
}
(async () => {
  await DBOS.launch();
  const handle = await DBOS.startWorkflow(Shop).checkout('first order');
  const result = await handle.getResult();
  console.log('RESULT', result);
  await DBOS.shutdown();
  process.exit(0);
})().catch((err) => { console.error('FAILED', err); process.exit(1); });
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def config(line: str, name: str, app_db: str, url: str, migrate: str) -> str:
    """dbos-config.yaml as each line writes the connection: 1.x by fields, 2.x+ by URL (3.x
    derives the system database `<app_db>_dbos_sys` from it, as 1.x-2.x do)."""
    p = parse_url(url)
    if line == "1.x":
        connection = (
            f"  hostname: {p.param('host') or 'localhost'}\n  port: {p.param('port') or 5432}\n"
            f"  username: {p.user}\n  password: {json.dumps(p.password or 'unused-under-trust')}\n  ssl: false\n"
        )
        top = ""
    else:
        app_url = with_dbname(url, app_db)
        app_url += ("&" if "?" in app_url else "?") + "sslmode=disable"
        top = f"database_url: {json.dumps(app_url)}\n"
        connection = ""
    runtime = f"runtimeConfig:\n  port: {free_port()}\n  admin_port: {free_port()}\n"
    return (
        f"name: {name}\nlanguage: node\n{top}database:\n{connection}  app_db_name: {app_db}\n"
        f"  app_db_client: knex\n  migrate: [{json.dumps(migrate)}]\n{runtime}"
    )


def node_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DBOS"))}
    return env | (extra or {})


def run_node(app: Path, argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, cwd=app, env=env, capture_output=True, text=True, timeout=SUBPROCESS_TIMEOUT, check=False
    )


def what_dbos_left(url_sys: str, url_app: str) -> dict[str, object]:
    """The system database's tables (every schema but the catalogs) and schema version, and the
    app database's tables and indexes in schema `dbos`."""
    with psycopg.connect(url_sys) as conn:
        tables = conn.execute(
            "SELECT schemaname || '.' || tablename FROM pg_tables"
            " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
        ).fetchall()
        version = None
        if ("dbos.dbos_migrations",) in tables:
            version = conn.execute("SELECT max(version)::text FROM dbos.dbos_migrations").fetchone()
        elif ("public.knex_migrations",) in tables:
            version = conn.execute("SELECT string_agg(name, ',' ORDER BY id) FROM knex_migrations").fetchone()
    with psycopg.connect(url_app) as conn:
        app = conn.execute(
            "SELECT tablename || coalesce(':' || (SELECT string_agg(indexname, ',' ORDER BY indexname)"
            " FROM pg_indexes i WHERE i.schemaname = t.schemaname AND i.tablename = t.tablename), '')"
            " FROM pg_tables t WHERE schemaname = 'dbos' ORDER BY 1"
        ).fetchall()
    return {"system": [r[0] for r in tables], "version": version, "app": [r[0] for r in app]}


@pytest.mark.parametrize("line", ["1.x", "2.x", "3.x"])
def test_a_typescript_app_runs_as_the_runtime_role_after_up(
    line: str, pg_url: str, dbos_ts_line: Callable[[str], Path], tmp_path: Path
) -> None:
    if not query(pg_url, "SELECT 1 FROM pg_available_extensions WHERE name = 'uuid-ossp'"):
        skip_or_fail("the TypeScript SDK needs the uuid-ossp extension, which this server lacks")
    installed = dbos_ts_line(line)
    tag = uuid.uuid4().hex[:8]
    role, ref_db, app_db = f"rt_{tag}", f"ts_ref_{tag}", f"ts_app_{tag}"
    host = parse_url(pg_url)
    admin_pg = {
        "PGHOST": host.param("host") or "localhost",
        "PGPORT": host.param("port") or "5432",
        "PGUSER": host.user or "postgres",
        "PGSSLMODE": "disable",
    }
    if host.password:
        admin_pg["PGPASSWORD"] = host.password
    runtime_url = with_user(pg_url, role, "rt-pw")
    query(pg_url, f"CREATE ROLE \"{role}\" LOGIN NOCREATEDB PASSWORD 'rt-pw'")
    ref, app = tmp_path / "ref", tmp_path / "app"
    for directory in (ref, app):
        directory.mkdir()
        (directory / "node_modules").symlink_to(installed / "node_modules")
        (directory / "package.json").write_text('{"name": "shop", "version": "1.0.0", "private": true}\n')
    (app / "app.js").write_text(APP_JS)
    try:
        # The reference: the SDK's own `npx dbos migrate`, as the admin.
        (ref / "dbos-config.yaml").write_text(config(line, "shop", ref_db, pg_url, "true"))
        dbos = str(ref / "node_modules" / ".bin" / "dbos")
        sdk_own = [[dbos, "migrate"]]
        if line == "3.x":  # its `dbos schema -r` grants the role on the system database
            sdk_own.append([dbos, "schema", with_dbname(pg_url, f"{ref_db}_dbos_sys"), "-r", role])
        for argv in sdk_own:
            done = run_node(ref, argv, node_env(admin_pg))
            assert done.returncode == 0, done.stdout + done.stderr
        # What the SDK's own migrate leaves does not let the role run the app.
        (ref / "dbos-config.yaml").write_text(config(line, "shop", ref_db, runtime_url, "true"))
        (ref / "app.js").write_text(APP_JS)
        theirs_denied = run_node(ref, ["node", "app.js"], node_env())
        assert theirs_denied.returncode != 0, theirs_denied.stdout
        assert "permission denied" in theirs_denied.stdout + theirs_denied.stderr, theirs_denied.stderr[-2000:]
        # The app's config names the runtime role; `up` gets the admin's URL with -D.
        (app / "dbos-config.yaml").write_text(config(line, "shop", app_db, runtime_url, CREATE_ITEMS))
        cfg = app / "dbos-config.yaml"
        skipped = invoke("up", "-c", cfg, "-D", pg_url, "-r", role, "--datasource", "skip")
        assert skipped.returncode == 0, skipped.stdout + skipped.stderr
        denied = run_node(app, ["node", "app.js"], node_env())
        assert denied.returncode != 0 and "permission denied" in denied.stdout + denied.stderr, (
            denied.stdout + denied.stderr[-2000:]
        )
        result = invoke("up", "-c", cfg, "-D", pg_url, "-r", role)
        assert result.returncode == 0, result.stdout + result.stderr
        ran = run_node(app, ["node", "app.js"], node_env())
        assert ran.returncode == 0 and "RESULT 1" in ran.stdout, ran.stdout + ran.stderr[-3000:]
        assert f"@dbos-inc/dbos-sdk {installed_version(installed)} (TypeScript)" in result.stdout
        assert query(pg_url, "SELECT tag FROM items", dbname=app_db) == [("first order",)]
        # 1.x writes the workflow's status in the background: flushed by the shutdown.
        statuses = query(pg_url, "SELECT status FROM dbos.workflow_status", dbname=f"{app_db}_dbos_sys")
        assert statuses == [("SUCCESS",)]
        # What `up` left is what the SDK's own migrate left.
        ours = what_dbos_left(with_dbname(pg_url, f"{app_db}_dbos_sys"), with_dbname(pg_url, app_db))
        theirs = what_dbos_left(with_dbname(pg_url, f"{ref_db}_dbos_sys"), with_dbname(pg_url, ref_db))
        assert ours == theirs and ours["version"] and ours["app"], (ours, theirs)
    finally:
        for db in (ref_db, f"{ref_db}_dbos_sys", app_db, f"{app_db}_dbos_sys"):
            drop_database(pg_url, db)
        query(pg_url, f'DROP ROLE IF EXISTS "{role}"')


def installed_version(root: Path) -> str:
    package = root / "node_modules" / "@dbos-inc" / "dbos-sdk" / "package.json"
    return str(json.loads(package.read_text())["version"])
