"""Every DBOS app shape runs as its runtime role after one `up --app-role`, measured with the
real packages from the index (docs/dbos-compatibility.md, "App shapes and the runtime role").

On a fresh throwaway instance, an admin runs `dbos-migrate up --app-role app_rt`; then the
app connects as `app_rt` (LOGIN NOCREATEDB, owner of nothing), launches, and completes a
workflow that writes the app database through DBOS's own transaction or datasource. The
control (`--datasource skip`: the app database left as before) must fail at launch."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import query, write_config
from pgharness import SUBPROCESS_TIMEOUT, ClusterFactory, drop_database, run_cli, with_dbname, with_user

CREATE_ITEMS = "psql -v ON_ERROR_STOP=1 -qc 'CREATE TABLE IF NOT EXISTS items(id serial PRIMARY KEY, tag text)'"

RUN = """
DBOS.launch()
with SetWorkflowID(str(uuid.uuid4())):
    handle = DBOS.start_workflow(checkout, "first order")
print("RESULT", handle.get_result(), handle.get_status().status)
DBOS.destroy()
"""

#: DBOS Python 3.x, the shape `dbos init -t dbos-db-starter` generates: a SQLAlchemyDatasource
#: created with its default run_migrations=True, and a @ds.transaction step.
DATASOURCE_APP = (
    """
import os, uuid
import sqlalchemy as sa
from dbos import DBOS, SQLAlchemyDatasource, SetWorkflowID

DBOS(config={"name": "shop", "system_database_url": os.environ["SYS_URL"]})
ds = SQLAlchemyDatasource.create(os.environ["APP_URL"])

@ds.transaction()
def insert_row(tag: str) -> int:
    return ds.sql_session().execute(sa.text("INSERT INTO items(tag) VALUES (:t) RETURNING id"), {"t": tag}).scalar_one()

@DBOS.workflow()
def checkout(tag: str) -> int:
    return insert_row(tag)
"""
    + RUN
)

#: DBOS Python 1.x-2.x with an app database: database_url and a @DBOS.transaction step.
TRANSACTION_APP = (
    """
import os, uuid
import sqlalchemy as sa
from dbos import DBOS, SetWorkflowID

DBOS(config={"name": "shop", "database_url": os.environ["APP_URL"], "system_database_url": os.environ["SYS_URL"]})

@DBOS.transaction()
def insert_row(tag: str) -> int:
    return DBOS.sql_session.execute(sa.text("INSERT INTO items(tag) VALUES (:t) RETURNING id"), {"t": tag}).scalar_one()

@DBOS.workflow()
def checkout(tag: str) -> int:
    return insert_row(tag)
"""
    + RUN
)


def run_app(python: Path, tmp_path: Path, code: str, sys_url: str, app_url: str) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "app.py"
    script.write_text(code)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "DBOS"))}
    env.update(SYS_URL=sys_url, APP_URL=app_url)
    return subprocess.run(
        [str(python), str(script)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=SUBPROCESS_TIMEOUT,
        check=False,
    )


def check_shape(admin: str, role: str, app_db: str, venv: Path, tmp_path: Path, code: str, driver: str) -> str:
    """Control, then the real thing, on one instance (`role` exists, `app_db` does not);
    returns what `up` printed."""
    runtime = with_user(admin, role, "rt-pw")
    sys_url = with_dbname(runtime, f"{app_db}_dbos_sys")
    app_url = with_dbname(runtime, app_db).replace("postgresql://", driver, 1)
    cfg = write_config(tmp_path, name="shop", app_db_name=app_db, extra="language: python\n", migrate=[CREATE_ITEMS])
    env = {"PATH": f"{venv}{os.pathsep}{os.environ['PATH']}"}
    # The control: the app database left to the app, as the real tool without -D leaves it.
    skipped = run_cli(
        "up", "-c", cfg, "-D", admin, "-r", role, "--datasource", "skip", env=env, timeout=SUBPROCESS_TIMEOUT
    )
    assert skipped.returncode == 0, skipped.stdout + skipped.stderr
    denied = run_app(venv / "python", tmp_path, code, sys_url, app_url)
    assert denied.returncode != 0 and "permission denied" in denied.stderr, denied.stdout + denied.stderr[-2000:]
    result = run_cli("up", "-c", cfg, "-D", admin, "-r", role, env=env, timeout=SUBPROCESS_TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    app = run_app(venv / "python", tmp_path, code, sys_url, app_url)
    assert app.returncode == 0 and "SUCCESS" in app.stdout, app.stdout + app.stderr[-3000:]
    with psycopg.connect(with_dbname(admin, app_db)) as conn:
        assert [r[0] for r in conn.execute("SELECT tag FROM items ORDER BY id")] == ["first order"]
    return result.stdout


def test_a_dbos3_datasource_app_runs_as_the_runtime_role_after_up(
    own_cluster: ClusterFactory, dbos_py: Path, tmp_path: Path
) -> None:
    admin = own_cluster().url(dbname="postgres")  # a fresh instance
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute("CREATE ROLE app_rt LOGIN NOCREATEDB PASSWORD 'rt-pw'")
    out = check_shape(admin, "app_rt", "shop", dbos_py, tmp_path, DATASOURCE_APP, "postgresql+psycopg://")
    assert "SQLAlchemyDatasource.migrate('shop', schema='dbos', application_role='app_rt')" in out


@pytest.fixture
def runtime_role(pg_url: str, app_db: str) -> Iterator[str]:
    """A LOGIN NOCREATEDB role on the shared server; the test's databases go before it does."""
    name = f"rt_{uuid.uuid4().hex[:10]}"
    query(pg_url, f"CREATE ROLE \"{name}\" LOGIN NOCREATEDB PASSWORD 'rt-pw'")
    yield name
    for db in (app_db, f"{app_db}_dbos_sys"):
        drop_database(pg_url, db)
    query(pg_url, f'DROP ROLE IF EXISTS "{name}"')


@pytest.mark.parametrize(("venv", "version"), [("dbos_py1", "1.14.0"), ("dbos_py2", "2.31.1")])
def test_a_dbos1_or_2_app_database_app_runs_as_the_runtime_role_after_up(
    venv: str,
    version: str,
    pg_url: str,
    app_db: str,
    runtime_role: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
) -> None:
    # On the shared server: DBOS 2.x's first system migration needs the uuid-ossp extension,
    # which the throwaway clusters' binaries lack. 1.x provisions the app database as 2.x does.
    python = request.getfixturevalue(venv)
    out = check_shape(pg_url, runtime_role, app_db, python, tmp_path, TRANSACTION_APP, "postgresql://")
    assert " migrate -D postgresql://" in out and f"dbos {version} (Python)" in out
    tables = query(pg_url, "SELECT to_regclass('dbos.transaction_outputs') IS NOT NULL", dbname=app_db)
    assert tables == [(True,)]
