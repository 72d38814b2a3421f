"""`drop`: the analogue of `dbos-cloud db destroy` for a development or CI database: the
warning first, a typed confirmation, the migration lock, and no session ended unless
--force (docs/behaviour.md, "drop")."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import psycopg
from helpers import db_exists, one_json, query, write_config
from pgharness import invoke, with_dbname

OUTPUT_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "output.schema.json"
WARNING = "irreversibly delete all data"


def valid(doc: dict[str, object]) -> dict[str, object]:
    from jsonschema import Draft202012Validator

    Draft202012Validator(json.loads(OUTPUT_SCHEMA.read_text())).validate(doc)
    return doc


def created(pg_url: str, *names: str) -> None:
    for name in names:
        query(pg_url, f'CREATE DATABASE "{name}"')


def test_drop_drops_the_app_and_system_databases_after_the_warning(tmp_path: Path, pg_url: str, app_db: str) -> None:
    created(pg_url, app_db, f"{app_db}_dbos_sys")
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    result = invoke("drop", "-c", cfg, "-D", pg_url, "--system-db", "--yes", "-o", "json")
    assert result.returncode == 0, result.stderr
    doc = valid(one_json(result.stdout))
    assert WARNING in result.stderr and app_db in result.stderr
    assert doc["command"] == "drop" and doc["forced"] is False
    assert doc["databases"] == [
        {"name": app_db, "role": "app", "existed": True, "dropped": True},
        {"name": f"{app_db}_dbos_sys", "role": "system", "existed": True, "dropped": True},
    ]
    assert not db_exists(pg_url, app_db) and not db_exists(pg_url, f"{app_db}_dbos_sys")
    again = invoke("drop", "-c", cfg, "-D", pg_url, "--confirm", app_db)  # nothing left: exit 0, said
    assert again.returncode == 0 and "does not exist: nothing to drop" in again.stdout, again.stderr


def test_ups_system_db_variable_neither_breaks_drop_nor_drops_the_system_database(
    tmp_path: Path, pg_url: str, app_db: str
) -> None:
    created(pg_url, app_db, f"{app_db}_dbos_sys")
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    result = invoke("drop", "-c", cfg, "-D", pg_url, "--yes", env={"DBOS_MIGRATE_SYSTEM_DB": "create"})
    assert result.returncode == 0 and not db_exists(pg_url, app_db), result.stderr
    assert db_exists(pg_url, f"{app_db}_dbos_sys")
    result = invoke("drop", "-c", cfg, "-D", pg_url, "--yes", env={"DBOS_MIGRATE_DROP_SYSTEM_DB": "true"})
    assert result.returncode == 0 and not db_exists(pg_url, f"{app_db}_dbos_sys"), result.stderr


def test_drop_needs_a_typed_confirmation_even_off_production(tmp_path: Path, pg_url: str, app_db: str) -> None:
    created(pg_url, app_db)
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    refused = invoke("drop", "-c", cfg, "-D", pg_url)  # no terminal, no --yes
    assert refused.returncode == 5 and "without confirmation" in refused.stderr and "--confirm" in refused.stderr
    assert refused.stderr.index(WARNING) < refused.stderr.index("without confirmation")
    assert invoke("drop", "-c", cfg, "-D", pg_url, "--confirm", "other").returncode == 5
    assert invoke("drop", "-c", cfg, "-D", pg_url, answers=["not-it"]).returncode == 5
    assert db_exists(pg_url, app_db)
    typed = invoke("drop", "-c", cfg, "-D", pg_url, answers=[app_db])
    assert typed.returncode == 0 and not db_exists(pg_url, app_db), typed.stderr


def test_on_production_the_guard_refuses_before_any_connection(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, app_db_name="prod_app", migrate=["true"])
    url = "postgresql://u:unused-pw@db.invalid:5432"  # does not even resolve: a connection would be exit 3
    result = invoke("drop", "-c", cfg, "-D", url, "-o", "json")
    doc = valid(one_json(result.stdout))
    assert result.returncode == 5 and doc["error"]["code"] == "production_guard"  # type: ignore[index]
    assert "PRODUCTION" in result.stderr and WARNING in result.stderr and "unused-pw" not in result.stderr


def test_other_sessions_are_exit_3_named_unless_force(tmp_path: Path, pg_url: str, app_db: str) -> None:
    created(pg_url, app_db)
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    with psycopg.connect(with_dbname(pg_url, app_db), autocommit=True, application_name="the-app") as other:
        result = invoke("drop", "-c", cfg, "-D", pg_url, "--yes")
        assert result.returncode == 3 and f"pid {other.info.backend_pid}" in result.stderr, result.stderr
        assert "the-app" in result.stderr and "--force" in result.stderr and db_exists(pg_url, app_db)
        forced = invoke("drop", "-c", cfg, "-D", pg_url, "--yes", "--force", "-o", "json")
        assert forced.returncode == 0 and one_json(forced.stdout)["forced"] is True, forced.stderr
    assert not db_exists(pg_url, app_db)


def test_a_run_in_progress_holds_the_lock_and_drop_waits_then_gives_up(
    tmp_path: Path, pg_url: str, app_db: str
) -> None:
    from dbos_migrate.engine.database import LOCK_CLASS, lock_key

    created(pg_url, app_db)
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    with psycopg.connect(with_dbname(pg_url, app_db), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, lock_key(app_db)))
        result = invoke("drop", "-c", cfg, "-D", pg_url, "--yes", "--force", "--lock-timeout", "0.3")
        assert result.returncode == 4, result.stderr
        assert db_exists(pg_url, app_db)


def test_a_live_lease_of_a_run_whose_lock_session_died_is_respected(tmp_path: Path, pg_url: str, app_db: str) -> None:
    import time

    from dbos_migrate.engine import lease

    created(pg_url, app_db)
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    with psycopg.connect(with_dbname(pg_url, app_db), autocommit=True) as conn:  # the run, then its session dies
        assert lease.prepare_table(conn)
        run_id = str(uuid.uuid4())
        lease.acquire(conn, app_db, run_id, 120.0, time.monotonic() + 10, lambda text, level: None)
    result = invoke("drop", "-c", cfg, "-D", pg_url, "--yes", "--force", "--lock-timeout", "0.3")
    assert result.returncode == 4 and run_id[:8] in result.stderr, result.stderr
    assert db_exists(pg_url, app_db)


def test_drop_refuses_instance_and_scratch_databases(tmp_path: Path, pg_url: str) -> None:
    cfg = write_config(tmp_path, app_db_name="x_app", migrate=["true"])
    for name in ("postgres", "template1", "dbos_rehearse_0123456789ab"):
        result = invoke("drop", "-c", cfg, "-D", pg_url, "--app-db-name", name, "--yes")
        assert result.returncode == 2 and "error: " in result.stderr, (name, result.stderr)
        assert WARNING not in result.stderr  # refused before the warning and before any connection
    assert db_exists(pg_url, "template1") and db_exists(pg_url, "postgres")
