"""Data checks of `plan --rehearse` / `up --fail-on-breaking` against a real PostgreSQL.

Each test builds an app database whose rows make the migration fail (or not), runs the CLI
as a subprocess, and reads what it found: NULLs, duplicates, violating rows, values that do
not fit, enum values in use, a table with rows, a large table (the size threshold lowered
through $DBOS_MIGRATE_LARGE_TABLE, as docs/rehearsal.md names it), a role without SELECT,
a check that times out, and a writer that must never wait on the checks' locks.
"""

from __future__ import annotations

import contextlib
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import one_json, query
from pgharness import invoke, with_dbname, with_user
from psycopg import sql
from test_rehearse import CONCURRENT_MIGRATE, app_config, make_app, rules_of, valid_output

from dbos_migrate.engine.scrub import Scrubber
from dbos_migrate.rehearse import datachecks, dataplan, readonly, rules, units
from dbos_migrate.rehearse.catalog import Snapshot

DIRTY = """
CREATE TYPE state AS ENUM ('new', 'paid', 'shipped');
CREATE TABLE customers (id int PRIMARY KEY, email text, name varchar(50));
CREATE TABLE orders (id serial PRIMARY KEY, customer_id int, total numeric(10, 2), code varchar(20),
                     st state NOT NULL DEFAULT 'new');
CREATE TABLE tags (id serial PRIMARY KEY, label text);
CREATE TABLE empty_one (id serial PRIMARY KEY);
INSERT INTO customers SELECT g, 'u' || (g % 5) || '@example.com', 'c' || g FROM generate_series(1, 20) g;
INSERT INTO orders (customer_id, total, code, st)
    SELECT CASE WHEN g <= 3 THEN 900 + g ELSE g % 20 + 1 END, CASE WHEN g % 10 = 0 THEN NULL ELSE g END,
           CASE WHEN g <= 4 THEN repeat('x', 12) ELSE 'ok' END, CASE WHEN g <= 2 THEN 'shipped' ELSE 'new' END::state
      FROM generate_series(1, 50) g;
INSERT INTO tags (label) SELECT 'tag' || g FROM generate_series(1, 30) g;
"""

# Every statement meets rows that make it fail on the real database, except where noted.
DIRTY_STEP = """
ALTER TABLE orders ALTER COLUMN total SET NOT NULL;                  -- 5 NULLs
CREATE UNIQUE INDEX customers_email_key ON customers (lower(email)); -- 5 addresses, 4 rows each
ALTER TABLE orders ADD CONSTRAINT orders_total_check CHECK (total < 40);
ALTER TABLE orders ADD CONSTRAINT orders_customer_fk FOREIGN KEY (customer_id) REFERENCES customers (id);
ALTER TABLE orders ALTER COLUMN code TYPE varchar(10);              -- 4 values of 12 characters
ALTER TABLE tags ADD COLUMN owner text NOT NULL;                    -- tags has rows
ALTER TABLE empty_one ADD COLUMN owner text NOT NULL;               -- empty: fine
CREATE UNIQUE INDEX tags_label_key ON tags (label);                 -- no duplicates: fine
ALTER TYPE state RENAME TO state_old;
CREATE TYPE state AS ENUM ('new', 'paid');
ALTER TABLE orders ALTER COLUMN st DROP DEFAULT, ALTER COLUMN st TYPE state USING st::text::state,
    ALTER COLUMN st SET DEFAULT 'new';
DROP TYPE state_old;
"""


def test_data_checks_find_what_fails(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """One rehearsal meets NULLs, duplicates, violating CHECK and FK rows, values too long, an
    enum value in use and a table with rows; it also says what is fine. JSON, text, GitHub."""
    make_app(pg_url, app_db, DIRTY)
    cfg = app_config(tmp_path, app_db, DIRTY_STEP, CONCURRENT_MIGRATE.replace("-f", "-1 -f"))
    result = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url, "-o", "json")
    assert result.returncode == 0, result.stderr
    doc = valid_output(one_json(result.stdout))
    found = {(c["rule"], c["object"]): c["data_checks"] for c in doc["changes"]}

    def only(rule: str, obj: str, check: str) -> dict[str, Any]:
        (finding,) = [f for f in found[(rule, obj)] if f["check"] == check]
        assert finding["hint"] and finding["detail"] and finding["table"]
        return finding

    nulls = only("BRK006", "public.orders.total", "nulls")
    assert (nulls["rule"], nulls["violating_rows"], nulls["examined_rows"]) == ("DATA001", 5, 50)
    assert nulls["severity"] == "breaking" and nulls["sampled"] is False and "SET NOT NULL will fail" in nulls["detail"]
    dupes = only("LCK001", "public.customers_email_key", "duplicates")
    assert (dupes["rule"], dupes["violating_rows"], dupes["examined_rows"]) == ("DATA003", 20, 20)
    check = only("LCK003", "public.orders.orders_total_check", "check")
    assert (check["rule"], check["violating_rows"]) == ("DATA004", 9)  # 41..49 (40 and 50 are NULL)
    fk = only("LCK003", "public.orders.orders_customer_fk", "foreign-key")
    assert (fk["rule"], fk["violating_rows"]) == ("DATA005", 3)
    fits = only("BRK005", "public.orders.code", "fits-type")
    assert (fits["rule"], fits["violating_rows"]) == ("DATA006", 4)
    rows = only("BRK007", "public.tags.owner", "rows")
    assert rows["rule"] == "DATA002" and rows["status"] == "violations"
    enum = only("BRK008", "public.state", "enum-values")
    assert (enum["rule"], enum["violating_rows"], enum["object"]) == ("DATA007", 2, "public.orders.st")
    assert only("BRK007", "public.empty_one.owner", "rows")["rule"] == "DATA012"
    fine = only("LCK001", "public.tags_label_key", "duplicates")
    assert (fine["rule"], fine["status"], fine["examined_rows"]) == ("DATA012", "none", 30)
    size = only("LCK001", "public.customers_email_key", "size")
    assert size["rule"] == "DATA013" and size["table_bytes"] > 0 and size["estimated_seconds"] is not None
    data = doc["rehearsal"]["data_checks"]
    assert data["enabled"] and data["summary"]["breaking"] == 7 and data["summary"]["unknown"] == 0
    assert doc["rehearsal"]["verdict"]["refuse"] and "data" in doc["rehearsal"]["verdict"]["reasons"]
    # findings follow the order of the changes they concern
    order = [(i, f["rule"]) for i, c in enumerate(doc["changes"]) for f in c["data_checks"]]
    assert [i for i, _ in order] == sorted(i for i, _ in order)

    summary = tmp_path / "summary.md"
    env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    text = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url, env=env)
    assert text.returncode == 0, text.stderr
    out = text.stdout
    assert "data: breaking DATA001 nulls-block-not-null: 5 of 50 rows hold NULL in total" in out
    assert (
        f"data checks: {data['checks']} on {app_db} in " in out
        and "gate (up --fail-on-breaking): would refuse: rows of the app" in out
    )
    table = summary.read_text()
    assert "| Severity | Rule | Object | Change | Hint | Data | Workflows |" in table
    assert "**breaking** DATA001 nulls-block-not-null: 5 of 50 rows hold NULL in total" in table
    assert "- **gate (up --fail-on-breaking):** would refuse" in table
    notes = [ln for ln in out.splitlines() if ln.startswith(("::warning", "::error"))]
    titles = [ln.split("title=", 1)[1].split("::", 1)[0] for ln in notes]
    assert titles.index("BRK006 set-not-null") + 1 == titles.index("DATA001 nulls-block-not-null")

    gated = invoke("up", "--fail-on-breaking", "--allow-breaking", "-c", cfg, "-D", pg_url, "-o", "json")
    assert gated.returncode == 1  # let through, the migration meets the NULLs and fails as predicted
    assert 'column "total" of relation "orders" contains null values' in gated.stderr


def test_data_breaking_refuses_the_gate_without_any_breaking_change(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """A lock-heavy change whose rows fail it is refused (exit 6): the deploy would fail."""
    make_app(pg_url, app_db, DIRTY)
    cfg = app_config(
        tmp_path, app_db, "ALTER TABLE orders ADD CONSTRAINT orders_total_check CHECK (total < 40)", CONCURRENT_MIGRATE
    )
    gated = invoke("up", "--fail-on-breaking", "-c", cfg, "-D", pg_url, "-o", "json")
    assert gated.returncode == 6, gated.stderr
    doc = valid_output(one_json(gated.stdout))
    assert rules_of(doc) == ["LCK003"] and doc["commands"] == []
    assert "DATA004 public.orders.orders_total_check" in doc["error"]["message"]
    assert doc["rehearsal"]["verdict"]["reasons"] == ["data"]
    workflows = doc["rehearsal"]["workflows"]  # no breaking change: unknown workflows do not matter here
    assert (
        workflows["status"] == "unknown"
        and workflows["reason"] == f"the system database {app_db}_dbos_sys does not exist"
    )

    clean = app_config(
        tmp_path,
        app_db,
        "ALTER TABLE orders ADD CONSTRAINT orders_total_check CHECK (total < 1000)",
        CONCURRENT_MIGRATE,
    )
    passed = invoke("up", "--fail-on-breaking", "-c", clean, "-D", pg_url, "-o", "json")
    assert passed.returncode == 0, passed.stderr
    assert one_json(passed.stdout)["changes"][0]["data_checks"][0]["rule"] == "DATA012"


LARGE_ENV = {datachecks.LARGE_ENV: "64kB", datachecks.SAMPLE_ENV: "64kB"}


def test_large_table_is_sampled_and_its_lock_estimated(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """Over the (lowered) thresholds: rewrites and index builds are DATA008/DATA009, and the
    row checks read a TABLESAMPLE and say how many rows they examined."""
    make_app(
        pg_url,
        app_db,
        """
        CREATE TABLE big (id serial PRIMARY KEY, a int, b int, pad text);
        INSERT INTO big (a, b, pad) SELECT g, CASE WHEN g % 2 = 0 THEN NULL ELSE g END, repeat('p', 40)
          FROM generate_series(1, 20000) g;
        ANALYZE big;
    """,
    )
    step = (
        "ALTER TABLE big ALTER COLUMN a SET NOT NULL; ALTER TABLE big ALTER COLUMN b SET NOT NULL;"
        "CREATE INDEX big_a ON big (a); ALTER TABLE big ADD COLUMN token uuid DEFAULT gen_random_uuid()"
    )
    cfg = app_config(tmp_path, app_db, step, CONCURRENT_MIGRATE)
    doc = valid_output(
        one_json(invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url, "-o", "json", env=LARGE_ENV).stdout)
    )
    by = {(c["rule"], c["object"]): c["data_checks"] for c in doc["changes"]}
    a_nulls, a_size = by[("BRK006", "public.big.a")]
    assert a_nulls["rule"] == "DATA011" and a_nulls["status"] == "none-in-sample" and a_nulls["sampled"]
    assert 0 < a_nulls["examined_rows"] < 20000 and a_nulls["estimated_rows"] == 20000
    assert "sampled rows" in a_nulls["detail"] and "was not examined" in a_nulls["detail"]
    assert a_size["rule"] == "DATA008" and a_size["status"] == "large" and a_size["table_bytes"] > 64 * 1024
    (b_nulls,) = by[("BRK006", "public.big.b")]  # its scan was already reported with a
    assert b_nulls["rule"] == "DATA001" and b_nulls["sampled"] and 0 < b_nulls["violating_rows"] < 20000
    (index,) = by[("LCK001", "public.big_a")]
    assert index["rule"] == "DATA009" and "SHARE" in index["detail"]
    (rewrite,) = by[("LCK002", "public.big")]
    assert rewrite["rule"] == "DATA008" and "rewrite holds ACCESS EXCLUSIVE" in rewrite["detail"]
    assert doc["rehearsal"]["data_checks"]["large_table_bytes"] == 64 * 1024


@pytest.fixture
def reader_role(pg_url: str, app_db: str) -> Iterator[str]:
    """A login role with SELECT on nothing but customers (created for the test, dropped after)."""
    role = f"t_{uuid.uuid4().hex[:10]}_ro"
    # A password: the harness's own cluster (no server given) requires one.
    query(pg_url, sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'reader-pw'").format(sql.Identifier(role)).as_string(None))
    try:
        yield role
    finally:
        with contextlib.suppress(psycopg.Error):  # the app database may be gone already
            query(pg_url, sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)).as_string(None), dbname=app_db)
        query(pg_url, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)).as_string(None))


def test_role_without_pg_read_all_data_gets_unknown(tmp_path: Path, pg_url: str, app_db: str, reader_role: str) -> None:
    """The row checks run as pg_read_all_data, never as the deploy role: a deploy role that may
    not SET ROLE to it gets every row check unknown (sizes still given); granted, they run."""
    make_app(pg_url, app_db, DIRTY)
    query(
        pg_url,
        sql.SQL("GRANT SELECT ON customers TO {}").format(sql.Identifier(reader_role)).as_string(None),
        dbname=app_db,
    )
    step = "ALTER TABLE orders ALTER COLUMN total SET NOT NULL; CREATE UNIQUE INDEX ce ON customers (email)"
    cfg = app_config(tmp_path, app_db, step, CONCURRENT_MIGRATE)
    result = invoke(
        "plan",
        "--rehearse",
        "-c",
        cfg,
        "-D",
        with_user(pg_url, reader_role, "reader-pw"),
        "--rehearse-url",
        pg_url,
        "-o",
        "json",
        env={"DBOS_MIGRATE_REHEARSE_COPY": "catalog"},
    )
    assert result.returncode == 0, result.stderr
    doc = valid_output(one_json(result.stdout))
    by = {c["rule"]: c["data_checks"] for c in doc["changes"]}
    nulls = next(f for f in by["BRK006"] if f["check"] == "nulls")
    assert nulls["rule"] == "DATA010" and nulls["status"] == "unknown"
    assert "may not SET ROLE pg_read_all_data" in nulls["reason"]
    size = next(f for f in by["BRK006"] if f["check"] == "size")
    assert size["rule"] == "DATA013" and size["table_bytes"] > 0  # sizes need no privilege
    dupes = next(f for f in by["LCK001"] if f["check"] == "duplicates")
    assert dupes["status"] == "unknown" and doc["rehearsal"]["data_checks"]["role"] is None

    query(pg_url, sql.SQL("GRANT pg_read_all_data TO {}").format(sql.Identifier(reader_role)).as_string(None))
    result = invoke(
        "plan",
        "--rehearse",
        "-c",
        cfg,
        "-D",
        with_user(pg_url, reader_role, "reader-pw"),
        "--rehearse-url",
        pg_url,
        "-o",
        "json",
        env={"DBOS_MIGRATE_REHEARSE_COPY": "catalog"},
    )
    assert result.returncode == 0, result.stderr
    doc = valid_output(one_json(result.stdout))
    by = {c["rule"]: c["data_checks"] for c in doc["changes"]}
    nulls = next(f for f in by["BRK006"] if f["check"] == "nulls")
    assert (nulls["rule"], nulls["violating_rows"]) == ("DATA001", 5)
    dupes = next(f for f in by["LCK001"] if f["check"] == "duplicates")
    assert dupes["rule"] == "DATA003" and dupes["violating_rows"] == 20
    assert doc["rehearsal"]["data_checks"]["role"] == "pg_read_all_data"


SLOW = """
CREATE TABLE items (id int PRIMARY KEY, n int NOT NULL, m int NOT NULL DEFAULT 0);
INSERT INTO items SELECT g, g FROM generate_series(1, {rows}) g;
"""
# Slow for the rows made here (n > 0), instant for those a writer adds (n = 0), and made of
# built-in immutable functions only (the data checks evaluate nothing else).
SLOW_CHECK = (
    "ALTER TABLE items ADD CONSTRAINT items_slow "
    "CHECK (length(repeat(md5(n::text), CASE WHEN n > 0 THEN {size} ELSE 0 END)) >= 0)"
)


def test_check_that_times_out_is_unknown(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """A CHECK whose expression needs 5 s over the rows, with --data-check-timeout 0.3: unknown, never a pass;
    --no-data-checks runs none."""
    make_app(pg_url, app_db, SLOW.format(rows=100))
    cfg = app_config(tmp_path, app_db, SLOW_CHECK.format(size=1_000_000), CONCURRENT_MIGRATE)
    started = time.monotonic()
    doc = valid_output(
        one_json(
            invoke("plan", "--rehearse", "--data-check-timeout", "0.3", "-c", cfg, "-D", pg_url, "-o", "json").stdout
        )
    )
    check = next(f for f in doc["changes"][0]["data_checks"] if f["check"] == "check")
    assert check["rule"] == "DATA010" and check["severity"] == "unknown"
    assert check["reason"] == "timed out after 0.3s (--data-check-timeout)"
    assert 250 <= check["elapsed_ms"] < 3000 and time.monotonic() - started < 30
    assert doc["rehearsal"]["data_checks"]["timeout_s"] == 0.3

    off = valid_output(
        one_json(invoke("plan", "--rehearse", "--no-data-checks", "-c", cfg, "-D", pg_url, "-o", "json").stdout)
    )
    assert off["changes"][0]["data_checks"] == []
    assert off["rehearsal"]["data_checks"]["enabled"] is False
    assert off["rehearsal"]["data_checks"]["skipped"] == "--no-data-checks"


def test_checks_never_make_a_writer_wait(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """While a slow check reads the table, a writer updates and inserts into it with a short
    lock_timeout: none of its statements waits on us, and every relation lock our sessions
    hold on the app database is ACCESS SHARE."""
    make_app(pg_url, app_db, SLOW.format(rows=300))
    cfg = app_config(tmp_path, app_db, SLOW_CHECK.format(size=600_000), CONCURRENT_MIGRATE)
    app_url = with_dbname(pg_url, app_db)
    stop = threading.Event()
    modes: set[str] = set()
    check_windows: list[float] = []  # when our check session was seen holding its lock
    writes: list[tuple[float, float, str | None]] = []
    writer_pid: list[int] = []
    blocked: list[list[int]] = []  # pg_blocking_pids() of the writer, whenever it was not empty

    def watch() -> None:
        with psycopg.connect(app_url, autocommit=True) as conn:
            while not stop.is_set():
                for mode, app_name in conn.execute(
                    """SELECT l.mode, a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
                        WHERE l.locktype = 'relation' AND a.datname = current_database()
                          AND a.application_name LIKE 'dbos-migrate%%' AND l.granted
                          AND l.relation = 'public.items'::regclass"""
                ).fetchall():
                    modes.add(mode)
                    if "data checks" in app_name:
                        check_windows.append(time.monotonic())
                if writer_pid:
                    row = conn.execute("SELECT pg_blocking_pids(%s)", (writer_pid[0],)).fetchone()
                    if row and row[0]:
                        blocked.append(list(row[0]))

    def write() -> None:
        with psycopg.connect(app_url, autocommit=True) as conn:
            conn.execute("SET lock_timeout = '200ms'")
            writer_pid.append(conn.info.backend_pid)
            k = 1000
            while not stop.is_set():
                k += 1
                begin = time.monotonic()
                error = None
                try:
                    conn.execute("UPDATE items SET m = m + 1 WHERE id = %s", (k % 300 + 1,))
                    conn.execute("INSERT INTO items (id, n) VALUES (%s, 0)", (k,))
                except psycopg.Error as exc:
                    error = str(exc)
                writes.append((begin, time.monotonic(), error))

    threads = [threading.Thread(target=watch), threading.Thread(target=write)]
    for t in threads:
        t.start()
    try:
        result = invoke("plan", "--rehearse", "--data-check-timeout", "120", "-c", cfg, "-D", pg_url, "-o", "json")
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert result.returncode == 0, result.stderr
    doc = one_json(result.stdout)
    check = next(f for f in doc["changes"][0]["data_checks"] if f["check"] == "check")
    assert check["rule"] == "DATA012" and check["elapsed_ms"] >= 1000  # 300 rows x 19 MB
    assert modes == {"AccessShareLock"}, modes
    assert check_windows, "the data check's lock was never seen"
    first, last = min(check_windows), max(check_windows)
    during = [w for w in writes if first <= w[0] and w[1] <= last]
    assert len(during) >= 5, (len(during), len(writes))
    assert [w for w in writes if w[2] is not None] == []  # no lock_timeout, no error
    assert blocked == []  # the writer never waited on anyone


# ---------------------------------------------------------------------------- units


def test_narrowing() -> None:
    col = sql.Identifier("c")
    assert dataplan.narrowing("character varying(20)", "character varying(10)", col) is not None
    assert dataplan.narrowing("character varying(10)", "character varying(20)", col) is None
    assert dataplan.narrowing("text", "character varying(5)", col) is not None
    assert dataplan.narrowing("numeric(10,2)", "numeric(6,2)", col) is not None
    assert dataplan.narrowing("numeric(10,2)", "numeric(12,2)", col) is None
    assert dataplan.narrowing("numeric(10,2)", "numeric(10,1)", col) is None  # rounds, never overflows
    assert dataplan.narrowing("bigint", "integer", col) is not None
    assert dataplan.narrowing("integer", "bigint", col) is None
    assert dataplan.narrowing("text", "integer", col) is None  # not a narrowing it can count


def test_sizes_and_reasons() -> None:
    assert units.parse_size("64kB", "x") == 65536 and units.parse_size("1GB", "x") == 1024**3
    assert units.parse_size("1000", "x") == 1000
    with pytest.raises(Exception, match="must be a size"):
        units.parse_size("lots", "x")
    exc = psycopg.errors.InsufficientPrivilege("permission denied for table s3cr3t-pw")
    assert readonly.reason(exc, Scrubber(["s3cr3t-pw"]), 5) == "permission denied: permission denied for table ***"


def test_every_data_rule_is_documented() -> None:
    doc = (Path(__file__).resolve().parent.parent / "docs" / "rehearsal.md").read_text()
    data_rules = [r for r in rules.RULES.values() if r.id.startswith("DATA")]
    assert len(data_rules) == 13
    for rule in data_rules:
        assert f"| {rule.id} | {rule.name} | {rule.severity} |" in doc, rule.id


def test_plan_on_no_change_plans_nothing() -> None:
    assert dataplan.Planner([], Snapshot(), Snapshot()).plan(dataplan.Details()) == []
