"""`plan --rehearse` and `up --fail-on-breaking` against a real PostgreSQL, the CLI run as a subprocess.

Every rule of dbos_migrate.rules.RULES has a case below: the migration is rehearsed
(`plan --rehearse -o json` must report the rule), then gated (`up --fail-on-breaking`):
breaking cases are refused with exit 6 and the real database is left exactly as it was;
the others pass the gate and are applied. No scratch database may survive any run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import db_exists, history_rows, one_json, query, write_config
from pgharness import ClusterFactory, cli_command, drop_database, invoke, skip_or_fail, with_dbname
from psycopg import sql

from dbos_migrate.rehearse import catalog, diff, rules, scratch
from dbos_migrate.rehearse import copy as schema_copy

BASE_SCHEMA = """
CREATE TYPE status AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE customers (
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    email text NOT NULL CONSTRAINT customers_email_key UNIQUE,
    name varchar(50)
);
CREATE TABLE orders (
    id serial PRIMARY KEY,
    customer_id bigint CONSTRAINT orders_customer_fk REFERENCES customers (id),
    total numeric(10, 2),
    qty integer NOT NULL DEFAULT 1,
    note text,
    state status NOT NULL DEFAULT 'new',
    CONSTRAINT orders_qty_positive CHECK (qty > 0)
);
CREATE INDEX orders_customer_idx ON orders (customer_id);
CREATE TABLE audit (id bigserial PRIMARY KEY, msg text);
CREATE VIEW order_totals AS SELECT customer_id, sum(total) AS total FROM orders GROUP BY customer_id;
CREATE FUNCTION order_count(c bigint) RETURNS bigint LANGUAGE sql
    AS $$ SELECT count(*) FROM orders WHERE customer_id = c $$;
CREATE TABLE schema_migrations (version text PRIMARY KEY);
INSERT INTO schema_migrations VALUES ('001');
INSERT INTO customers (email) VALUES ('a@example.com');
INSERT INTO orders (customer_id, total) VALUES (1, 10);
"""

# A migration "tool" in the style of dbmate/golang-migrate: it applies step.sql only when
# schema_migrations says version 002 is not there yet, so it relies on the copied rows.
MIGRATE = (
    "v=$(psql -X -At -c \"SELECT count(*) FROM schema_migrations WHERE version = '002'\") && "
    'if [ "$v" = 0 ]; then psql -X -q -v ON_ERROR_STOP=1 -1 -f step.sql && '
    "psql -X -q -c \"INSERT INTO schema_migrations VALUES ('002')\"; fi"
)
CONCURRENT_MIGRATE = "psql -X -q -v ON_ERROR_STOP=1 -f step.sql"  # no -1: CONCURRENTLY needs autocommit


def make_app(pg_url: str, name: str, schema: str = BASE_SCHEMA) -> None:
    query(pg_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)).as_string(None))
    with psycopg.connect(with_dbname(pg_url, name), autocommit=True) as conn:
        conn.execute(schema.encode())


def app_config(directory: Path, app_db: str, step: str, command: str = MIGRATE) -> Path:
    (directory / "step.sql").write_text(step)
    return write_config(directory, app_db_name=app_db, migrate=[command])


def fingerprint(pg_url: str, app_db: str) -> dict[str, Any]:
    """The real database's schema (catalog.snapshot without OIDs) and version rows."""
    with psycopg.connect(with_dbname(pg_url, app_db), autocommit=True) as conn:
        shape: dict[str, Any] = catalog.snapshot(conn).shape()
        shape["versions"] = conn.execute("SELECT version FROM public.schema_migrations ORDER BY 1").fetchall()
        shape["history"] = conn.execute("SELECT to_regclass('dbos_migrate.history') IS NOT NULL").fetchone()
        return shape


def scratch_databases(pg_url: str, app_db: str = "") -> list[str]:
    rows = query(pg_url, "SELECT datname FROM pg_database WHERE starts_with(datname, 'dbos_rehearse_') ORDER BY 1")
    return [name for (name,) in rows if name.startswith(scratch.SCRATCH_PREFIX + app_db)]


OUTPUT_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "output.schema.json"


def valid_output(doc: dict[str, Any]) -> dict[str, Any]:
    """The document matches the shipped output schema (changes[] items included)."""
    import json

    import jsonschema

    schema = json.loads(OUTPUT_SCHEMA.read_text())
    run = {"$ref": "#/$defs/run", "$defs": schema["$defs"]}  # the run branch: rehearsal and changes[] checked
    jsonschema.Draft202012Validator(run).validate(doc)
    return doc


def expected_copy_method(pg_url: str) -> str:
    """What `plan --rehearse` must report copying with: pg_dump when one as new as the server is
    found (as the product looks for it), the catalog copy only when none is."""
    ((version,),) = query(pg_url, "SHOW server_version_num")
    dump = schema_copy.find_pg_dump(int(version) // 10000, os.environ)
    return "catalog" if dump is None else f"pg_dump {dump.version} ({dump.path})"


def rules_of(doc: dict[str, Any]) -> list[str]:
    return [c["rule"] for c in doc["changes"]]


def rehearse_json(cfg: Path, pg_url: str, *args: object, env: dict[str, str | None] | None = None) -> dict[str, Any]:
    result = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url, "-o", "json", *args, env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    return valid_output(one_json(result.stdout))


@pytest.fixture(autouse=True)
def _no_scratch_left(request: pytest.FixtureRequest) -> Iterator[None]:
    """Every test that uses the server ends with no new scratch database (of its app) left on it."""
    if "pg_url" not in request.fixturenames:
        yield
        return
    pg_url: str = request.getfixturevalue("pg_url")
    app = request.getfixturevalue("app_db") if "app_db" in request.fixturenames else ""
    before = set(scratch_databases(pg_url, app))
    yield
    left = set(scratch_databases(pg_url, app)) - before
    for name in left:
        drop_database(pg_url, name)
    assert not left, f"scratch databases left behind: {sorted(left)}"


# ---------------------------------------------------------------------------- one case per rule

BREAKING_CASES = {
    "BRK001": "DROP TABLE audit",
    "BRK002": "ALTER TABLE orders DROP COLUMN note",
    "BRK003": "ALTER TABLE audit RENAME TO audit_log",
    "BRK003-recreated": "DROP TABLE audit; CREATE TABLE audit_log (id bigserial PRIMARY KEY, msg text)",
    "BRK004": "ALTER TABLE orders RENAME COLUMN note TO remark",
    "BRK004-drop-add": "ALTER TABLE orders DROP COLUMN note, ADD COLUMN remark text",
    "BRK005": "ALTER TABLE orders ALTER COLUMN qty TYPE bigint",
    "BRK006": "ALTER TABLE orders ALTER COLUMN total SET NOT NULL",
    "BRK007": "ALTER TABLE orders ADD COLUMN sku text NOT NULL",
    "BRK008": """
        ALTER TYPE status RENAME TO status_old;
        CREATE TYPE status AS ENUM ('new', 'paid');
        ALTER TABLE orders ALTER COLUMN state DROP DEFAULT,
            ALTER COLUMN state TYPE status USING state::text::status,
            ALTER COLUMN state SET DEFAULT 'new';
        DROP TYPE status_old;
    """,
    "BRK009": "DROP VIEW order_totals",
    "BRK010": "DROP FUNCTION order_count(bigint)",
    "BRK010-signature": """
        DROP FUNCTION order_count(bigint);
        CREATE FUNCTION order_count(c bigint, s status) RETURNS bigint LANGUAGE sql
            AS $$ SELECT count(*) FROM orders WHERE customer_id = c AND state = s $$;
    """,
    "BRK011": "ALTER TABLE customers DROP CONSTRAINT customers_email_key",
    "BRK011-fk": "ALTER TABLE orders DROP CONSTRAINT orders_customer_fk",
    "BRK012": "ALTER TABLE orders ALTER COLUMN qty DROP DEFAULT",
}


@pytest.mark.parametrize("case", sorted(BREAKING_CASES))
def test_breaking_rule_is_reported_and_refused(case: str, tmp_path: Path, pg_url: str, app_db: str) -> None:
    rule = case.split("-")[0]
    make_app(pg_url, app_db)
    cfg = app_config(tmp_path, app_db, BREAKING_CASES[case])
    original = fingerprint(pg_url, app_db)

    doc = rehearse_json(cfg, pg_url)
    assert rule in rules_of(doc), doc["changes"]
    change = next(c for c in doc["changes"] if c["rule"] == rule)
    assert change["severity"] == "breaking" and change["hint"] and change["detail"] and change["object"]
    assert doc["rehearsal"]["version_tables"] == ["public.schema_migrations"]
    assert doc["rehearsal"]["dropped"] is True and doc["rehearsal"]["copy_warnings"] == []
    assert doc["rehearsal"]["copy_method"] == expected_copy_method(pg_url)  # no silent fallback from pg_dump

    gated = invoke("up", "--fail-on-breaking", "-c", cfg, "-D", pg_url, "-o", "json")
    assert gated.returncode == 6, gated.stderr
    refused = valid_output(one_json(gated.stdout))
    assert refused["error"]["code"] == "breaking_change" and rule in refused["error"]["message"]
    assert refused["commands"] == [] and rule in rules_of(refused)
    assert fingerprint(pg_url, app_db) == original  # nothing ran, no history was even created
    assert scratch_databases(pg_url, app_db) == []


SAFE_CASES: dict[str, tuple[str, str, list[str]]] = {
    # case: (step.sql, command, rules that must be reported)
    "LCK001": ("CREATE INDEX orders_total_idx ON orders (total)", MIGRATE, ["LCK001"]),
    "LCK002": (
        "ALTER TABLE audit ADD COLUMN token uuid DEFAULT gen_random_uuid()",
        MIGRATE,
        ["LCK002", "SAFE002"],
    ),
    "LCK003": (
        "ALTER TABLE orders ADD CONSTRAINT orders_total_check CHECK (total >= 0)",
        MIGRATE,
        ["LCK003"],
    ),
    "LCK003-unique": ("ALTER TABLE audit ADD CONSTRAINT audit_msg_key UNIQUE (msg)", MIGRATE, ["LCK003"]),
    "SAFE001": (
        "CREATE TABLE invoices (id serial PRIMARY KEY, order_id int REFERENCES orders (id));"
        "CREATE INDEX invoices_order ON invoices (order_id)",
        MIGRATE,
        ["SAFE001", "SAFE003"],
    ),
    "SAFE002": (
        "ALTER TABLE orders ADD COLUMN coupon text, ADD COLUMN priority int NOT NULL DEFAULT 0",
        MIGRATE,
        ["SAFE002", "SAFE002"],
    ),
    "SAFE003": (
        "CREATE INDEX CONCURRENTLY orders_total_idx ON orders (total)",
        CONCURRENT_MIGRATE,
        ["SAFE003"],
    ),
    "SAFE004": ("ALTER TABLE customers ALTER COLUMN name TYPE varchar(100)", MIGRATE, ["SAFE004"]),
    "SAFE005": ("ALTER TYPE status ADD VALUE 'refunded'", CONCURRENT_MIGRATE, ["SAFE005"]),
    "SAFE006": (
        "CREATE VIEW big_orders AS SELECT id, total FROM orders WHERE total > 100",
        MIGRATE,
        ["SAFE006"],
    ),
    "SAFE007": (
        "CREATE OR REPLACE FUNCTION order_count(c bigint) RETURNS bigint LANGUAGE sql "
        "AS $$ SELECT count(*) FROM orders WHERE customer_id = c AND state <> 'new' $$",
        MIGRATE,
        ["SAFE007"],
    ),
    "SAFE008": (
        "ALTER TABLE orders DROP CONSTRAINT orders_qty_positive, ALTER COLUMN qty DROP NOT NULL;"
        "DROP INDEX orders_customer_idx",
        MIGRATE,
        ["SAFE008", "SAFE008", "SAFE008"],
    ),
    "SAFE009": (
        "ALTER TABLE orders ADD CONSTRAINT orders_total_check CHECK (total >= 0) NOT VALID",
        MIGRATE,
        ["SAFE009"],
    ),
    "SAFE010": ("ALTER TABLE orders ALTER COLUMN note SET DEFAULT ''", MIGRATE, ["SAFE010"]),
    "SAFE011": ("ALTER INDEX orders_customer_idx RENAME TO orders_by_customer", MIGRATE, ["SAFE011"]),
}


@pytest.mark.parametrize("case", sorted(SAFE_CASES))
def test_non_breaking_rule_passes_the_gate_and_applies(case: str, tmp_path: Path, pg_url: str, app_db: str) -> None:
    step, command, expected = SAFE_CASES[case]
    make_app(pg_url, app_db)
    cfg = app_config(tmp_path, app_db, step, command)
    original = fingerprint(pg_url, app_db)

    doc = rehearse_json(cfg, pg_url)
    assert sorted(rules_of(doc)) == sorted(expected), doc["changes"]
    for change in doc["changes"]:
        assert change["severity"] == rules.RULES[change["rule"]].severity != "breaking"
    assert fingerprint(pg_url, app_db) == original  # the rehearsal itself changes nothing

    gated = invoke("up", "--fail-on-breaking", "-c", cfg, "-D", pg_url, "-o", "json")
    assert gated.returncode == 0, gated.stderr
    applied = valid_output(one_json(gated.stdout))
    assert applied["ok"] and [c["status"] for c in applied["commands"]] == ["succeeded"]
    assert sorted(rules_of(applied)) == sorted(expected)
    assert fingerprint(pg_url, app_db) != original
    assert [r["note"] for r in history_rows(pg_url, app_db)] == [None]


def test_every_rule_has_a_case() -> None:
    """Every catalog rule has a case here; the data rules (DATA0xx) have theirs in test_rehearse_data.py."""
    covered = {c.split("-")[0] for c in BREAKING_CASES} | {c.split("-")[0] for c in SAFE_CASES}
    assert covered == {r for r in rules.RULES if not r.startswith("DATA")}
    for rule in rules.RULES.values():
        if not rule.id.startswith("DATA"):
            assert rule.id.startswith({"breaking": "BRK", "lock-heavy": "LCK", "safe": "SAFE"}[rule.severity])


# ---------------------------------------------------------------------------- gate, output


def test_allow_breaking_runs_and_records_the_note(tmp_path: Path, pg_url: str, app_db: str) -> None:
    make_app(pg_url, app_db)
    cfg = app_config(tmp_path, app_db, "ALTER TABLE orders DROP COLUMN note")
    result = invoke("up", "--fail-on-breaking", "--allow-breaking", "-c", cfg, "-D", pg_url)
    assert result.returncode == 0, result.stderr
    assert "--allow-breaking: running 1 breaking change(s)" in result.stdout
    columns = query(
        pg_url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'", dbname=app_db
    )
    assert ("note",) not in columns and ("total",) in columns
    (row,) = history_rows(pg_url, app_db)
    assert row["status"] == "succeeded"
    assert row["note"] == "allow-breaking: BRK002 public.orders.note"


def test_text_output_groups_changes_by_table(tmp_path: Path, pg_url: str, app_db: str) -> None:
    make_app(pg_url, app_db)
    step = "ALTER TABLE orders DROP COLUMN note; CREATE INDEX ON customers (name); CREATE TABLE t2 (x int)"
    cfg = app_config(tmp_path, app_db, step)
    result = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "rehearsal: 3 change(s): 1 breaking, 1 lock-heavy, 1 safe" in out
    assert "\n  table public.orders\n    breaking   BRK002 dropped-column: column note (text) dropped\n" in out
    assert "\n  table public.customers\n    lock-heavy LCK001 index-without-concurrently:" in out
    assert "hint: ship code that no longer reads or writes the column first" in out
    assert "[1/1] (rehearsal) " in out
    assert "warning: rehearsal found 1 breaking change(s): BRK002 public.orders.note" in out

    gated = invoke("up", "--fail-on-breaking", "-q", "-c", cfg, "-D", pg_url)
    assert gated.returncode == 6
    assert "error: refusing to migrate" in gated.stderr and "--allow-breaking" in gated.stderr


def test_no_changes(tmp_path: Path, pg_url: str, app_db: str) -> None:
    make_app(pg_url, app_db)
    cfg = app_config(tmp_path, app_db, "SELECT 1")
    doc = rehearse_json(cfg, pg_url)
    assert doc["changes"] == [] and doc["rehearsal"]["summary"] == {"breaking": 0, "lock-heavy": 0, "safe": 0}


def test_commands_see_the_scratch_database(tmp_path: Path, pg_url: str, app_db: str) -> None:
    make_app(pg_url, app_db)
    command = 'echo "$PGDATABASE|$DBOS_DATABASE_URL|$DBOS_SYSTEM_DATABASE_URL" > env.txt'
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[command])
    doc = rehearse_json(cfg, pg_url)
    scratch = doc["rehearsal"]["scratch_database"]
    assert scratch.startswith(f"dbos_rehearse_{app_db}_") and len(scratch.encode()) <= 63
    pgdatabase, app_url, sys_url = (tmp_path / "env.txt").read_text().strip().split("|")
    assert pgdatabase == scratch and app_url.endswith("/" + scratch) and sys_url.endswith("/" + scratch)


def test_first_deploy_starts_empty_and_creates_nothing(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = app_config(tmp_path, app_db, "CREATE TABLE a (x int); CREATE TABLE b (y int)", CONCURRENT_MIGRATE)
    doc = rehearse_json(cfg, pg_url)
    assert doc["rehearsal"]["copy_method"].startswith("none: the app database does not exist yet")
    assert sorted(rules_of(doc)) == ["SAFE001", "SAFE001"]
    assert not db_exists(pg_url, app_db)  # a rehearsal never creates the real database


def test_catalog_copy_end_to_end(tmp_path: Path, pg_url: str, app_db: str) -> None:
    make_app(pg_url, app_db)
    cfg = app_config(tmp_path, app_db, "ALTER TABLE orders RENAME COLUMN note TO remark")
    doc = rehearse_json(cfg, pg_url, env={schema_copy.COPY_MODE_ENV: "catalog"})
    assert doc["rehearsal"]["copy_method"] == "catalog" and doc["rehearsal"]["copy_warnings"] == []
    assert rules_of(doc) == ["BRK004"]  # the step ran once: the version row was copied


def test_rehearse_url_uses_another_instance(
    tmp_path: Path, pg_url: str, app_db: str, own_cluster: ClusterFactory
) -> None:
    other = own_cluster()
    make_app(pg_url, app_db)
    cfg = app_config(tmp_path, app_db, "ALTER TABLE orders DROP COLUMN note")
    result = invoke(
        "plan", "--rehearse", "--rehearse-url", other.url(dbname="postgres"), "-c", cfg, "-D", pg_url, "-o", "json"
    )
    assert result.returncode == 0, result.stderr
    doc = one_json(result.stdout)
    assert rules_of(doc) == ["BRK002"]
    assert f":{other.port}" in doc["rehearsal"]["instance"]
    from urllib.parse import quote

    for form in (other.password, quote(other.password, safe="")):
        assert form not in result.stdout + result.stderr
    with psycopg.connect(other.url(dbname="postgres"), autocommit=True) as conn:
        left = conn.execute("SELECT datname FROM pg_database WHERE datname LIKE 'dbos_rehearse_%'").fetchall()
    assert left == []


def test_password_instance(tmp_path: Path, own_cluster: ClusterFactory) -> None:
    """pg_dump authenticates through PGPASSWORD (scram, a password full of URL syntax), and
    the password shows up nowhere."""
    from urllib.parse import quote

    cluster = own_cluster()
    url = cluster.url()
    make_app(url, "pw_app")
    cfg = app_config(tmp_path, "pw_app", "ALTER TABLE orders DROP COLUMN note")
    with psycopg.connect(url, autocommit=True) as conn:
        major = conn.info.server_version // 10000
    result = invoke("plan", "--rehearse", "-c", cfg, "-D", url, "-o", "json", "-v")
    assert result.returncode == 0, result.stderr
    doc = valid_output(one_json(result.stdout))
    assert rules_of(doc) == ["BRK002"] and doc["rehearsal"]["copy_warnings"] == []
    if schema_copy.find_pg_dump(major, os.environ) is not None:
        assert doc["rehearsal"]["copy_method"].startswith("pg_dump")
    for form in (cluster.password, quote(cluster.password, safe="")):
        assert form not in result.stdout + result.stderr


# ---------------------------------------------------------------------------- cleanup


def test_failing_command_fails_the_rehearsal_and_drops_the_scratch(tmp_path: Path, pg_url: str, app_db: str) -> None:
    make_app(pg_url, app_db)
    original = fingerprint(pg_url, app_db)
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["psql -X -q -c 'DROP TABLE audit'", "exit 3"])
    result = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url, "-o", "json")
    assert result.returncode == 1, result.stderr
    doc = one_json(result.stdout)
    assert doc["error"]["code"] == "command_failed"
    assert doc["error"]["message"] == "rehearsal command 2 failed with exit code 3: exit 3"
    assert doc["rehearsal"]["dropped"] is True
    assert [c["status"] for c in doc["commands"]] == ["succeeded", "failed"]

    gated = invoke("up", "--fail-on-breaking", "-c", cfg, "-D", pg_url)
    assert gated.returncode == 1 and "rehearsal command 2 failed" in gated.stderr
    assert fingerprint(pg_url, app_db) == original


def test_interrupt_drops_the_scratch(tmp_path: Path, pg_url: str, app_db: str) -> None:
    make_app(pg_url, app_db)
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["touch started && sleep 30"])
    proc = subprocess.Popen(
        [*cli_command(), "plan", "--rehearse", "-c", str(cfg), "-D", pg_url],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (tmp_path / "started").exists():
            assert time.monotonic() < deadline and proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        assert len(scratch_databases(pg_url, app_db)) == 1
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, out + err
    assert "interrupted during rehearsal command 1" in err
    assert scratch_databases(pg_url, app_db) == []


def test_killed_run_leaves_a_scratch_that_the_next_rehearsal_removes(
    tmp_path: Path, app_db: str, own_cluster: ClusterFactory
) -> None:
    # An instance of its own: any rehearsal on a shared instance may rightly remove the leftover.
    pg_url = own_cluster().url(dbname="postgres")
    make_app(pg_url, app_db)
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["touch started && sleep 30"])
    proc = subprocess.Popen(
        [*cli_command(), "plan", "--rehearse", "-c", str(cfg), "-D", pg_url],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 30
    while not (tmp_path / "started").exists():
        assert time.monotonic() < deadline and proc.poll() is None
        time.sleep(0.05)
    proc.kill()
    proc.wait(timeout=30)
    (leftover,) = scratch_databases(pg_url, app_db)

    cfg = app_config(tmp_path, app_db, "SELECT 1")
    deadline = time.monotonic() + 10
    while True:  # the dead client's session (and with it the lock) goes away within moments
        doc = rehearse_json(cfg, pg_url)
        if leftover in doc["rehearsal"]["leftovers_removed"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert leftover in doc["rehearsal"]["leftovers_removed"]
    assert scratch_databases(pg_url, app_db) == []


def test_leftover_rules(tmp_path: Path, app_db: str, own_cluster: ClusterFactory) -> None:
    """Only exact scratch names that carry the scratch mark are candidates; a held rehearsal
    lock always protects; a database with a session is kept until it is LEFTOVER_AGE old.
    A user's database that merely has a scratch-shaped name (no mark) is never dropped."""
    pg_url = own_cluster().url(dbname="postgres")  # its leftovers are fair game to any rehearsal on the instance
    now = datetime.now(timezone.utc)
    old = (now - scratch.LEFTOVER_AGE - timedelta(minutes=5)).strftime("%Y%m%d%H%M%S")
    fresh = now.strftime("%Y%m%d%H%M%S")
    names = {
        "old_idle": f"dbos_rehearse_{app_db}_{old}_aaaaaa",
        "old_busy": f"dbos_rehearse_{app_db}_{old}_bbbbbb",
        "fresh_idle": f"dbos_rehearse_{app_db}_{fresh}_cccccc",
        "fresh_busy": f"dbos_rehearse_{app_db}_{fresh}_dddddd",
        "old_locked": f"dbos_rehearse_{app_db}_{old}_eeeeee",
        "not_ours": f"dbos_rehearse_{app_db}_keep",
        "unmarked": f"dbos_rehearse_{app_db}_{old}_ffffff",
    }
    for key, name in names.items():
        query(pg_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)).as_string(None))
        if key not in ("not_ours", "unmarked"):
            comment = sql.SQL("COMMENT ON DATABASE {} IS {}").format(
                sql.Identifier(name), sql.Literal(scratch.SCRATCH_MARK)
            )
            query(pg_url, comment.as_string(None))
    sessions = [psycopg.connect(with_dbname(pg_url, names[k]), autocommit=True) for k in ("old_busy", "fresh_busy")]
    locker = psycopg.connect(pg_url, autocommit=True)
    try:
        locker.execute(
            "SELECT pg_advisory_lock(%s, %s)",
            (scratch.REHEARSE_LOCK_CLASS, scratch.scratch_lock_key(names["old_locked"])),
        )
        make_app(pg_url, app_db)
        cfg = app_config(tmp_path, app_db, "SELECT 1")
        doc = rehearse_json(cfg, pg_url)
        removed = set(doc["rehearsal"]["leftovers_removed"])
        assert {names["old_idle"], names["old_busy"], names["fresh_idle"]} <= removed
        assert not {names["fresh_busy"], names["old_locked"], names["not_ours"], names["unmarked"]} & removed
        assert set(scratch_databases(pg_url, app_db)) == {
            names["fresh_busy"],
            names["old_locked"],
            names["not_ours"],
            names["unmarked"],
        }
        assert any(names["unmarked"] in w and "not marked" in w for w in doc["rehearsal"]["warnings"])
    finally:
        for conn in [*sessions, locker]:
            conn.close()
        for name in names.values():
            drop_database(pg_url, name)


# ---------------------------------------------------------------------------- alembic sample app

SAMPLE = Path(__file__).resolve().parent.parent / "sample_app"

DROP_REVISION = '''"""Drop orders.created_at and index amount_cents.

Revision ID: 0004_breaking
Revises: 0003_seed_demo_data
"""

from alembic import op

revision = "0004_breaking"
down_revision = "0003_seed_demo_data"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_column("orders", "created_at")
    op.create_index("ix_orders_amount_cents", "orders", ["amount_cents"])


def downgrade() -> None:
    raise NotImplementedError
'''


@pytest.mark.skipif(not (SAMPLE / "dbos-config.yaml").exists(), reason="sample_app is missing")
def test_sample_app_alembic(tmp_path: Path, pg_url: str, app_db: str) -> None:
    app = tmp_path / "sample_app"
    shutil.copytree(SAMPLE, app, ignore=shutil.ignore_patterns("__pycache__"))
    cfg = app / "dbos-config.yaml"
    env: dict[str, str | None] = {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    args = ("-c", cfg, "-D", pg_url, "--app-db-name", app_db, "-o", "json")

    first = invoke("plan", "--rehearse", *args, env=env)  # first deploy: nothing to copy
    assert first.returncode == 0, first.stderr
    assert sorted(set(rules_of(one_json(first.stdout)))) == ["SAFE001", "SAFE003"]
    assert "Running upgrade  -> 0001_create_tables" in first.stderr
    gated = invoke("up", "--fail-on-breaking", *args, env=env)
    assert gated.returncode == 0, gated.stderr
    assert query(pg_url, "SELECT version_num FROM alembic_version", dbname=app_db) == [("0003_seed_demo_data",)]

    (app / "migrations" / "versions" / "0004_breaking.py").write_text(DROP_REVISION)
    second = invoke("plan", "--rehearse", *args, env=env)
    assert second.returncode == 0, second.stderr
    doc = one_json(second.stdout)
    assert doc["rehearsal"]["version_tables"] == ["public.alembic_version"]
    # alembic resumed from the copied version: only 0004 ran on the scratch database
    assert "Running upgrade 0003_seed_demo_data -> 0004_breaking" in second.stderr
    assert "-> 0001_create_tables" not in second.stderr
    assert sorted(rules_of(doc)) == ["BRK002", "LCK001"]

    refused = invoke("up", "--fail-on-breaking", *args, env=env)
    assert refused.returncode == 6, refused.stderr
    assert query(pg_url, "SELECT version_num FROM alembic_version", dbname=app_db) == [("0003_seed_demo_data",)]


# ---------------------------------------------------------------------------- copy fidelity, units

RICH_SCHEMA = """
CREATE SCHEMA app;
CREATE TYPE app.mood AS ENUM ('ok', 'it''s bad');
CREATE DOMAIN app.posint AS integer NOT NULL DEFAULT 1 CONSTRAINT posint_check CHECK (VALUE > 0);
CREATE TYPE app.pair AS (a int, b text);
CREATE SEQUENCE app.counter START 5 INCREMENT 2;
CREATE TABLE app.people (
    id int GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY,
    name text COLLATE "C" NOT NULL,
    m app.mood,
    n app.posint,
    shout text GENERATED ALWAYS AS (upper(name)) STORED,
    c int DEFAULT nextval('app.counter')
);
CREATE UNLOGGED TABLE app.cache (k text PRIMARY KEY, v jsonb);
ALTER TABLE app.cache ADD CONSTRAINT cache_k_check CHECK (k <> '') NOT VALID;
CREATE TABLE app.events (id bigserial, at timestamptz NOT NULL DEFAULT now(), person int, PRIMARY KEY (id, at))
    PARTITION BY RANGE (at);
CREATE TABLE app.events_2024 PARTITION OF app.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE app.events_rest PARTITION OF app.events DEFAULT;
CREATE INDEX events_person ON app.events (person);
ALTER TABLE app.events ADD CONSTRAINT events_person_fk FOREIGN KEY (person) REFERENCES app.people (id);
CREATE FUNCTION app.touch() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.name := trim(NEW.name); RETURN NEW; END $$;
CREATE TRIGGER people_touch BEFORE INSERT ON app.people FOR EACH ROW EXECUTE FUNCTION app.touch();
CREATE FUNCTION app.n_people() RETURNS bigint LANGUAGE sql BEGIN ATOMIC SELECT count(*) FROM app.people; END;
CREATE VIEW app.v_people AS SELECT id, name FROM app.people;
CREATE VIEW app.v_ids AS SELECT id FROM app.v_people;
CREATE MATERIALIZED VIEW app.by_mood AS SELECT m, count(*) AS n FROM app.people GROUP BY m;
CREATE UNIQUE INDEX by_mood_m ON app.by_mood (m);
CREATE INDEX people_lower ON app.people (lower(name)) WHERE m IS NOT NULL;
CREATE TABLE app.rooms (during tstzrange, EXCLUDE USING gist (during WITH &&));
CREATE TABLE knex_migrations (id serial PRIMARY KEY, name varchar(255), batch int);
INSERT INTO knex_migrations (name, batch) VALUES ('one', 1), ('two', 1);
CREATE SCHEMA dbos_migrate;
CREATE TABLE dbos_migrate.history (id int);
"""


@pytest.mark.parametrize("method", ["pg_dump", "catalog"])
def test_copy_is_faithful(method: str, pg_url: str, app_db: str) -> None:
    """Both copy methods reproduce the schema the diff compares, and the version rows."""
    make_app(pg_url, app_db, RICH_SCHEMA)
    copy = f"{app_db}_copy"
    query(pg_url, sql.SQL("CREATE DATABASE {} TEMPLATE template0").format(sql.Identifier(copy)).as_string(None))
    try:
        with (
            psycopg.connect(with_dbname(pg_url, app_db), autocommit=True) as src,
            psycopg.connect(with_dbname(pg_url, copy), autocommit=True) as dst,
        ):
            if method == "pg_dump":
                dump = schema_copy.find_pg_dump(src.info.server_version // 10000, os.environ)
                if dump is None:
                    skip_or_fail("no pg_dump for this server")
                from dbos_migrate.engine.scrub import Scrubber
                from dbos_migrate.settings.target import parse_url

                url = parse_url(with_dbname(pg_url, app_db))
                env = dict(os.environ, PGPASSWORD=url.password or "")
                # pg_dump's --lock-wait-timeout bounds its LOCK TABLE statements (statement_timeout):
                # nothing else uses this test's database, so the bound is only a safety net against a
                # hang, as long as the rehearsal's default (--lock-timeout, 300 s), not 10 s that a
                # starved backend on a loaded machine can run out of.
                schema_copy.restore_script(
                    dst, schema_copy.dump_schema(dump, url, env, Scrubber([url.password]), 300_000)
                )
            else:
                assert schema_copy.catalog_copy(src, dst) == []
            assert schema_copy.copy_version_tables(src, dst) == (["public.knex_migrations"], [])
            assert catalog.snapshot(dst).shape() == catalog.snapshot(src).shape()
            assert dst.execute("SELECT name FROM public.knex_migrations ORDER BY id").fetchall() == [
                ("one",),
                ("two",),
            ]
            assert dst.execute("SELECT nextval('public.knex_migrations_id_seq')").fetchone() == (3,)
            assert dst.execute("SELECT to_regnamespace('dbos_migrate')").fetchone() == (None,)
    finally:
        drop_database(pg_url, copy)


def test_scratch_name_fits_63_bytes() -> None:
    name = scratch.scratch_name("a" * 63, datetime(2025, 1, 2, 3, 4, 5, tzinfo=timezone.utc))
    assert len(name.encode()) == 63
    assert name.startswith("dbos_rehearse_aaaa") and "_20250102030405_" in name
    assert scratch._SCRATCH_NAME.match(name)
    assert scratch.scratch_name("app") != scratch.scratch_name("app")


@pytest.mark.parametrize(
    ("old", "new", "wider"),
    [
        ("character varying(20)", "character varying(50)", True),
        ("character varying(50)", "character varying(20)", False),
        ("character varying(20)", "text", True),
        ("text", "character varying", True),
        ("text", "character varying(20)", False),
        ("numeric(10,2)", "numeric(12,2)", True),
        ("numeric(10,2)", "numeric(12,3)", False),
        ("numeric(10,2)", "numeric", True),
        ("integer", "bigint", False),
        ("character varying(5)[]", "text[]", True),
        ("timestamp without time zone", "timestamp with time zone", False),
    ],
)
def test_widened(old: str, new: str, wider: bool) -> None:
    assert diff.widened(old, new) is wider
