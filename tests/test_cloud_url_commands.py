"""The `dbos-cloud db url` recovery path with real commands (docs/recovery.md): the URL is
`postgresql://postgres:***@localhost:PORT/postgres`, the password is found in PGPASSWORD, a
password file, a service file or typed at the prompt, and the commands, which connect only
through `$DBOS_DATABASE_URL` (psql, alembic on SQLAlchemy 2.x, knex), must authenticate.

Every command runs with the libpq password variables removed, so only the URL can carry
the password. The server is a throwaway cluster with scram password authentication.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import query, write_config
from pgharness import PASSWORD, Cluster, reachable_tmpdir, run_cli, run_on_tty, start_cluster

REPO = Path(__file__).resolve().parent.parent

#: What a command sees of libpq's password sources: nothing; the URL alone must do.
ONLY_URL = "env -u PGPASSWORD -u PGPASSFILE -u PGSERVICEFILE -u PGSERVICE"

KNEX = (
    "const k = require('knex')({client: 'pg', connection: process.env.DBOS_DATABASE_URL});"
    "k.raw('CREATE TABLE from_knex (x int)').then(() => k.destroy())"
    ".catch((e) => { console.error('knex: ' + e.message); process.exit(1); });"
)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    base = reachable_tmpdir("dbos-migrate-cloudurl-")
    try:
        started = start_cluster(base)
        try:
            yield started
        finally:
            started.remove()
    finally:
        shutil.rmtree(base, ignore_errors=True)


def masked(port: int) -> str:
    return f"postgresql://postgres:***@localhost:{port}/postgres"


def source_env(source: str, tmp_path: Path, port: int) -> dict[str, str | None]:
    """The environment in which `source` is the only place the password is."""
    home = tmp_path / "home"
    home.mkdir(exist_ok=True)
    env: dict[str, str | None] = {
        "HOME": str(home),
        "PGPASSWORD": None,
        "PGSERVICE": None,
        "PGPASSFILE": None,
        "PGSERVICEFILE": None,
        "NO_COLOR": "1",
    }
    if source == "PGPASSWORD":
        env["PGPASSWORD"] = PASSWORD
    elif source == "PGPASSFILE":
        passfile = tmp_path / "passfile"
        escaped = PASSWORD.replace("\\", "\\\\").replace(":", "\\:")
        passfile.write_text(f"localhost:{port}:*:postgres:{escaped}\n")
        passfile.chmod(0o600)
        env["PGPASSFILE"] = str(passfile)
    elif source == "PGSERVICEFILE":
        services = tmp_path / "services.conf"
        services.write_text(f"[shop]\npassword={PASSWORD}\n")
        env.update(PGSERVICEFILE=str(services), PGSERVICE="shop")
    return env


def alembic_app(tmp_path: Path, app_db: str, extra_commands: list[str]) -> Path:
    """A copy of sample_app/ whose config runs psql and alembic through the URL alone."""
    app = tmp_path / "app"
    shutil.copytree(REPO / "sample_app", app, ignore=shutil.ignore_patterns("__pycache__"))
    return write_config(
        app,
        app_db_name=app_db,
        extra="env:\n  MY_URL: ${DBOS_DATABASE_URL}\n",
        migrate=[
            f"{ONLY_URL} psql \"$DBOS_DATABASE_URL\" -v ON_ERROR_STOP=1 -qc 'CREATE TABLE from_psql (x int)'",
            f"{ONLY_URL} psql \"$MY_URL\" -v ON_ERROR_STOP=1 -qc 'CREATE TABLE from_env_entry (x int)'",
            f"{ONLY_URL} psql \"$DBOS_SYSTEM_DATABASE_URL\" -v ON_ERROR_STOP=1 -qAtc 'SELECT current_database()' "
            f"> {tmp_path / 'sysdb'}",
            f"{ONLY_URL} {sys.executable} -m alembic upgrade head",
            *extra_commands,
        ],
    )


def tables(cluster: Cluster, app_db: str) -> set[str]:
    rows = query(cluster.url(), "SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname = 'public'", dbname=app_db)
    return {r[0] for r in rows}


@pytest.mark.parametrize("source", ["PGPASSWORD", "PGPASSFILE", "PGSERVICEFILE"])
def test_psql_and_alembic_authenticate_through_the_url_alone(source: str, tmp_path: Path, cluster: Cluster) -> None:
    app_db = f"shop_{uuid.uuid4().hex[:8]}"
    cfg = alembic_app(tmp_path, app_db, [])
    result = run_cli(
        "up",
        "-c",
        cfg,
        "-D",
        masked(cluster.port),
        "--system-db",
        "create",
        env=source_env(source, tmp_path, cluster.port),
    )
    out = result.stdout + result.stderr
    assert result.returncode == 0, out
    assert {"from_psql", "from_env_entry", "alembic_version", "customers", "orders"} <= tables(cluster, app_db)
    assert (tmp_path / "sysdb").read_text().strip() == f"{app_db}_dbos_sys"
    assert PASSWORD not in out and "p%40ss" not in out


@pytest.mark.parametrize("source", ["PGPASSWORD", "PGPASSFILE", "PGSERVICEFILE"])
def test_knex_authenticates_through_the_url_alone(source: str, tmp_path: Path, cluster: Cluster, knex_pg: Path) -> None:
    app_db = f"shop_{uuid.uuid4().hex[:8]}"
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[f'{ONLY_URL} node -e "{KNEX}"'])
    env = source_env(source, tmp_path, cluster.port)
    env["NODE_PATH"] = str(knex_pg / "node_modules")
    result = run_cli("up", "-c", cfg, "-D", masked(cluster.port), "--system-db", "skip", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    assert tables(cluster, app_db) == {"from_knex"}


def test_a_password_typed_at_the_prompt_reaches_the_url_too(tmp_path: Path, cluster: Cluster, knex_pg: Path) -> None:
    app_db = f"shop_{uuid.uuid4().hex[:8]}"
    cfg = alembic_app(tmp_path, app_db, [f'{ONLY_URL} node -e "{KNEX}"'])
    env = source_env("prompt", tmp_path, cluster.port)
    env["NODE_PATH"] = str(knex_pg / "node_modules")
    code, text = run_on_tty(
        ["up", "-c", cfg, "-D", masked(cluster.port), "--system-db", "create"],
        prompt=b"(the URL shows ***): ",
        answer=PASSWORD,
        env=env,
    )
    assert code == 0, text
    assert {"from_psql", "from_env_entry", "alembic_version", "orders", "from_knex"} <= tables(cluster, app_db)
    assert PASSWORD not in text
