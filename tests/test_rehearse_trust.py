"""What a rehearsal's commands can reach, and what its data checks evaluate, against a real
PostgreSQL (docs/security.md, "What a rehearsal's commands can reach" and "What data checks
reveal").

The commands of `plan --rehearse` run a change under review: they get a temporary role that
owns the scratch database only, and an environment built from an allow-list. The data checks
evaluate only built-in immutable expressions, as a role that can only read; an unknown check
is never a silent pass.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import one_json, query, write_config
from pgharness import ClusterFactory, invoke, with_dbname, with_user
from psycopg import sql
from test_rehearse import CONCURRENT_MIGRATE, app_config, make_app, valid_output

from dbos_migrate.rehearse import scratch

#: The deploy role's password in the URL (the server trusts 127.0.0.1, so any password logs in):
#: quotes, a percent sign and a colon, so that every spelling the scrubber knows differs.
REAL_PASSWORD = "Pr0d'pa:ss%w\"d"

SECRETS_SCHEMA = """
CREATE TABLE secrets (id int PRIMARY KEY, api_key text NOT NULL);
INSERT INTO secrets VALUES (1, 'sk_live_Q1234');
CREATE TABLE orders (id int PRIMARY KEY, total int);
INSERT INTO orders VALUES (1, 10), (2, 20);
"""

# Before migrating the scratch copy, each command tries the real app database with the
# environment it was given, records what the scratch database says about its own role, and
# dumps its environment (JSON, so that any byte survives).
PROBE = (
    "psql -X -v ON_ERROR_STOP=1 -d {app} -c 'SELECT api_key FROM public.secrets' > read.out 2>&1; "
    'echo "exit=$?" >> read.out; '
    "psql -X -v ON_ERROR_STOP=1 -d {app} -c 'CREATE TABLE public.pwned (x int)' > write.out 2>&1; "
    'echo "exit=$?" >> write.out; '
    'psql -X -At -v ON_ERROR_STOP=1 -c "SELECT r.rolsuper, r.rolcreatedb, r.rolcreaterole, r.rolinherit, '
    "(SELECT count(*) FROM pg_auth_members m WHERE m.member = r.oid), "
    "(SELECT count(*) FROM pg_class c WHERE c.oid >= 16384 AND c.relkind IN ('r','v','S') "
    "AND c.relowner <> r.oid AND c.relnamespace = 'public'::regnamespace), current_user "
    'FROM pg_roles r WHERE r.rolname = current_user" > role.out 2>&1; '
    "python3 -c 'import json, os; print(json.dumps(dict(os.environ)))' > env.json; "
    "psql -X -q -v ON_ERROR_STOP=1 -f step.sql"
)


def real_url(pg_url: str) -> str:
    return with_user(pg_url, "postgres", REAL_PASSWORD)


def role_exists(pg_url: str, name: str) -> bool:
    return bool(query(pg_url, "SELECT 1 FROM pg_roles WHERE rolname = %s", (name,)))


def test_commands_cannot_reach_the_real_database(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """A rehearsal's command that tries `psql -d <real app db>` with its environment is refused
    (it is the temporary role there: no SELECT, no CREATE); in the scratch database that role
    owns the copied tables, is no superuser and a member of no role, and it is gone afterwards.
    Its environment holds no real password in any spelling, no DBOS_MIGRATE_DB_URL, no
    DATABASE_URL, and nothing outside the allow-list and the config's env:."""
    make_app(pg_url, app_db, SECRETS_SCHEMA)
    (tmp_path / "step.sql").write_text("ALTER TABLE orders ADD COLUMN note text; CREATE TABLE fresh (id int);")
    extra = "env:\n  LEAKED: ${SOME_TOKEN}\n  APP_URL: ${DBOS_DATABASE_URL}\n  FLAVOUR: plain\n"
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[PROBE.format(app=app_db)], extra=extra)
    url = real_url(pg_url)
    env = {
        "DBOS_MIGRATE_DB_URL": url,  # how the GitHub Action passes the production URL
        "DATABASE_URL": with_dbname(url, app_db),
        "DBOS_DATABASE_URL": with_dbname(url, app_db),
        "PGPASSWORD": REAL_PASSWORD,
        "SOME_TOKEN": f"x-{REAL_PASSWORD}-y",
        "QUOTED_TOKEN": json.dumps(REAL_PASSWORD),
        "UNRELATED": "not on the allow-list",
    }
    result = invoke("plan", "--rehearse", "-c", cfg, "-o", "json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    read = (tmp_path / "read.out").read_text()
    assert "permission denied for table secrets" in read and "exit=1" in read and "sk_live" not in read
    write = (tmp_path / "write.out").read_text()
    assert "permission denied for schema public" in write and "exit=1" in write
    assert query(pg_url, "SELECT to_regclass('public.pwned')", dbname=app_db) == [(None,)]

    doc = valid_output(one_json(result.stdout))
    creds = doc["rehearsal"]["credentials"]
    assert creds["mode"] == "temporary-role" and creds["role"] == doc["rehearsal"]["scratch_database"]
    # the temporary role altered a copied table and created one in the public schema
    assert sorted(c["rule"] for c in doc["changes"]) == ["SAFE001", "SAFE002"]

    superuser, createdb, createrole, inherit, memberships, not_owned, user = (
        (tmp_path / "role.out").read_text().strip().split("|")
    )
    assert (superuser, createdb, createrole, inherit) == ("f", "f", "f", "f")
    assert memberships == "0" and not_owned == "0" and user == creds["role"]
    assert not role_exists(pg_url, creds["role"])  # dropped after the scratch database

    seen: dict[str, str] = json.loads((tmp_path / "env.json").read_text())
    dump = json.dumps(seen)
    for spelling in (REAL_PASSWORD, json.dumps(REAL_PASSWORD)[1:-1], "Pr0d%27pa%3Ass%25w%22d", "Pr0d"):
        assert spelling not in dump, spelling
    for name in ("DBOS_MIGRATE_DB_URL", "DATABASE_URL", "SOME_TOKEN", "QUOTED_TOKEN", "UNRELATED", "LEAKED"):
        assert name not in seen, name
    assert not [k for k in seen if k.startswith("DBOS_MIGRATE_")]
    assert seen["PGUSER"] == creds["role"] and seen["PGDATABASE"] == creds["role"]
    assert seen["DBOS_DATABASE_URL"] == seen["APP_URL"] and f"/{creds['role']}" in seen["APP_URL"]
    assert seen["FLAVOUR"] == "plain" and "PATH" in seen


@pytest.fixture
def deployer(pg_url: str, app_db: str) -> Iterator[str]:
    """A login role that may create databases but not roles, owner of the app database."""
    role = f"t_{uuid.uuid4().hex[:10]}_deploy"
    query(
        pg_url,
        sql.SQL("CREATE ROLE {} LOGIN CREATEDB PASSWORD 'deploy-pw'").format(sql.Identifier(role)).as_string(None),
    )
    try:
        yield role
    finally:
        with contextlib.suppress(psycopg.Error):
            query(pg_url, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)).as_string(None), dbname=app_db)
        for (name,) in query(pg_url, "SELECT datname FROM pg_database WHERE datdba = %s::regrole", (role,)):
            query(pg_url, sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)).as_string(None))
        query(pg_url, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)).as_string(None))


def test_role_that_may_not_create_roles_is_refused(tmp_path: Path, pg_url: str, app_db: str, deployer: str) -> None:
    """No CREATEROLE: a clear refusal naming --rehearse-url, nothing created; with
    --rehearse-shared-credentials the rehearsal runs with the deploy role's credentials; with
    CREATEROLE (and no superuser) it runs with a temporary role."""
    make_app(pg_url, app_db, "CREATE TABLE t (id int)")
    query(
        pg_url,
        sql.SQL("ALTER DATABASE {} OWNER TO {}")
        .format(sql.Identifier(app_db), sql.Identifier(deployer))
        .as_string(None),
    )
    query(pg_url, sql.SQL("ALTER TABLE t OWNER TO {}").format(sql.Identifier(deployer)).as_string(None), dbname=app_db)
    cfg = app_config(tmp_path, app_db, "ALTER TABLE t ADD COLUMN note text;", CONCURRENT_MIGRATE)
    url = with_user(pg_url, deployer, "deploy-pw")
    refused = invoke("plan", "--rehearse", "-c", cfg, "-D", url, env={"DBOS_MIGRATE_REHEARSE_COPY": "catalog"})
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "may not create roles" in refused.stderr and "--rehearse-url" in refused.stderr
    assert "--rehearse-shared-credentials" in refused.stderr
    shared = invoke(
        "plan",
        "--rehearse",
        "--rehearse-shared-credentials",
        "-c",
        cfg,
        "-D",
        url,
        "-o",
        "json",
        env={"DBOS_MIGRATE_REHEARSE_COPY": "catalog"},
    )
    assert shared.returncode == 0, shared.stdout + shared.stderr
    doc = one_json(shared.stdout)
    assert doc["rehearsal"]["credentials"]["mode"] == "shared"
    assert [c["rule"] for c in doc["changes"]] == ["SAFE002"]

    # Granted CREATEROLE (no superuser), it makes the temporary role, hands it the copy and drops it.
    query(pg_url, sql.SQL("ALTER ROLE {} CREATEROLE").format(sql.Identifier(deployer)).as_string(None))
    own = invoke("plan", "--rehearse", "-c", cfg, "-D", url, "-o", "json")
    assert own.returncode == 0, own.stdout + own.stderr
    doc = one_json(own.stdout)
    creds = doc["rehearsal"]["credentials"]
    assert creds["mode"] == "temporary-role" and [c["rule"] for c in doc["changes"]] == ["SAFE002"]
    assert not role_exists(pg_url, creds["role"]) and doc["rehearsal"]["dropped"]


def test_leftover_role_is_dropped(tmp_path: Path, app_db: str, own_cluster: ClusterFactory) -> None:
    """A killed rehearsal's temporary role (marked, scratch shape, no lock held, no database of
    its name) is dropped by the next rehearsal; an unmarked role of the same shape is not."""
    from dbos_migrate.rehearse.sandbox import ROLE_MARK

    pg_url = own_cluster().url(dbname="postgres")  # its leftovers are fair game to any rehearsal on the instance
    left = scratch.scratch_name(app_db)
    unmarked = scratch.scratch_name(app_db)
    for name in (left, unmarked):
        query(pg_url, sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(name)).as_string(None))
    query(
        pg_url, sql.SQL("COMMENT ON ROLE {} IS {}").format(sql.Identifier(left), sql.Literal(ROLE_MARK)).as_string(None)
    )
    try:
        make_app(pg_url, app_db, "CREATE TABLE t (id int)")
        cfg = app_config(tmp_path, app_db, "ALTER TABLE t ADD COLUMN note text;", CONCURRENT_MIGRATE)
        result = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url, "-o", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        assert f"role {left}" in one_json(result.stdout)["rehearsal"]["leftovers_removed"]
        assert not role_exists(pg_url, left) and role_exists(pg_url, unmarked)
    finally:
        for name in (left, unmarked):
            query(pg_url, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)).as_string(None))


# ---------------------------------------------------------------------------- data checks


def test_volatile_check_is_not_evaluated_on_the_app_database(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """A CHECK calling pg_terminate_backend (built in, volatile) or a user-defined function is
    "unknown" with the reason, and never runs on the app database: the session it names
    survives; a built-in immutable CHECK is evaluated."""
    make_app(
        pg_url,
        app_db,
        SECRETS_SCHEMA + "CREATE FUNCTION public.is_q(t text) RETURNS boolean IMMUTABLE "
        "LANGUAGE sql AS $$ SELECT t LIKE 'sk_live_Q%' $$;",
    )
    with psycopg.connect(with_dbname(pg_url, app_db), autocommit=True) as victim:
        pid = victim.info.backend_pid
        step = (
            f"ALTER TABLE orders ADD CONSTRAINT kill CHECK (pg_terminate_backend({pid}) OR total > 0);\n"
            "ALTER TABLE secrets ADD CONSTRAINT leak CHECK (NOT public.is_q(api_key));\n"
            "ALTER TABLE orders ADD CONSTRAINT small CHECK (total < 15);\n"
        )
        cfg = app_config(tmp_path, app_db, step, CONCURRENT_MIGRATE)
        result = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url, "-o", "json")
        assert result.returncode == 0, result.stdout + result.stderr
        assert victim.execute("SELECT 1").fetchone() == (1,)  # not terminated
    doc = valid_output(one_json(result.stdout))
    found = {c["object"]: next(f for f in c["data_checks"] if f["check"] == "check") for c in doc["changes"]}
    kill, leak, small = found["public.orders.kill"], found["public.secrets.leak"], found["public.orders.small"]
    assert kill["status"] == "unknown" and "pg_catalog.pg_terminate_backend" in kill["reason"]
    assert "not a built-in immutable function" in kill["reason"] and kill["examined_rows"] is None
    assert leak["status"] == "unknown" and "public.is_q" in leak["reason"] and leak["violating_rows"] is None
    assert (small["rule"], small["violating_rows"]) == ("DATA004", 1)
    assert doc["rehearsal"]["data_checks"]["role"] == "pg_read_all_data"


def test_data_checks_run_as_a_read_only_role(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """The checks run as pg_read_all_data, not as the deploy role: a table with row-level security
    (which the superuser deploy role would read in full) is unknown, not a pass."""
    make_app(pg_url, app_db, SECRETS_SCHEMA + "ALTER TABLE orders ENABLE ROW LEVEL SECURITY;")
    cfg = app_config(
        tmp_path, app_db, "ALTER TABLE orders ADD CONSTRAINT small CHECK (total < 100);", CONCURRENT_MIGRATE
    )
    result = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url, "-o", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = valid_output(one_json(result.stdout))
    check = next(f for f in doc["changes"][0]["data_checks"] if f["check"] == "check")
    assert check["status"] == "unknown" and "row-level security" in check["reason"], check


def test_strict_refuses_an_unknown_data_check(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """--strict refuses (exit 6) on an unknown data check even with no breaking change, and the
    text says how many checks were unknown and why; without --strict it passes and says so."""
    make_app(pg_url, app_db, SECRETS_SCHEMA)
    cfg = app_config(tmp_path, app_db, "ALTER TABLE orders ADD CONSTRAINT r CHECK (random() < 2);", CONCURRENT_MIGRATE)
    loose = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url)
    assert loose.returncode == 0, loose.stdout + loose.stderr
    assert "1 data check(s) unknown: its expression calls pg_catalog.random" in loose.stdout
    strict = invoke("plan", "--rehearse", "--strict", "-c", cfg, "-D", pg_url, "-o", "json")
    assert strict.returncode == 6, strict.stdout + strict.stderr
    verdict = one_json(strict.stdout)["rehearsal"]["verdict"]
    assert verdict["refuse"] and verdict["reasons"] == ["data-unknown"]
    assert "1 data check(s) unknown" in verdict["message"] and "--strict refuses" in verdict["message"]


def test_rehearse_url_environment_is_allow_listed(tmp_path: Path) -> None:
    """With --rehearse-url the commands get that instance's credentials and the allow-list:
    no DBOS_MIGRATE_DB_URL, DATABASE_URL, PG* of the real target, nor any value carrying the
    real password (percent-encoded or JSON-quoted), even through an env: entry."""
    from dbos_migrate.engine.scrub import Scrubber
    from dbos_migrate.rehearse import sandbox
    from dbos_migrate.settings import config
    from dbos_migrate.settings.conninfo import parse_url
    from dbos_migrate.settings.target import Endpoint, SystemDatabase, effective, resolve

    real_text = "postgresql://deploy:" + "Pr0d%27pa%3Ass%25w%22d" + "@prod.example.com/app"
    text = "name: my-app\nenv:\n  COPY: ${SOME_TOKEN}\n  MINE: ${DBOS_DATABASE_URL}\n  PASSED: ${FORWARD_ME}\n"
    c = config.from_text(text, tmp_path / "dbos-config.yaml", {}, "dbos-config.yaml")
    real = resolve(c, db_url=real_text, environ={})
    other = parse_url("postgresql://ci:throwaway@localhost:5433/postgres", what="--rehearse-url")
    instance = Endpoint(other, effective(other, {}))
    name = scratch.scratch_name("app")
    scratch_target = dataclasses.replace(
        real, instance=instance, app_database=name, system=SystemDatabase("the scratch database", instance.at(name))
    )
    box = sandbox.prepare(scratch_target, rehearse_url=True, shared=False)
    environ = {
        "PATH": "/usr/bin",
        "HOME": "/home/ci",
        "LC_ALL": "C.UTF-8",
        "DBOS_MIGRATE_DB_URL": real_text,
        "DATABASE_URL": real_text,
        "PGPASSWORD": REAL_PASSWORD,
        "PGHOST": "prod.example.com",
        "SOME_TOKEN": json.dumps(REAL_PASSWORD),
        "FORWARD_ME": "fine",
        "AWS_SECRET_ACCESS_KEY": "nope",
    }
    env, skipped, dropped = sandbox.environment(box, environ, c, Scrubber(real.secrets), [real.app_url.text])
    assert env["PGHOST"] == "localhost" and env["PGUSER"] == "ci" and env["PGPASSWORD"] == "throwaway"
    assert env["MINE"] == env["DBOS_DATABASE_URL"] and env["DBOS_DATABASE_URL"].endswith(f"/{name}")
    assert env["PASSED"] == "fine" and env["PATH"] == "/usr/bin" and env["LC_ALL"] == "C.UTF-8"
    for key in ("DBOS_MIGRATE_DB_URL", "DATABASE_URL", "AWS_SECRET_ACCESS_KEY", "COPY", "SOME_TOKEN"):
        assert key not in env, key
    assert [p.path for p in skipped] == ["env.COPY"] and dropped == []
    dump = json.dumps(env)
    assert REAL_PASSWORD not in dump and "Pr0d" not in dump and "prod.example.com" not in dump
