"""Real apps deploy where `dbos migrate` deploys them (docs/dbos-compatibility.md): the commands
reach the server the tool reached, a rehearsal writes only to its scratch database, the
`dbos-cloud db url` recovery path works with the password from wherever it is, and the
words and hints DBOS users expect are there. Against real PostgreSQL and the real CLI."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import db_exists, history_rows, one_json, query, write_config
from pgharness import PASSWORD, ClusterFactory, invoke, run_on_tty

# ---------------------------------------------------------------------------- one effective connection


def test_commands_reach_the_server_the_tool_reached(tmp_path: Path, own_cluster: ClusterFactory) -> None:
    """Host and port only in the query: the tool and the commands' psql must agree (the machine's
    own server listens on 5432, where a psql without PGPORT would silently go)."""
    cluster = own_cluster()
    url = f"postgresql://postgres:{quote(PASSWORD, safe='')}@/postgres?host=127.0.0.1&port={cluster.port}"
    cfg = write_config(
        tmp_path,
        app_db_name="where_app",
        migrate=[f"psql -Atc 'SHOW port' > {tmp_path / 'port'}", "psql -qc 'CREATE TABLE here(x int)'"],
    )
    result = invoke("up", "-c", cfg, "-D", url, "--system-db", "skip")
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "port").read_text().strip() == str(cluster.port)
    assert query(cluster.url(dbname="where_app"), "SELECT to_regclass('here') IS NOT NULL") == [(True,)]


def test_a_rehearsal_writes_only_to_its_scratch_database(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """env: DATABASE_URL: ${DBOS_DATABASE_URL} used to point a rehearsal's commands at the real database."""
    query(pg_url, f'CREATE DATABASE "{app_db}"')
    extra = "env:\n  DATABASE_URL: ${DBOS_DATABASE_URL}\n"
    cfg = write_config(
        tmp_path,
        app_db_name=app_db,
        extra=extra,
        migrate=['psql "$DATABASE_URL" -qc "CREATE TABLE written_here(x int)"'],
    )
    result = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url, "-o", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    changes = one_json(result.stdout)["changes"]
    assert [(c["rule"], c["object"]) for c in changes] == [("SAFE001", "public.written_here")]
    assert query(pg_url, "SELECT to_regclass('written_here')", dbname=app_db) == [(None,)]


def test_an_env_entry_with_an_unset_variable_is_not_exported_empty(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(
        tmp_path,
        app_db_name=app_db,
        extra="env:\n  API_TOKEN: ${TOKEN_NOT_SET}\n",
        migrate=[f'[ "${{API_TOKEN-unset}}" = unset ] && touch {tmp_path / "ok"}'],
    )
    result = invoke("up", "-c", cfg, "-D", pg_url, "--system-db", "skip", env={"TOKEN_NOT_SET": None})
    assert result.returncode == 0, result.stdout + result.stderr
    assert (tmp_path / "ok").exists()
    assert "env.API_TOKEN: not exported: ${TOKEN_NOT_SET} is not set" in result.stdout


# ---------------------------------------------------------------------------- the recovery path with `dbos-cloud db url`


def masked_cloud_url(port: int) -> str:
    """What `dbos-cloud db url` prints without -S: the password is the literal ***."""
    return f"postgresql://postgres:***@localhost:{port}/postgres"


def pgpass_line(port: int) -> str:
    escaped = PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
    return f"localhost:{port}:*:postgres:{escaped}\n"


@pytest.mark.parametrize("source", ["PGPASSWORD", ".pgpass", "service file"])
def test_down_with_the_masked_cloud_url_takes_the_password_from_libpq_sources(
    source: str, tmp_path: Path, own_cluster: ClusterFactory
) -> None:
    cluster = own_cluster()
    home = tmp_path / "home"
    home.mkdir()
    env: dict[str, str | None] = {"HOME": str(home), "PGPASSWORD": None, "PGSERVICE": None}
    if source == "PGPASSWORD":
        env["PGPASSWORD"] = PASSWORD
    elif source == ".pgpass":
        (home / ".pgpass").write_text(pgpass_line(cluster.port))
        (home / ".pgpass").chmod(0o600)
    else:
        (home / ".pg_service.conf").write_text(f"[shop]\npassword={PASSWORD}\n")
        env["PGSERVICE"] = "shop"
    # The command prints the password it was given: known only from that source, it is still scrubbed.
    echo = 'echo "pw=$PGPASSWORD url=$DBOS_DATABASE_URL"'
    cfg = write_config(tmp_path, app_db_name="shop", migrate=[echo], rollback=[f"touch {tmp_path / 'rolled-back'}"])
    up = invoke("up", "-c", cfg, "-D", masked_cloud_url(cluster.port), "--system-db", "skip", env=env)
    assert up.returncode == 0, up.stdout + up.stderr
    assert "pw=***" in up.stdout and quote(PASSWORD, safe="") not in up.stdout + up.stderr
    down = invoke("rollback", "-c", cfg, "-D", masked_cloud_url(cluster.port), "-o", "json", env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    assert (tmp_path / "rolled-back").exists()
    assert PASSWORD not in down.stdout + down.stderr + up.stdout + up.stderr
    assert one_json(down.stdout)["connection"]["password_source"] in (
        "PGPASSWORD",
        ".pgpass",
        "service shop (~/.pg_service.conf)",
    )


def test_the_masked_cloud_url_asks_for_the_password_on_a_terminal(tmp_path: Path, own_cluster: ClusterFactory) -> None:
    cluster = own_cluster()
    cfg = write_config(tmp_path, app_db_name="shop", migrate=[f"touch {tmp_path / 'migrated'}"])
    code, text = run_on_tty(
        ["up", "-c", cfg, "-D", masked_cloud_url(cluster.port), "--system-db", "skip"],
        prompt=b"(the URL shows ***): ",
        answer=PASSWORD,
        env={"PGPASSWORD": None, "HOME": str(tmp_path), "NO_COLOR": "1"},
    )
    assert code == 0, text
    assert (tmp_path / "migrated").exists()
    assert PASSWORD not in text  # typed without echo, and never printed back


def test_the_masked_cloud_url_without_any_password_source_says_how_to_fix_it(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, app_db_name="shop", rollback=["true"])
    result = invoke(
        "down",
        "-c",
        cfg,
        "-D",
        "postgresql://dbosadmin:***@127.0.0.1:1/postgres",
        "--yes",
        env={"PGPASSWORD": None, "HOME": str(tmp_path), "PGSERVICE": None},
    )
    assert result.returncode == 2
    assert "***" in result.stderr and "dbos-cloud db url -S" in result.stderr and "PGPASSWORD" in result.stderr


# ---------------------------------------------------------------------------- the words DBOS users type


def test_migrate_and_rollback_are_up_and_down(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["echo up >> log"], rollback=["echo down >> log"])
    assert invoke("migrate", "-c", cfg, "-D", pg_url, "--system-db", "skip").returncode == 0
    assert invoke("rollback", "-c", cfg, "-D", pg_url).returncode == 0
    assert (tmp_path / "log").read_text().split() == ["up", "down"]
    assert [r["direction"] for r in history_rows(pg_url, app_db)] == ["up", "down"]


@pytest.mark.parametrize(
    ("language", "named"), [("typescript", "knex migrate:rollback"), ("python", "alembic downgrade")]
)
def test_the_down_hint_names_the_apps_toolchain(tmp_path: Path, language: str, named: str) -> None:
    cfg = write_config(tmp_path, app_db_name="hinted", migrate=["true"], extra=f"language: {language}\n")
    result = invoke("down", "-c", cfg, "-D", "postgresql://u@127.0.0.1:1/postgres")
    assert result.returncode == 2 and named in result.stderr


def test_validate_and_up_agree_on_a_typescript_app_named_by_package_json(tmp_path: Path, pg_url: str) -> None:
    (tmp_path / "package.json").write_text('{"name": "pkg-named-app"}')
    cfg = tmp_path / "dbos-config.yaml"
    cfg.write_text("language: typescript\ndatabase:\n  migrate:\n    - 'true'\n")
    assert invoke("validate", "-c", cfg).returncode == 0
    try:
        result = invoke("up", "-c", cfg, "-D", pg_url, "--system-db", "skip", "-o", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        assert one_json(result.stdout)["app_database"] == "pkg_named_app"
        assert db_exists(pg_url, "pkg_named_app")
    finally:
        query(pg_url, 'DROP DATABASE IF EXISTS "pkg_named_app" WITH (FORCE)')


def test_names_every_instance_has_are_refused_before_anything(tmp_path: Path) -> None:
    for name in ("postgres", "template1", "dbos_rehearse_billing_20250101000000_c0ffee"):
        cfg = write_config(tmp_path, app_db_name=name, migrate=["true"])
        for args in (
            ["validate", "-c", cfg],
            ["validate", "--cloud", "-c", cfg],
            ["up", "-c", cfg, "-D", "postgresql://u@127.0.0.1:1/x"],
        ):
            result = invoke(*args)
            assert result.returncode == 2 and name in result.stderr, (args, result.stderr)
