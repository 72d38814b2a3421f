"""Compatibility measured against the real DBOS packages, not assumed (docs/dbos-compatibility.md).

A real `dbos` 3.4.0 from the package index, in a venv of its own (the `dbos_py` fixture),
on a fresh throwaway instance: after `dbos-migrate up --app-role app_rt` run by an admin, a
DBOS app connecting as `app_rt` (NOCREATEDB, owner of nothing) launches and completes a
workflow whose step writes to an app table.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import uuid
from pathlib import Path

import psycopg
import pytest
from helpers import one_json, query, write_config
from pgharness import SUBPROCESS_TIMEOUT, ClusterFactory, invoke, skip_or_fail, with_dbname, with_user

from dbos_migrate.settings.conninfo import parse_url

APP = """
import os, uuid
import psycopg
from dbos import DBOS, DBOSConfig, SetWorkflowID

DBOS(config={"name": "shop", "system_database_url": os.environ["SYS_URL"]})

@DBOS.step()
def insert_row(tag: str) -> int:
    with psycopg.connect(os.environ["APP_URL"]) as conn:
        return conn.execute("INSERT INTO items(tag) VALUES (%s) RETURNING id", (tag,)).fetchone()[0]

@DBOS.workflow()
def checkout(tag: str) -> int:
    return insert_row(tag)

DBOS.launch()
with SetWorkflowID(str(uuid.uuid4())):
    handle = DBOS.start_workflow(checkout, "first order")
print("RESULT", handle.get_result(), handle.get_status().status)
DBOS.destroy()
"""


def run_app(dbos_py: Path, tmp_path: Path, sys_url: str, app_url: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DBOS"))}
    env.update(SYS_URL=sys_url, APP_URL=app_url)
    return subprocess.run(
        [str(dbos_py / "python"), str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


@pytest.mark.parametrize("system_db", ["fresh", "created earlier by the app as an admin"])
def test_a_real_dbos_app_runs_as_a_runtime_role_after_up(
    system_db: str, own_cluster: ClusterFactory, dbos_py: Path, tmp_path: Path
) -> None:
    cluster = own_cluster()
    admin = cluster.url(dbname="postgres")
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE ROLE app_rt LOGIN NOCREATEDB PASSWORD 'rt-pw'")
    runtime = with_user(admin, "app_rt", "rt-pw")
    sys_as = {"admin": with_dbname(admin, "shop_dbos_sys"), "app_rt": with_dbname(runtime, "shop_dbos_sys")}
    app_as = {"admin": with_dbname(admin, "shop"), "app_rt": with_dbname(runtime, "shop")}
    cfg = write_config(
        tmp_path,
        name="shop",
        extra="language: python\n",
        migrate=["psql -v ON_ERROR_STOP=1 -qc 'CREATE TABLE IF NOT EXISTS items(id serial PRIMARY KEY, tag text)'"],
    )
    env = {"PATH": f"{dbos_py}{os.pathsep}{os.environ['PATH']}"}
    if system_db != "fresh":
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute("CREATE DATABASE shop")
        with psycopg.connect(app_as["admin"], autocommit=True) as conn:
            conn.execute("CREATE TABLE items(id serial PRIMARY KEY, tag text)")
        earlier = run_app(dbos_py, tmp_path, sys_as["admin"], app_as["admin"])
        assert "RESULT 1 SUCCESS" in earlier.stdout, earlier.stderr[-2000:]
    else:
        # Without the role, the app cannot use what up provisioned: the control for this test.
        plain = invoke("up", "-c", cfg, "-D", admin, env=env)
        assert plain.returncode == 0, plain.stdout + plain.stderr
        denied = run_app(dbos_py, tmp_path, sys_as["app_rt"], app_as["app_rt"])
        assert denied.returncode != 0 and "permission denied" in denied.stderr
    result = invoke("up", "-c", cfg, "-D", admin, "--app-role", "app_rt", "-o", "json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    doc = one_json(result.stdout)
    assert doc["system_database"]["toolchain"] == "dbos 3.4.0 (Python)"
    assert doc["system_database"]["action"] == "migrated" and doc["system_database"]["schema_version"]
    app = run_app(dbos_py, tmp_path, sys_as["app_rt"], app_as["app_rt"])
    assert app.returncode == 0 and "SUCCESS" in app.stdout, app.stdout + app.stderr[-3000:]
    with psycopg.connect(app_as["admin"]) as conn:
        tags = [r[0] for r in conn.execute("SELECT tag FROM items ORDER BY id")]
    assert tags[-1] == "first order"


# ---------------------------------------------------------------------------- the URL as the user wrote it

ALEMBIC_INI = "[alembic]\nscript_location = %(here)s/migrations\n"
REVISION = """
from alembic import op
revision = "0001"
down_revision = None
def upgrade() -> None:
    op.execute("CREATE TABLE widgets (id serial PRIMARY KEY)")
def downgrade() -> None:
    op.execute("DROP TABLE widgets")
"""
#: The two ways users commonly hand the URL to alembic in migrations/env.py.
ENV_PY = {
    "escaped": 'config.set_main_option("sqlalchemy.url", os.environ["DBOS_DATABASE_URL"].replace("%", "%%"))',
    "plain": 'config.set_main_option("sqlalchemy.url", os.environ["DBOS_DATABASE_URL"])',
}
ENV_PY_BODY = """
import os
from alembic import context
from sqlalchemy import engine_from_config, pool
config = context.config
{line}
engine = engine_from_config(config.get_section(config.config_ini_section), prefix="sqlalchemy.", poolclass=pool.NullPool)
with engine.connect() as connection:
    context.configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()
"""


@pytest.mark.parametrize(
    ("scheme", "password", "env_py"),
    [
        ("postgresql+psycopg", "p!$*~%@:/#?&=w", "escaped"),  # must be percent-encoded: '@', '/', '%'
        ("postgresql+psycopg", "pass!word$1*~", "plain"),  # libpq reads it unencoded: keep it that way
    ],
)
def test_alembic_on_sqlalchemy_20_gets_the_url_as_written(
    scheme: str, password: str, env_py: str, own_cluster: ClusterFactory, sqlalchemy20: Path, tmp_path: Path
) -> None:
    from urllib.parse import quote

    cluster = own_cluster()
    with psycopg.connect(cluster.url(dbname="postgres"), autocommit=True) as conn:
        conn.execute(f"CREATE ROLE deployer LOGIN CREATEDB PASSWORD '{password}'")
    written = password if env_py == "plain" else quote(password, safe="")
    url = f"{scheme}://deployer:{written}@localhost:{cluster.port}/postgres"
    (tmp_path / "alembic.ini").write_text(ALEMBIC_INI)
    (tmp_path / "migrations" / "versions").mkdir(parents=True)
    (tmp_path / "migrations" / "env.py").write_text(ENV_PY_BODY.format(line=ENV_PY[env_py]))
    (tmp_path / "migrations" / "versions" / "0001.py").write_text(REVISION)
    cfg = write_config(tmp_path, name="widgets", migrate=["alembic upgrade head"])
    env = {"PATH": f"{sqlalchemy20}{os.pathsep}{os.environ['PATH']}"}
    result = invoke("up", "-c", cfg, "-D", url, "--system-db", "skip", "-o", "json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert password not in result.stdout + result.stderr and quote(password, safe="") not in result.stdout
    with psycopg.connect(cluster.url(dbname="widgets")) as conn:
        assert conn.execute("SELECT version_num FROM alembic_version").fetchone() == ("0001",)


# ---------------------------------------------------------------------------- TypeScript, side by side


def dbos_schema(url: str, role: str) -> tuple[str | None, list[str], list[tuple[str, str]]]:
    """(schema version, tables of the dbos schema, (table, role) grants to non-superusers)."""
    with psycopg.connect(url) as conn:
        version = conn.execute("SELECT max(version)::text FROM dbos.dbos_migrations").fetchone()
        tables = [r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'dbos' ORDER BY 1")]
        grants = conn.execute(
            """SELECT table_name, grantee FROM information_schema.role_table_grants
                WHERE table_schema = 'dbos' AND grantee = %s AND privilege_type = 'UPDATE' ORDER BY 1""",
            (role,),
        ).fetchall()
    return (version[0] if version else None), tables, [(t, g) for t, g in grants]


def test_a_typescript_app_gets_the_system_schema_its_sdk_would_create(
    pg_url: str, dbos_ts: Path, tmp_path: Path
) -> None:
    """`npx dbos migrate` + `npx dbos schema -r` (the SDK's own) and `dbos-migrate up --app-role`
    on one instance, for two apps: the same DBOS schema version, tables and runtime-role grants.
    On the machine's server (the SDK needs the uuid-ossp extension), with unique names."""
    if not query(pg_url, "SELECT 1 FROM pg_available_extensions WHERE name = 'uuid-ossp'"):
        skip_or_fail("the TypeScript SDK needs the uuid-ossp extension, which this server lacks")
    tag = uuid.uuid4().hex[:8]
    role, ref, ours_name = f"rt_{tag}", f"ts_ref_{tag}", f"ts_shop_{tag}"
    query(pg_url, f'CREATE ROLE "{role}" LOGIN NOCREATEDB')
    app = tmp_path / "app"
    shutil.copytree(dbos_ts, app, symlinks=True)
    host = parse_url(pg_url)
    pg_env = {
        "PGHOST": host.param("host") or "localhost",
        "PGPORT": host.param("port") or "5432",
        "PGUSER": host.user or "postgres",
        "PGSSLMODE": "disable",
    }
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DBOS"))} | pg_env
    try:
        # The URL in full: the SDK's default would use the password `dbos`, and the harness's
        # own cluster (when no server is given) has another one.
        ref_sys = json.dumps(with_dbname(pg_url, f"{ref}_dbos_sys"))
        (app / "dbos-config.yaml").write_text(
            f"name: {ref}\nlanguage: node\nsystem_database_url: {ref_sys}\ndatabase:\n  migrate: ['true']\n"
        )
        for argv in (["migrate"], ["schema", with_dbname(pg_url, f"{ref}_dbos_sys"), "-r", role]):
            done = subprocess.run(
                [str(app / "node_modules" / ".bin" / "dbos"), *argv],
                cwd=app,
                env=env,
                capture_output=True,
                text=True,
                timeout=SUBPROCESS_TIMEOUT,
                check=False,
            )
            assert done.returncode == 0, done.stdout + done.stderr
        (app / "dbos-config.yaml").write_text(f"name: {ours_name}\nlanguage: node\ndatabase:\n  migrate: ['true']\n")
        result = invoke("up", "-c", app / "dbos-config.yaml", "-D", pg_url, "--app-role", role, "-o", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        assert one_json(result.stdout)["system_database"]["toolchain"].startswith("@dbos-inc/dbos-sdk 4.")
        ours = dbos_schema(with_dbname(pg_url, f"{ours_name}_dbos_sys"), role)
        theirs = dbos_schema(with_dbname(pg_url, f"{ref}_dbos_sys"), role)
        assert ours == theirs and ours[0] is not None and ours[2]  # same version, tables and grants
    finally:
        for db in (ref, f"{ref}_dbos_sys", ours_name, f"{ours_name}_dbos_sys"):
            query(pg_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        query(pg_url, f'DROP ROLE IF EXISTS "{role}"')
