"""The tool's own objects cannot be planted (docs/security.md, "The tool's own objects").

A role that may create schemas in the app database (GRANT CREATE ON DATABASE, as app owners
and DBOS runtimes often have) creates `dbos_migrate` and its `history` first, carrying code:
a trigger, a rule, a row-level policy, a CHECK calling a function, a view in place of the
table. The deploy role (a superuser here, unless said otherwise) then runs `up`, `history` or
`status` in-process. Each must refuse with exit 3 naming the object and its owner, run no
migration command, and the planted payload must not have run: the planting role is still not
a superuser and the payload's marker table holds no row of another role.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from helpers import query, write_config
from inmemory import InMemoryContext
from pgharness import with_dbname, with_user
from psycopg import sql

from dbos_migrate import verbs
from dbos_migrate.errors import MigrateError

HISTORY_COLUMNS = """
    id            bigserial PRIMARY KEY,
    run_id        uuid NOT NULL,
    direction     text NOT NULL,
    command_index integer NOT NULL,
    command       text NOT NULL,
    started_at    timestamptz NOT NULL,
    finished_at   timestamptz,
    exit_code     integer,
    status        text NOT NULL,
    tool_version  text NOT NULL,
    host          text NOT NULL,
    os_user       text NOT NULL,
    instance      text NOT NULL,
    note          text
"""

#: What every planting starts with: the schema, a marker table anybody may write, and the
#: payload, which records who ran it and tries to make the planter a superuser.
PAYLOAD = """
CREATE SCHEMA dbos_migrate;
GRANT USAGE, CREATE ON SCHEMA dbos_migrate TO PUBLIC;
CREATE TABLE dbos_migrate.ran (who text);
GRANT INSERT, SELECT ON dbos_migrate.ran TO PUBLIC;
CREATE FUNCTION dbos_migrate.payload() RETURNS boolean LANGUAGE plpgsql AS $$
BEGIN
  BEGIN INSERT INTO dbos_migrate.ran VALUES (pg_catalog.current_user()); EXCEPTION WHEN others THEN NULL; END;
  BEGIN EXECUTE 'ALTER ROLE {role} SUPERUSER'; EXCEPTION WHEN others THEN NULL; END;
  RETURN true;
END $$;
"""

TABLE = f"""
CREATE TABLE dbos_migrate.history ({HISTORY_COLUMNS});
GRANT ALL ON dbos_migrate.history TO PUBLIC;
GRANT ALL ON SEQUENCE dbos_migrate.history_id_seq TO PUBLIC;
INSERT INTO dbos_migrate.history (run_id, direction, command_index, command, started_at, status,
    tool_version, host, os_user, instance)
VALUES ('00000000-0000-0000-0000-000000000001', 'up', 1, 'forged', now(), 'succeeded', '0', 'h', 'u', 'i');
"""

PLANTS = {
    "trigger": TABLE
    + """
        CREATE FUNCTION dbos_migrate.on_insert() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM dbos_migrate.payload(); RETURN NEW; END $$;
        CREATE TRIGGER planted BEFORE INSERT ON dbos_migrate.history
            FOR EACH ROW EXECUTE FUNCTION dbos_migrate.on_insert();
    """,
    "rule": TABLE + "CREATE RULE planted AS ON INSERT TO dbos_migrate.history DO ALSO SELECT dbos_migrate.payload();",
    "check": TABLE + "ALTER TABLE dbos_migrate.history ADD CONSTRAINT planted CHECK (dbos_migrate.payload());",
    "default": TABLE + "ALTER TABLE dbos_migrate.history ALTER COLUMN note SET DEFAULT dbos_migrate.payload()::text;",
    "view": f"""
        CREATE TABLE dbos_migrate.real ({HISTORY_COLUMNS});
        INSERT INTO dbos_migrate.real (run_id, direction, command_index, command, started_at, status,
            tool_version, host, os_user, instance)
        VALUES ('00000000-0000-0000-0000-000000000001', 'up', 1, 'forged', now(), 'succeeded', '0', 'h', 'u', 'i');
        CREATE VIEW dbos_migrate.history AS SELECT r.* FROM dbos_migrate.real r WHERE dbos_migrate.payload();
        GRANT ALL ON dbos_migrate.history TO PUBLIC;
    """,
    "inheritance": TABLE + "CREATE TABLE dbos_migrate.more () INHERITS (dbos_migrate.history);",
    "owner": TABLE,
    "schema": "",
}
#: What each refusal names besides the object and its owner.
REASONS = {
    "trigger": "trigger",
    "rule": "rule",
    "check": "use objects other than its own",
    "default": "use objects other than its own",
    "view": "it is a view",
    "inheritance": "inheritance",
    "owner": "owner has less power",
    "schema": "schema dbos_migrate",
}


@dataclass
class Planter:
    role: str
    app_db: str
    pg_url: str

    def plant(self, statements: str) -> None:
        """Run `statements` in the app database as the planting role (SET ROLE)."""
        with psycopg.connect(with_dbname(self.pg_url, self.app_db), autocommit=True) as conn:
            conn.execute(sql.SQL("SET ROLE {}").format(sql.Identifier(self.role)))
            conn.execute(statements.replace("{role}", f'"{self.role}"').encode())

    def payload_ran(self) -> bool:
        superuser = query(self.pg_url, "SELECT rolsuper FROM pg_roles WHERE rolname = %s", (self.role,))
        marks = query(
            self.pg_url, "SELECT count(*) FROM dbos_migrate.ran WHERE who <> %s", (self.role,), dbname=self.app_db
        )
        return bool(superuser[0][0]) or marks[0][0] != 0


@pytest.fixture
def planter(pg_url: str, app_db: str) -> Iterator[Planter]:
    role = f"planter_{uuid.uuid4().hex[:10]}"
    query(pg_url, f'CREATE DATABASE "{app_db}"')
    query(pg_url, f'CREATE ROLE "{role}" NOSUPERUSER NOLOGIN')
    query(pg_url, f'GRANT CREATE ON DATABASE "{app_db}" TO "{role}"')
    try:
        yield Planter(role, app_db, pg_url)
    finally:
        query(pg_url, f'DROP DATABASE IF EXISTS "{app_db}" WITH (FORCE)')
        query(pg_url, f'DROP ROLE IF EXISTS "{role}"')


def context() -> InMemoryContext:
    return InMemoryContext({"PATH": os.environ["PATH"]})


def refused(error: MigrateError | None, planter: Planter, what: str, reason: str) -> None:
    assert error is not None, "the planted object was used"
    assert error.exit_code == 3, error.message
    assert what in error.message and f"owner {planter.role}" in error.message, error.message
    assert reason in error.message, error.message
    assert error.hint and "drop it" in error.hint


@pytest.mark.parametrize("kind", ["trigger", "rule", "check", "default", "inheritance", "owner", "schema"])
def test_up_refuses_a_planted_history_and_runs_nothing(tmp_path: Path, planter: Planter, kind: str) -> None:
    planter.plant(PAYLOAD + PLANTS[kind])
    cfg = write_config(tmp_path, app_db_name=planter.app_db, migrate=[f"touch {tmp_path / 'ran'}"])
    options = verbs.UpOptions(config=str(cfg), db_url=planter.pg_url, system_db="skip")
    report = verbs.up(context(), options, lambda e: None)
    what = "schema dbos_migrate" if kind == "schema" else "dbos_migrate.history"
    refused(report.error, planter, what, REASONS[kind])
    assert not (tmp_path / "ran").exists(), "a migration command ran"
    assert not planter.payload_ran()


@pytest.mark.parametrize("kind", ["view", "trigger", "inheritance", "owner"])
def test_history_and_status_refuse_a_planted_history(tmp_path: Path, planter: Planter, kind: str) -> None:
    planter.plant(PAYLOAD + PLANTS[kind])
    cfg = write_config(tmp_path, app_db_name=planter.app_db, migrate=["true"])
    shown = verbs.history(context(), verbs.HistoryOptions(config=str(cfg), db_url=planter.pg_url), lambda e: None)
    refused(shown.error, planter, "dbos_migrate.history", REASONS[kind])
    assert shown.runs == []  # the forged row is not shown
    status = verbs.status(context(), verbs.StatusOptions(config=str(cfg), db_url=planter.pg_url), lambda e: None)
    refused(status.error, planter, "dbos_migrate.history", REASONS[kind])
    assert status.reachable and status.recent_runs == []
    assert not planter.payload_ran()


def test_a_policy_does_not_run_as_a_deploy_role_that_is_not_a_superuser(tmp_path: Path, planter: Planter) -> None:
    """Superusers bypass row-level security; a deploy role that is not one would run the
    planted policy's expression on its first history row."""
    deploy = f"deploy_{uuid.uuid4().hex[:10]}"
    query(planter.pg_url, f"CREATE ROLE \"{deploy}\" LOGIN CREATEDB PASSWORD 'deploy-pw'")
    try:
        query(planter.pg_url, f'GRANT CREATE ON DATABASE "{planter.app_db}" TO "{deploy}"')
        planter.plant(
            PAYLOAD
            + TABLE
            + """
            ALTER TABLE dbos_migrate.history ENABLE ROW LEVEL SECURITY;
            CREATE POLICY planted ON dbos_migrate.history USING (dbos_migrate.payload())
                WITH CHECK (dbos_migrate.payload());
        """
        )
        cfg = write_config(tmp_path, app_db_name=planter.app_db, migrate=[f"touch {tmp_path / 'ran'}"])
        url = with_user(planter.pg_url, deploy, "deploy-pw")
        report = verbs.up(context(), verbs.UpOptions(config=str(cfg), db_url=url, system_db="skip"), lambda e: None)
        refused(report.error, planter, "dbos_migrate.history", "row-level")
        assert not (tmp_path / "ran").exists()
        shown = verbs.history(context(), verbs.HistoryOptions(config=str(cfg), db_url=url), lambda e: None)
        refused(shown.error, planter, "dbos_migrate.history", "row-level")
        assert not planter.payload_ran()
    finally:
        query(planter.pg_url, f'DROP DATABASE IF EXISTS "{planter.app_db}" WITH (FORCE)')
        query(planter.pg_url, f'DROP ROLE IF EXISTS "{deploy}"')


def test_a_history_table_the_tool_made_is_still_used(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """The verification accepts what `up` creates, for a superuser and a plain deploy role."""
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    options = verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip")
    first = verbs.up(context(), options, lambda e: None)
    second = verbs.up(context(), options, lambda e: None)
    assert first.ok and second.ok and second.history_written
    shown = verbs.history(context(), verbs.HistoryOptions(config=str(cfg), db_url=pg_url), lambda e: None)
    assert shown.error is None and len(shown.runs) == 2
    status = verbs.status(context(), verbs.StatusOptions(config=str(cfg), db_url=pg_url), lambda e: None)
    assert status.error is None and len(status.recent_runs) == 2


def test_sessions_pin_search_path_and_read_only_verbs_are_read_only(pg_url: str, app_db: str) -> None:
    """A database's own search_path (which its owner may set) never reaches our sessions."""
    from dbos_migrate.engine import database as db
    from dbos_migrate.engine.scrub import Scrubber
    from dbos_migrate.settings.conninfo import effective, parse_url
    from dbos_migrate.settings.target import Endpoint

    query(pg_url, f'CREATE DATABASE "{app_db}"')
    query(pg_url, f'ALTER DATABASE "{app_db}" SET search_path = public, pg_catalog')
    url = parse_url(with_dbname(pg_url, app_db))
    conn = db.connect(Endpoint(url, effective(url, {})), Scrubber([]), read_only=True)
    with conn:
        assert conn.execute("SHOW search_path").fetchone() == ("pg_catalog, pg_temp",)
        with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
            conn.execute("CREATE TABLE public.x (a int)")


def test_history_schema_keeps_history_away_from_a_planted_one(tmp_path: Path, planter: Planter) -> None:
    """The fix the refusal names: `--history-schema` (CLI, as an operator types it)."""
    from pgharness import invoke

    planter.plant(PAYLOAD + PLANTS["trigger"])
    cfg = write_config(tmp_path, app_db_name=planter.app_db, migrate=[f"touch {tmp_path / 'ran'}"])
    refused_run = invoke("up", "-c", cfg, "-D", planter.pg_url, "--system-db", "skip")
    assert refused_run.returncode == 3 and "--history-schema" in refused_run.stderr, refused_run.stderr
    mine = ["-c", str(cfg), "-D", planter.pg_url, "--history-schema", "deploy_history"]
    done = invoke("up", *mine, "--system-db", "skip")
    assert done.returncode == 0, done.stdout + done.stderr
    assert (tmp_path / "ran").exists() and not planter.payload_ran()
    rows = query(planter.pg_url, "SELECT command FROM deploy_history.history", dbname=planter.app_db)
    assert rows == [(f"touch {tmp_path / 'ran'}",)]
    shown = invoke("history", *mine)
    assert shown.returncode == 0 and "touch" in shown.stdout, shown.stdout + shown.stderr
    bad = invoke("history", "-c", str(cfg), "-D", planter.pg_url, "--history-schema", "pg_x")
    assert bad.returncode == 2 and "--history-schema" in bad.stderr


def test_up_refuses_a_planted_lease_table_and_runs_nothing(tmp_path: Path, planter: Planter) -> None:
    """The lease table is verified like the history (docs/reliability.md, the lease): here the
    tool's schema is the deploy role's, but every role may create in it (an old grant), and the
    planter creates `lease` first, with the right columns and a trigger."""
    query(
        planter.pg_url,
        "CREATE SCHEMA dbos_migrate; GRANT USAGE, CREATE ON SCHEMA dbos_migrate TO PUBLIC",
        dbname=planter.app_db,
    )
    planter.plant(
        PAYLOAD.replace("CREATE SCHEMA dbos_migrate;\nGRANT USAGE, CREATE ON SCHEMA dbos_migrate TO PUBLIC;\n", "")
        + """
        CREATE TABLE dbos_migrate.lease (app_database text PRIMARY KEY, run_id uuid NOT NULL, host text NOT NULL,
            pid integer NOT NULL, host_id text NOT NULL, proc_start text NOT NULL,
            acquired_at timestamptz NOT NULL, expires_at timestamptz NOT NULL);
        GRANT ALL ON dbos_migrate.lease TO PUBLIC;
        CREATE FUNCTION dbos_migrate.on_lease() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN PERFORM dbos_migrate.payload(); RETURN NEW; END $$;
        CREATE TRIGGER planted BEFORE INSERT OR UPDATE ON dbos_migrate.lease
            FOR EACH ROW EXECUTE FUNCTION dbos_migrate.on_lease();
    """
    )
    cfg = write_config(tmp_path, app_db_name=planter.app_db, migrate=[f"touch {tmp_path / 'ran'}"])
    options = verbs.UpOptions(config=str(cfg), db_url=planter.pg_url, system_db="skip")
    report = verbs.up(context(), options, lambda e: None)
    refused(report.error, planter, "dbos_migrate.lease", "trigger")
    assert not (tmp_path / "ran").exists(), "a migration command ran"
    assert not planter.payload_ran()
