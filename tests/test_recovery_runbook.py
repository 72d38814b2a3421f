"""docs/recovery.md, run: every command of its code blocks, in order, in one shell, against a
throwaway cluster with password authentication, after a deploy that failed half-way.

The placeholders are replaced by this server's values; the password is typed on stdin;
DBOS_MIGRATE_PRODUCTION=true stands in for the cloud host (remote, so production: the guard
applies). Between the last two blocks the test "fixes the migration", as the runbook says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from helpers import query, write_config
from pgharness import PASSWORD, ClusterFactory, cli_env, run_cli

RUNBOOK = Path(__file__).resolve().parent.parent / "docs" / "recovery.md"
PLACEHOLDER_URL = "postgresql://USER:***@HOST:5432/postgres"

ADD_NOTE = "psql -v ON_ERROR_STOP=1 -qc \"ALTER TABLE orders ADD COLUMN note text; UPDATE orders SET note = 'n'\""
BROKEN = "psql -v ON_ERROR_STOP=1 -qc 'ALTER TABLE orders ADD COLUMN customer int REFERENCES customers (id)'"
FIXED = "psql -v ON_ERROR_STOP=1 -qc 'ALTER TABLE orders ADD COLUMN customer int'"
ROLLBACK = (
    "psql -v ON_ERROR_STOP=1 -qc "
    "'ALTER TABLE orders DROP COLUMN IF EXISTS customer; ALTER TABLE orders DROP COLUMN IF EXISTS note'"
)


def blocks() -> list[str]:
    return re.findall(r"```sh\n(.*?)```", RUNBOOK.read_text(), flags=re.DOTALL)


def columns(url: str) -> list[str]:
    rows = query(
        url,
        "SELECT attname FROM pg_catalog.pg_attribute WHERE attrelid = 'public.orders'::regclass "
        "AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        dbname="shop",
    )
    return [r[0] for r in rows]


def test_the_recovery_runbook_runs_from_a_failed_deploy_to_a_verified_rollback(
    tmp_path: Path, own_cluster: ClusterFactory
) -> None:
    cluster = own_cluster()
    admin = cluster.url()
    query(admin, "CREATE DATABASE shop")
    query(
        admin,
        "CREATE TABLE orders (id int PRIMARY KEY, total int); INSERT INTO orders VALUES (1, 5), (2, 7), (3, 9)",
        dbname="shop",
    )
    url = f"postgresql://postgres:***@localhost:{cluster.port}/postgres"
    env: dict[str, str | None] = {
        "HOME": str(tmp_path),
        "PGPASSWORD": None,
        "PGSERVICE": None,
        "PGPASSFILE": None,
        "DBOS_MIGRATE_PRODUCTION": "true",
        "NO_COLOR": "1",
    }
    env["PATH"] = f"{Path(sys.executable).parent}:{cli_env()['PATH']}"  # dbos-migrate, as installed
    app = tmp_path / "app"
    write_config(app, app_db_name="shop", migrate=[ADD_NOTE, BROKEN], rollback=[ROLLBACK])
    write_config(tmp_path / "fixed", app_db_name="shop", migrate=[ADD_NOTE, FIXED], rollback=[ROLLBACK])

    deploy = run_cli(
        "up",
        "-c",
        app / "dbos-config.yaml",
        "--db-url",
        url,
        "--system-db",
        "skip",
        env={**env, "PGPASSWORD": PASSWORD},
    )
    assert deploy.returncode == 1, deploy.stdout + deploy.stderr
    assert columns(admin) == ["id", "total", "note"]  # half-migrated

    found = blocks()
    assert len(found) == 6, "the test knows six blocks: update it with the runbook"
    script = ["set -e"]
    for number, block in enumerate(found, 1):
        if number == 6:  # "fix the migration": the test's own step, not the runbook's
            script.append(f"cp {tmp_path / 'fixed' / 'dbos-config.yaml'} dbos-config.yaml")
        script.append(f"echo '@@ block {number}'")
        script.append(block.replace(PLACEHOLDER_URL, url).replace("APP_DB_NAME", "shop"))
    script.append("echo '@@ end'")
    done = subprocess.run(
        ["bash", "-c", "\n".join(script)],
        cwd=app,
        env=cli_env(env),
        input=PASSWORD + "\n",
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 0 and "@@ end" in done.stdout, out
    assert PASSWORD not in out
    parts = dict(re.findall(r"@@ block (\d)\n(.*?)(?=@@ )", done.stdout, flags=re.DOTALL))

    assert "last run        failed: up" in parts["2"] and "exit 1 at " in parts["2"]
    assert f"next            dbos-migrate down -c dbos-config.yaml --db-url '{url}'" in parts["2"]
    assert "drops public.orders.note: 3 non-NULL values" in parts["3"]
    assert "dry run: the rollback was rehearsed" in parts["3"]
    assert "drops public.orders.note: 3 non-NULL values" in parts["4"]
    assert "last run        succeeded: down" in parts["5"]
    assert "rollback: restores the schema" in parts["6"]
    assert columns(admin) == ["id", "total", "note", "customer"]  # the fixed deploy applied
    assert query(admin, "SELECT count(*) FROM orders", dbname="shop") == [(3,)]
