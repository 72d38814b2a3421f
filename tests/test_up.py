"""`dbos-migrate up` end to end against a real PostgreSQL, the CLI run as a subprocess."""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote

import psycopg
from helpers import db_exists, history_rows, one_json, query, write_config
from pgharness import free_port, invoke, with_dbname, with_user


def process_alive(pid: int) -> bool:
    """Alive and not a zombie (a container's PID 1 may never reap orphans)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return False
    return state != "Z"


def up(cfg: Path, url: str, *args: object, env: dict[str, str | None] | None = None):  # type: ignore[no-untyped-def]
    return invoke("up", "-c", cfg, "-D", url, *args, env=env)


def test_creates_database_then_second_run_is_a_noop(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["echo one >> log", "echo two >> log"])
    first = up(cfg, pg_url)
    assert first.returncode == 0, first.stderr
    assert db_exists(pg_url, app_db)
    assert f"app database {app_db} created" in first.stdout
    assert (tmp_path / "log").read_text() == "one\ntwo\n"

    second = up(cfg, pg_url, "--output", "json")
    assert second.returncode == 0, second.stderr
    doc = one_json(second.stdout)
    assert doc["ok"] is True and doc["created"] is False and doc["app_database"] == app_db
    assert [c["status"] for c in doc["commands"]] == ["succeeded", "succeeded"]


def test_app_db_name_wins_over_derived_name(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, name="Some-Other App", app_db_name=app_db, migrate=["true"])
    result = up(cfg, pg_url)
    assert result.returncode == 0, result.stderr
    assert "database.app_db_name" in result.stdout
    assert db_exists(pg_url, app_db) and not db_exists(pg_url, "some_other_app")


def test_name_is_derived_from_app_name(tmp_path: Path, pg_url: str, app_db: str) -> None:
    name = app_db.upper().replace("_", "-")  # T-ABC... derives back to t_abc...
    cfg = write_config(tmp_path, name=name, migrate=["true"])
    result = up(cfg, pg_url)
    assert result.returncode == 0, result.stderr
    assert f"derived from name {name!r}" in result.stdout
    assert db_exists(pg_url, app_db)


def test_cloud_style_url_with_postgres_path(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """`dbos-cloud db url` gives .../postgres: the app database is still the app's own."""
    cfg = write_config(tmp_path, app_db_name=None, name=app_db, migrate=['echo "$PGDATABASE" > db'])
    result = up(cfg, with_dbname(pg_url, "postgres"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "db").read_text().strip() == app_db


def test_url_database_is_the_app_database(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, name="ignored-name", migrate=['echo "$PGDATABASE" > db'])
    result = up(cfg, with_dbname(pg_url, app_db))
    assert result.returncode == 0, result.stderr
    assert "the database in the URL" in result.stdout
    assert (tmp_path / "db").read_text().strip() == app_db


def test_environment_each_command_receives(tmp_path: Path, pg_url: str, app_db: str) -> None:
    extra = "env:\n  FROM_CONFIG: config-value\n  OVERRIDDEN: by-config\n  PGDATABASE: config-cannot-win\n"
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["env > env.txt", "pwd > cwd.txt"], extra=extra)
    result = up(cfg, pg_url, env={"OVERRIDDEN": "by-process", "FROM_PROCESS": "yes", "PGSSLMODE": "disable"})
    assert result.returncode == 0, result.stderr
    env = dict(line.split("=", 1) for line in (tmp_path / "env.txt").read_text().splitlines() if "=" in line)
    assert env["FROM_CONFIG"] == "config-value"
    assert env["OVERRIDDEN"] == "by-config"
    assert env["FROM_PROCESS"] == "yes"
    assert env["PGDATABASE"] == app_db
    assert env["PGSSLMODE"] == "disable"  # as libpq applied it to dbos-migrate's own connection
    assert env["DBOS_DATABASE_URL"].endswith(f"/{app_db}")
    assert env["DBOS_SYSTEM_DATABASE_URL"].endswith(f"/{app_db}_dbos_sys")
    for var in ("PGHOST", "PGPORT", "PGUSER"):
        assert env[var]
    assert Path((tmp_path / "cwd.txt").read_text().strip()).resolve() == tmp_path.resolve()
    # The commands really reach the app database with no setup of their own.
    with psycopg.connect(env["DBOS_DATABASE_URL"]) as conn:
        assert conn.execute("select current_database()").fetchone() == (app_db,)


def test_commands_run_in_order_and_stop_at_first_failure(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(
        tmp_path, app_db_name=app_db, migrate=["echo 1 >> log", "echo 2 >> log; exit 3", "echo 3 >> log"]
    )
    result = up(cfg, pg_url)
    assert result.returncode == 1
    assert (tmp_path / "log").read_text() == "1\n2\n"
    assert "command 2 failed with exit code 3" in result.stderr
    rows = history_rows(pg_url, app_db)
    assert [(r["command_index"], r["status"], r["exit_code"]) for r in rows] == [
        (1, "succeeded", 0),
        (2, "failed", 3),
    ]


def test_command_not_found_and_signal(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["no-such-migration-tool up"])
    result = up(cfg, pg_url)
    assert result.returncode == 1
    assert "exit code 127 (command not found)" in result.stderr

    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["kill -KILL $$"])
    result = up(cfg, pg_url)
    assert result.returncode == 1
    assert "killed by SIGKILL" in result.stderr


def test_command_timeout_kills_the_process_group(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["sleep 300 & echo $! > bg.pid; sleep 301"])
    result = up(cfg, pg_url, "--command-timeout", "1", "--output", "json")
    assert result.returncode == 124, result.stderr
    doc = one_json(result.stdout)
    assert doc["error"]["code"] == "command_timeout"
    assert doc["commands"][0]["status"] == "timed_out"
    assert not process_alive(int((tmp_path / "bg.pid").read_text()))
    assert history_rows(pg_url, app_db)[0]["status"] == "timed_out"


def test_config_errors_exit_2(tmp_path: Path, pg_url: str) -> None:
    (tmp_path / "dbos-config.yaml").write_text("name: x\ndatabase:\n  migrate: alembic upgrade head\n  migrat: []\n")
    result = invoke("up", "-c", tmp_path / "dbos-config.yaml", "-D", pg_url)
    assert result.returncode == 2
    assert re.search(r"dbos-config.yaml:3:\d+: database.migrate: must be a list of commands", result.stderr)
    assert "database.migrat: unknown key" in result.stderr and "did you mean 'migrate'" in result.stderr
    assert "Traceback" not in result.stderr


def test_unset_variable_in_a_command_is_an_error_when_it_would_run(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["echo ${DBOS_MIGRATE_SURELY_UNSET}"])
    result = up(cfg, pg_url, env={"DBOS_MIGRATE_SURELY_UNSET": None})
    assert result.returncode == 2
    assert "${DBOS_MIGRATE_SURELY_UNSET} is not set" in result.stderr
    assert not db_exists(pg_url, app_db)


def test_unreachable_server_exits_3(tmp_path: Path, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["touch ran"])
    result = up(cfg, f"postgresql://postgres:secretpw1@127.0.0.1:{free_port()}/postgres")
    assert result.returncode == 3
    assert "Connection refused" in result.stderr or "connection refused" in result.stderr.lower()
    assert "secretpw1" not in result.stdout + result.stderr
    assert not (tmp_path / "ran").exists()


def test_role_without_createdb_exits_3_naming_createdb(tmp_path: Path, pg_url: str, app_db: str) -> None:
    role = f"r_{app_db}"
    query(pg_url, f"CREATE ROLE \"{role}\" LOGIN PASSWORD 'pw-nocreate'")
    try:
        role_url = with_dbname(with_user(pg_url, role, "pw-nocreate"), "postgres")
        cfg = write_config(tmp_path, app_db_name=app_db, migrate=["touch ran"])
        result = up(cfg, role_url)
        assert result.returncode == 3, result.stdout + result.stderr
        assert "CREATEDB" in result.stderr and "--no-create" in result.stderr
        assert not (tmp_path / "ran").exists()
    finally:
        query(pg_url, f'DROP ROLE IF EXISTS "{role}"')


def test_lock_timeout_exits_4_naming_the_holder(tmp_path: Path, pg_url: str, app_db: str) -> None:
    from dbos_migrate.engine.database import LOCK_CLASS, lock_key

    query(pg_url, f'CREATE DATABASE "{app_db}"')
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["touch ran"])
    holder = psycopg.connect(with_dbname(pg_url, app_db), autocommit=True, application_name="stuck-deploy-42")
    try:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, lock_key(app_db)))
        result = up(cfg, pg_url, "--lock-timeout", "1")
        assert result.returncode == 4, result.stderr
        assert "stuck-deploy-42" in result.stdout + result.stderr
        assert not (tmp_path / "ran").exists()
    finally:
        holder.close()
    assert up(cfg, pg_url).returncode == 0


def test_history_rows(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true", "echo second"])
    assert up(cfg, pg_url).returncode == 0
    rows = history_rows(pg_url, app_db)
    assert len(rows) == 2
    assert {r["direction"] for r in rows} == {"up"} and len({r["run_id"] for r in rows}) == 1
    assert [r["command"] for r in rows] == ["true", "echo second"]
    assert all(r["status"] == "succeeded" and r["exit_code"] == 0 for r in rows)
    assert all(r["finished_at"] >= r["started_at"] and r["tool_version"] and r["host"] and r["os_user"] for r in rows)
    listed = invoke("history", "-c", cfg, "-D", pg_url, "--output", "json")
    assert listed.returncode == 0, listed.stderr
    runs = one_json(listed.stdout)["runs"]
    assert [r["command_index"] for r in runs] == [2, 1]  # newest first


def test_no_history(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    assert up(cfg, pg_url, "--no-history").returncode == 0
    assert not query(pg_url, "SELECT 1 FROM pg_namespace WHERE nspname = 'dbos_migrate'", dbname=app_db)


def test_dry_run_changes_nothing(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["touch ran", "echo second"])
    result = up(cfg, pg_url, "--dry-run")
    assert result.returncode == 0, result.stderr
    assert "would be created" in result.stdout and "touch ran" in result.stdout
    assert not db_exists(pg_url, app_db) and not (tmp_path / "ran").exists()
    plan = invoke("plan", "-c", cfg, "-D", pg_url, "--output", "json")
    doc = one_json(plan.stdout)
    assert doc["exists"] is False and doc["planned_commands"] == ["touch ran", "echo second"]


def test_no_create_on_missing_database_exits_3(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["touch ran"])
    result = up(cfg, pg_url, "--no-create")
    assert result.returncode == 3
    assert "does not exist" in result.stderr
    assert not db_exists(pg_url, app_db) and not (tmp_path / "ran").exists()


def test_app_role_grants_runtime_privileges(tmp_path: Path, pg_url: str, app_db: str) -> None:
    role = f"rt_{app_db}"
    query(pg_url, f'CREATE ROLE "{role}"')
    try:
        cfg = write_config(
            tmp_path, app_db_name=app_db, migrate=['psql -q -c "create table orders(id serial primary key)"']
        )
        result = up(cfg, pg_url, "--app-role", role)
        assert result.returncode == 0, result.stderr
        checks = query(
            pg_url,
            "select has_database_privilege(%s, current_database(), 'CONNECT'),"
            " has_schema_privilege(%s, 'public', 'USAGE'),"
            " has_table_privilege(%s, 'orders', 'SELECT,INSERT,UPDATE,DELETE'),"
            " has_sequence_privilege(%s, 'orders_id_seq', 'USAGE')",
            (role, role, role, role),
            dbname=app_db,
        )
        assert checks == [(True, True, True, True)]
        # Default privileges cover tables created by later migrations.
        query(pg_url, "create table later(x int)", dbname=app_db)
        assert query(pg_url, "select has_table_privilege(%s, 'later', 'SELECT')", (role,), dbname=app_db) == [(True,)]
        missing = up(cfg, pg_url, "--app-role", "no_such_role_xyz")
        assert missing.returncode == 2 and "no such role" in missing.stderr
    finally:
        for db in (app_db, f"{app_db}_dbos_sys"):
            query(pg_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        query(pg_url, f'DROP ROLE IF EXISTS "{role}"')


def test_url_command(tmp_path: Path, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db)
    pw = "p@ss:w/o%r#d?&=x"
    url = f"postgresql://admin:{quote(pw, safe='')}@db.example.com:5432/postgres?sslmode=require"
    masked = invoke("url", "-c", cfg, "-D", url)
    assert masked.returncode == 0
    assert masked.stdout.strip() == f"postgresql://admin:***@db.example.com:5432/{app_db}?sslmode=require"
    shown = invoke("url", "-c", cfg, "-D", url, "--show-password")
    from dbos_migrate.settings.target import parse_url

    assert parse_url(shown.stdout.strip()).password == pw


def test_json_output_keeps_stdout_one_document(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["echo to-stdout", "echo to-stderr >&2"])
    result = up(cfg, pg_url, "--output", "json")
    assert result.returncode == 0
    doc = one_json(result.stdout)
    assert "to-stdout" in result.stderr and "to-stderr" in result.stderr
    for key in ("ok", "app_database", "created", "target", "target_source", "commands", "error"):
        assert key in doc
    for command in doc["commands"]:
        assert set(command) >= {"command", "exit_code", "status", "duration_s"}
    failed = up(write_config(tmp_path, app_db_name=app_db, migrate=["exit 9"]), pg_url, "--output", "json")
    doc = one_json(failed.stdout)
    assert failed.returncode == 1 and doc["ok"] is False and doc["error"]["code"] == "command_failed"
    assert doc["error"]["message"].startswith("command 1 failed with exit code 9")


def test_maintenance_database_fallback_and_override(tmp_path: Path, own_cluster) -> None:  # type: ignore[no-untyped-def]
    """Without a `postgres` database, creation goes through template1 (from template0);
    --maintenance-db picks another one."""
    cluster = own_cluster()
    url = cluster.url(host="127.0.0.1")
    query(url + "/template1", "DROP DATABASE postgres WITH (FORCE)")
    cfg = write_config(tmp_path, app_db_name="via_template1", migrate=["true"])
    result = up(cfg, with_dbname(url, "template1"))
    assert result.returncode == 0, result.stdout + result.stderr
    assert db_exists(url + "/template1", "via_template1")

    query(url + "/template1", "CREATE DATABASE maint_db")
    cfg = write_config(tmp_path, app_db_name="via_override", migrate=["true"])
    result = up(cfg, url + "/template1", "--maintenance-db", "maint_db")
    assert result.returncode == 0, result.stdout + result.stderr
    assert db_exists(url + "/template1", "via_override")
    bad = up(
        write_config(tmp_path, app_db_name="never_made", migrate=["true"]),
        url + "/template1",
        "--maintenance-db",
        "nope",
    )
    assert bad.returncode == 3 and "--maintenance-db" in bad.stderr


def test_up_on_production_warns_but_never_prompts(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["touch ran"])
    result = up(cfg, pg_url, "--production")  # stdin is /dev/null: a prompt would fail
    assert result.returncode == 0, result.stderr
    assert "target is PRODUCTION (--production)" in result.stdout
    assert (tmp_path / "ran").exists()


def test_verbose_and_quiet(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    verbose = up(cfg, pg_url, "-v")
    assert verbose.returncode == 0 and "lock acquired after" in verbose.stdout
    quiet = up(cfg, pg_url, "-q", "--system-db", "create")
    assert quiet.returncode == 0 and quiet.stdout == "" and "lock acquired" not in quiet.stdout
