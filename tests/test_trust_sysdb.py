"""A hostile system database is a finding, never a crash (docs/security.md, "A hostile system
database"). Its tables are written by the app's runtime role, so whatever they hold is read
as data: a `dbos_migrations.version` that is not a number, a view in place of a table, a
column of a type anybody defined. `plan --rehearse` and `status` still print one JSON
document, name the value as unknown with the reason, and run none of the planted code.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import one_json, query
from pgharness import drop_database, invoke, with_dbname
from test_rehearse import app_config, make_app, valid_output

from dbos_migrate.engine import database as db
from dbos_migrate.engine.scrub import Scrubber
from dbos_migrate.rehearse import workflows

HOSTILE_VERSION = "9e999\x1b[31m"
STATUS = "workflow_uuid text PRIMARY KEY, status text, name text, application_version text, created_at bigint"


@pytest.fixture
def sys_db(pg_url: str, app_db: str) -> Iterator[str]:
    name = f"{app_db}_dbos_sys"
    query(pg_url, f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        drop_database(pg_url, name)


def plant(pg_url: str, database: str, statements: str, params: tuple[object, ...] = ()) -> None:
    with psycopg.connect(with_dbname(pg_url, database), autocommit=True) as conn:
        conn.execute(statements.encode(), params)  # type: ignore[arg-type]


def test_a_malformed_version_is_unknown_and_plan_prints_one_document(
    tmp_path: Path, pg_url: str, app_db: str, sys_db: str
) -> None:
    make_app(pg_url, app_db)
    plant(
        pg_url,
        sys_db,
        f"""CREATE SCHEMA dbos; CREATE TABLE dbos.dbos_migrations (version text);
        CREATE TABLE dbos.workflow_status ({STATUS});""",
    )
    plant(pg_url, sys_db, "INSERT INTO dbos.dbos_migrations VALUES (%s)", (HOSTILE_VERSION,))
    cfg = app_config(tmp_path, app_db, "CREATE TABLE more_things (id int)")
    result = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url, "-o", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b" not in result.stdout + result.stderr
    doc = valid_output(one_json(result.stdout))
    wf = doc["rehearsal"]["workflows"]
    assert wf["schema_version"] is None and "not a migration number" in wf["generation"]
    assert "\\x1b" in wf["generation"]  # shown escaped
    status = invoke("status", "-c", cfg, "-D", pg_url, "-o", "json")
    assert status.returncode == 0, status.stdout + status.stderr
    shown = one_json(status.stdout)["system_database"]["schema_version"]
    assert shown.startswith("unknown: dbos.dbos_migrations.version holds") and "\x1b" not in status.stdout


@pytest.mark.parametrize("value", ["9" * 30, "-1", "", "1e3"])
def test_versions_no_dbos_writes_are_unknown(pg_url: str, sys_db: str, value: str) -> None:
    plant(
        pg_url,
        sys_db,
        f"CREATE SCHEMA dbos; CREATE TABLE dbos.dbos_migrations (version text);"
        f"CREATE TABLE dbos.workflow_status ({STATUS});",
    )
    plant(pg_url, sys_db, "INSERT INTO dbos.dbos_migrations VALUES (%s)", (value,))
    with psycopg.connect(with_dbname(pg_url, sys_db), autocommit=True) as conn:
        report = workflows.unknown("", None, "dbos", {})
        workflows.inspect(conn, report, 5, Scrubber([]))
        assert report.status == "none" and report.schema_version is None
        assert report.generation is not None and "not a migration number" in report.generation
        assert (db.system_schema_version(conn, "dbos") or "").startswith("unknown: ")


def test_a_huge_numeric_created_at_is_no_crash(pg_url: str, sys_db: str) -> None:
    plant(
        pg_url,
        sys_db,
        """CREATE SCHEMA dbos; CREATE TABLE dbos.workflow_status
        (workflow_uuid text, status text, name text, application_version text, created_at numeric);
        INSERT INTO dbos.workflow_status VALUES ('a', 'PENDING', 'w', 'v1', 1e300)""",
    )
    with psycopg.connect(with_dbname(pg_url, sys_db), autocommit=True) as conn:
        report = workflows.unknown("", None, "dbos", {})
        workflows.inspect(conn, report, 5, Scrubber([]))
    assert report.status in ("found", "unknown")
    assert report.status == "unknown" or report.versions[0].oldest_age_s is None


PLANTED = {
    "view": """CREATE TABLE dbos.real_status ({status});
        CREATE VIEW dbos.workflow_status AS SELECT r.* FROM dbos.real_status r WHERE dbos.payload();
        CREATE VIEW dbos.dbos_migrations AS SELECT 5::bigint AS version WHERE dbos.payload();""",
    "cast": """CREATE TYPE dbos.evil AS (v int);
        CREATE FUNCTION dbos.evil_text(dbos.evil) RETURNS text LANGUAGE plpgsql AS $$
        BEGIN PERFORM dbos.payload(); RETURN 'x'; END $$;
        CREATE CAST (dbos.evil AS text) WITH FUNCTION dbos.evil_text(dbos.evil) AS IMPLICIT;
        CREATE TABLE dbos.workflow_status (workflow_uuid text, status text, name dbos.evil,
            application_version dbos.evil, created_at bigint);
        INSERT INTO dbos.workflow_status VALUES ('a', 'PENDING', ROW(1), ROW(1), 0);""",
    "policy": """CREATE TABLE dbos.workflow_status ({status});
        INSERT INTO dbos.workflow_status VALUES ('a', 'PENDING', 'w', 'v1', 0);
        ALTER TABLE dbos.workflow_status ENABLE ROW LEVEL SECURITY, FORCE ROW LEVEL SECURITY;
        CREATE POLICY p ON dbos.workflow_status USING (dbos.payload());""",
}


@pytest.mark.parametrize("kind", list(PLANTED))
def test_system_tables_that_would_run_code_are_not_read(pg_url: str, sys_db: str, kind: str) -> None:
    """The workflow checks run no function of the system database's owner: a view, a cast
    on a column's type, a row-level policy (the reader here owns nothing there)."""
    planter = f"sysowner_{uuid.uuid4().hex[:10]}"
    query(pg_url, f'CREATE ROLE "{planter}" NOSUPERUSER NOLOGIN')
    try:
        query(pg_url, f'GRANT CREATE ON DATABASE "{sys_db}" TO "{planter}"')
        with psycopg.connect(with_dbname(pg_url, sys_db), autocommit=True) as conn:
            conn.execute(f'SET ROLE "{planter}"')
            conn.execute(b"""CREATE SCHEMA dbos; GRANT USAGE ON SCHEMA dbos TO PUBLIC;
                CREATE TABLE dbos.ran (who text); GRANT INSERT ON dbos.ran TO PUBLIC;
                CREATE FUNCTION dbos.payload() RETURNS boolean LANGUAGE plpgsql AS $$
                BEGIN
                  BEGIN INSERT INTO dbos.ran VALUES (pg_catalog.current_user()); EXCEPTION WHEN others THEN NULL; END;
                  RETURN true;
                END $$;""")
            conn.execute(PLANTED[kind].replace("{status}", STATUS).encode())
            conn.execute("GRANT SELECT ON ALL TABLES IN SCHEMA dbos TO PUBLIC")
            conn.execute("TRUNCATE dbos.ran")
        url = with_dbname(pg_url, sys_db)
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute("SET default_transaction_read_only = off")
            report = workflows.unknown("", None, "dbos", {})
            workflows.inspect(conn, report, 5, Scrubber([]))
            assert report.status == "unknown", report
            version = db.system_schema_version(conn, "dbos")
            assert version is None or version.startswith("unknown"), version
        assert query(pg_url, "SELECT count(*) FROM dbos.ran", dbname=sys_db) == [(0,)]
    finally:
        drop_database(pg_url, sys_db)
        query(pg_url, f'DROP ROLE IF EXISTS "{planter}"')
