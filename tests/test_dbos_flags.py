"""The flags `dbos migrate` users type: -r, -s/--sys-db-url, --schema, --print-user-role and
--print-migrations, under `up`/`migrate` and `down`/`rollback` (docs/dbos-compatibility.md).

The CLI runs in-process with an in-memory Context; a fake `dbos` on PATH records how the
toolchain is called (the real one is measured in test_dbos_compat.py)."""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from helpers import db_exists, one_json, query, write_config
from pgharness import drop_database, invoke, with_dbname

UNREACHABLE = "postgresql://nobody:secret-pw@127.0.0.1:1/postgres"


def cli(*args: str, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    """The CLI in-process (pgharness.invoke): (exit code, stdout, stderr)."""
    result = invoke(*args, env=environ)
    return result.returncode, result.stdout, result.stderr


FAKE_DBOS = """#!/bin/sh
echo "$@" >> "{log}"
case "$1" in version) echo "dbos 3.4.0"; exit 0;; esac
if [ "$2" = "--print-migrations" ]; then echo "-- fake migrations from $3 in schema $5"; fi
exit 0
"""


def fake_dbos(directory: Path) -> tuple[dict[str, str], Path]:
    """A `dbos` that says it is 3.4.0 and records its arguments: (environ, log)."""
    bindir = directory / "bin"
    bindir.mkdir(parents=True)
    log = directory / "dbos.log"
    script = bindir / "dbos"
    script.write_text(FAKE_DBOS.format(log=log))
    script.chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}, log


@pytest.fixture
def role(pg_url: str, app_db: str) -> Iterator[str]:
    """A LOGIN NOCREATEDB role; the test's databases are dropped before it is."""
    name = f"rt_{uuid.uuid4().hex[:10]}"
    query(pg_url, f'CREATE ROLE "{name}" LOGIN NOCREATEDB')
    yield name
    for db in (app_db, f"{app_db}_dbos_sys"):
        drop_database(pg_url, db)
    query(pg_url, f'DROP ROLE IF EXISTS "{name}"')


def test_print_user_role_connects_to_nothing_and_its_sql_grants_what_up_would(
    tmp_path: Path, pg_url: str, app_db: str, role: str
) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    # Nothing listens on port 1: printing needs no server.
    code, out, err = cli("migrate", "-c", str(cfg), "-D", UNREACHABLE, "--print-user-role", "-r", role)
    assert code == 0, err
    assert f'GRANT CONNECT ON DATABASE "{app_db}" TO "{role}";' in out
    assert f'GRANT USAGE ON SCHEMA "dbos" TO "{role}";' in out and "secret-pw" not in out
    assert out.startswith("-- ") and "\n  target " not in out  # only SQL on stdout
    # Applied by hand after an `up` without the role, it gives the role what it needs.
    code, _, err = cli("up", "-c", str(cfg), "-D", pg_url, "--system-db", "create")
    assert code == 0, err
    query(pg_url, "CREATE TABLE items(id serial PRIMARY KEY)", dbname=app_db)
    query(
        pg_url,
        "CREATE SCHEMA dbos; CREATE TABLE dbos.workflow_status(id text); CREATE TABLE public.knex_migrations_lock(i int)",
        dbname=f"{app_db}_dbos_sys",
    )  # knex_migrations_lock as a TypeScript SDK 1.x-2.x system database has it; knex_migrations missing
    code, sql_text, err = cli("up", "-c", str(cfg), "-D", pg_url, "--print-user-role", "-r", role)
    assert code == 0, err
    psql = subprocess.run(
        ["psql", "-v", "ON_ERROR_STOP=1", "-q", with_dbname(pg_url, "postgres")],
        input=sql_text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert psql.returncode == 0, psql.stderr
    checks = query(
        pg_url,
        "SELECT has_table_privilege(%s, 'public.items', 'INSERT'), "
        "has_sequence_privilege(%s, 'public.items_id_seq', 'USAGE')",
        (role, role),
        dbname=app_db,
    )
    assert checks == [(True, True)]
    sys_checks = query(
        pg_url,
        "SELECT has_table_privilege(%s, 'dbos.workflow_status', 'UPDATE'), "
        "has_table_privilege(%s, 'public.knex_migrations_lock', 'UPDATE')",
        (role, role),
        dbname=f"{app_db}_dbos_sys",
    )
    assert sys_checks == [(True, True)]


def test_print_user_role_needs_a_role_and_not_print_migrations(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, app_db_name="shop", migrate=["true"])
    code, _, err = cli("up", "-c", str(cfg), "-D", UNREACHABLE, "--print-user-role")
    assert code == 2 and "-r/--app-role" in err
    code, _, err = cli(
        "up", "-c", str(cfg), "-D", UNREACHABLE, "--print-user-role", "-r", "x", "--print-migrations", "all"
    )
    assert code == 2 and "cannot be combined" in err
    code, out, _ = cli("up", "-c", str(cfg), "-D", UNREACHABLE, "--print-migrations", "zero", "-o", "json")
    assert code == 2 and one_json(out)["error"]["code"] == "usage"


def test_sys_db_url_flag_comes_before_the_config_and_the_environment(tmp_path: Path) -> None:
    flag = "postgresql://u@db.example/from_flag"
    env = {"DBOS_SYSTEM_DATABASE_URL": "postgresql://u@db.example/from_env"}
    with_cfg = write_config(
        tmp_path / "a",
        app_db_name="shop",
        migrate=["true"],
        extra="system_database_url: postgresql://u@db.example/from_config\n",
    )
    plain = write_config(tmp_path / "b", app_db_name="shop", migrate=["true"])

    def system(cfg: Path, *more: str) -> tuple[str, str]:
        code, out, err = cli(
            "migrate",
            "-c",
            str(cfg),
            "-D",
            UNREACHABLE,
            "--print-user-role",
            "-r",
            "rt",
            "-o",
            "json",
            *more,
            environ=env,
        )
        assert code == 0, err
        doc = one_json(out)
        return doc["system_database_url"], doc["system_database_source"]

    assert system(with_cfg, "-s", flag) == (flag, "-s/--sys-db-url")
    assert system(with_cfg, "--sys-db-url", flag)[0] == flag
    assert system(with_cfg)[0].endswith("/from_config")
    assert system(plain) == (env["DBOS_SYSTEM_DATABASE_URL"], "DBOS_SYSTEM_DATABASE_URL")


def test_schema_reaches_the_toolchain_and_status(tmp_path: Path, pg_url: str, app_db: str) -> None:
    environ, log = fake_dbos(tmp_path)
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    code, _, err = cli("migrate", "-c", str(cfg), "-D", pg_url, "--schema", "dbos_custom", environ=environ)
    assert code == 0, err
    calls = [line.split() for line in log.read_text().splitlines() if line.startswith("migrate")]
    assert calls and calls[-1][-2:] == ["--schema", "dbos_custom"]
    sys_db = f"{app_db}_dbos_sys"
    query(
        pg_url,
        "CREATE SCHEMA dbos_custom; CREATE TABLE dbos_custom.dbos_migrations(version bigint);"
        "INSERT INTO dbos_custom.dbos_migrations VALUES (7)",
        dbname=sys_db,
    )
    code, out, err = cli("status", "-c", str(cfg), "-D", pg_url, "--schema", "dbos_custom", "-o", "json")
    assert code == 0, err
    assert one_json(out)["system_database"]["schema_version"] == "7"
    code, out, _ = cli("status", "-c", str(cfg), "-D", pg_url, "-o", "json")
    assert one_json(out)["system_database"]["schema_version"] is None  # no dbos.dbos_migrations there


def test_print_migrations_lists_every_step_and_runs_nothing(tmp_path: Path, pg_url: str, app_db: str) -> None:
    environ, log = fake_dbos(tmp_path)
    marker = tmp_path / "ran"
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[f"touch {marker}"], rollback=[f"touch {marker}.down"])
    args = ("-c", str(cfg), "-D", pg_url, "-r", "app_rt", "--schema", "s1")
    code, out, err = cli("migrate", *args, "--print-migrations", "3", "-o", "json", environ=environ)
    assert code == 0, err
    doc = one_json(out)
    jsonschema.validate(doc, json.loads((Path(__file__).parents[1] / "schemas" / "output.schema.json").read_text()))
    steps = doc["steps"]
    assert [s["step"] for s in steps] == ["app_database", "system_database", "system_schema", "command", "grant"]
    assert steps[2]["toolchain"] == "dbos 3.4.0 (Python)" and "-r app_rt --schema s1" in steps[2]["command"]
    assert steps[2]["sql"] == "-- fake migrations from 3 in schema s1\n"
    assert steps[3]["command"] == f"touch {marker}"
    code, text, err = cli("up", *args, "--print-migrations", "all", environ=environ)
    assert code == 0, err
    assert f"command 1: touch {marker}" in text and "-- fake migrations from all in schema s1" in text
    code, text, err = cli("rollback", "-c", str(cfg), "-D", pg_url, "--print-migrations", "all")
    assert code == 0 and f"command 1: touch {marker}.down" in text, err
    assert not marker.exists() and not Path(f"{marker}.down").exists()
    assert not db_exists(pg_url, app_db) and not db_exists(pg_url, f"{app_db}_dbos_sys")
    assert all(line.startswith(("version", "migrate --print-migrations")) for line in log.read_text().splitlines())
