"""Hostile names: injection attempts are rejected by validation, and identifiers are always quoted."""

from __future__ import annotations

import uuid
from pathlib import Path

from helpers import db_exists, query, write_config
from hypothesis import given, settings
from hypothesis import strategies as st
from pgharness import invoke

from dbos_migrate.errors import UsageError
from dbos_migrate.settings.config import APP_DB_NAME
from dbos_migrate.settings.target import parse_url, resolve_app_database

ATTACKS = [
    'x"; DROP DATABASE postgres; --',
    "a' OR '1'='1",
    "robert'); DROP TABLE students;--",
    "app\nname",
    "app name",
    "App",
    "a" * 64,
    "ünïcode",
    "",
]


def test_injection_attempts_are_rejected_before_any_sql(tmp_path: Path, pg_url: str) -> None:
    """Only the databases this test could have made, or unmade, are looked at: the shared
    server's other databases belong to other tests and sessions."""
    for attack in ATTACKS:
        cfg = write_config(tmp_path, app_db_name=None, name="fine-name", migrate=["touch ran"])
        result = invoke("up", "-c", cfg, "-D", pg_url, "--app-db-name", attack)
        assert result.returncode == 2, (attack, result.stderr)
        assert "--app-db-name" in result.stderr and "Traceback" not in result.stderr
    cfg = tmp_path / "dbos-config.yaml"
    cfg.write_text("database:\n  app_db_name: 'x\"; DROP DATABASE postgres; --'\n  migrate: ['touch ran']\n")
    result = invoke("up", "-c", cfg, "-D", pg_url)
    assert result.returncode == 2 and "database.app_db_name" in result.stderr
    assert not (tmp_path / "ran").exists()
    ours = ["postgres", "fine_name", "fine_name_dbos_sys", *ATTACKS, *(f"{a}_dbos_sys" for a in ATTACKS)]
    present = {r[0] for r in query(pg_url, "SELECT datname FROM pg_database WHERE datname = ANY(%s)", (ours,))}
    assert present == {"postgres"}


def test_hostile_role_name_is_looked_up_as_a_value(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    result = invoke("up", "-c", cfg, "-D", pg_url, "--app-role", 'x"; DROP DATABASE postgres; --')
    assert result.returncode == 2 and "no such role" in result.stderr
    assert db_exists(pg_url, "postgres")


def test_reserved_word_names_work_because_identifiers_are_quoted(tmp_path: Path, pg_url: str) -> None:
    """`select_…` is fine anyway; a bare reserved word proves quoting (CREATE DATABASE select fails unquoted)."""
    name = "order"
    for db in (name, f"{name}_dbos_sys"):  # leftovers from an interrupted run
        query(pg_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    role = f"user_{uuid.uuid4().hex[:6]}"
    query(pg_url, f'CREATE ROLE "{role}"')
    try:
        cfg = write_config(tmp_path, app_db_name=name, migrate=['psql -q -c "create table t(x int)"'])
        result = invoke("up", "-c", cfg, "-D", pg_url, "--app-role", role)
        assert result.returncode == 0, result.stdout + result.stderr
        assert db_exists(pg_url, name)
        assert query(pg_url, "select has_table_privilege(%s, 't', 'SELECT')", (role,), dbname=name) == [(True,)]
        assert query(pg_url, "select has_database_privilege(%s, 'order_dbos_sys', 'CONNECT')", (role,)) == [(True,)]
    finally:
        for db in (name, f"{name}_dbos_sys"):
            query(pg_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        query(pg_url, f'DROP ROLE IF EXISTS "{role}"')


@settings(max_examples=400, deadline=None)
@given(st.text(max_size=80))
def test_any_app_db_name_is_valid_or_a_clean_usage_error(name: str) -> None:
    try:
        got, _ = resolve_app_database(None, name, parse_url("postgresql://h/postgres"))
    except UsageError as exc:
        assert exc.exit_code == 2
        return
    assert got == name and APP_DB_NAME.match(got) and len(got.encode()) <= 63
