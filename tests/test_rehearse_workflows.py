"""Workflow checks of `plan --rehearse` / `up --fail-on-breaking`: the unfinished workflows of
the app's DBOS system database, written by the real `dbos` 3.4.0 (the `dbos_py` venv), and
by hand in the shapes older DBOS generations write (docs/rehearsal.md, "Workflow checks").

A PENDING workflow is made by a small DBOS app whose workflow runs a step and then blocks in
DBOS.recv: the app ends itself (os._exit) once the workflow has started, which leaves the
row PENDING exactly as a crashed or redeployed executor would.
"""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import one_json, query, write_config
from pgharness import drop_database, invoke, with_dbname, with_user
from psycopg import sql
from test_rehearse import app_config, make_app, valid_output

from dbos_migrate.engine.scrub import Scrubber
from dbos_migrate.rehearse import rules, workflows

APP = """
import os, sys, threading
from dbos import DBOS, DBOSConfig

sys_url, version, mode = sys.argv[1:4]
config: DBOSConfig = {"name": "wf-test", "system_database_url": sys_url, "application_version": version}
DBOS(config=config)
started = threading.Event()


@DBOS.step()
def update_orders() -> int:
    return 1


@DBOS.workflow()
def checkout() -> int:
    n = update_orders()
    if mode == "block":
        started.set()
        DBOS.recv("never", timeout_seconds=3600)
    return n


DBOS.launch()
handle = DBOS.start_workflow(checkout)
if mode == "block":
    if not started.wait(120):
        os._exit(3)
    print("STARTED", handle.workflow_id, flush=True)
    os._exit(0)  # the workflow stays PENDING, as when an executor dies
print("DONE", handle.get_result(), flush=True)
DBOS.destroy()
"""

DROP_NOTE = "ALTER TABLE orders DROP COLUMN note"


def run_app(dbos_py: Path, tmp_path: Path, sys_url: str, version: str, mode: str) -> None:
    script = tmp_path / "wf_app.py"
    script.write_text(APP)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "DBOS"))}
    done = subprocess.run(
        [str(dbos_py / "python"), str(script), sys_url, version, mode],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=180,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert ("STARTED" if mode == "block" else "DONE 1") in done.stdout


def system_rows(pg_url: str, app_db: str) -> list[tuple[Any, ...]]:
    return query(
        pg_url,
        "SELECT status, application_version, name FROM dbos.workflow_status ORDER BY created_at",
        dbname=f"{app_db}_dbos_sys",
    )


def test_unfinished_workflow_of_an_older_version(tmp_path: Path, pg_url: str, app_db: str, dbos_py: Path) -> None:
    """A PENDING workflow of version v1 meets a dropped column: reported beside the change,
    tied to it through its step update_orders, and the gate refuses; deploying v1 itself passes."""
    make_app(pg_url, app_db)
    run_app(dbos_py, tmp_path, with_dbname(pg_url, f"{app_db}_dbos_sys"), "v1", "block")
    assert system_rows(pg_url, app_db) == [("PENDING", "v1", "checkout")]
    cfg = app_config(tmp_path, app_db, DROP_NOTE)

    plan = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url, "-o", "json")
    assert plan.returncode == 0, plan.stderr
    doc = valid_output(one_json(plan.stdout))
    wf = doc["rehearsal"]["workflows"]
    assert wf["status"] == "found" and wf["schema_version"] == 125 and wf["unfinished"] == 1
    assert "migration 125" in wf["generation"] and "Python 3.x" in wf["generation"]
    (version,) = wf["versions"]
    assert (version["version"], version["count"], version["statuses"]) == ("v1", 1, {"PENDING": 1})
    assert version["names"] == [{"name": "checkout", "count": 1}] and version["oldest_age_s"] >= 0
    (change,) = doc["changes"]
    assert change["rule"] == "BRK002" and change["workflows"]["unfinished_other_versions"] == 1
    assert change["workflows"]["related"] == [
        {"version": "v1", "workflow": "checkout", "count": 1, "via": "step update_orders", "word": "order"}
    ]
    assert doc["rehearsal"]["verdict"] == {
        "refuse": True,
        "strict": False,
        "reasons": ["workflows"],
        "message": doc["rehearsal"]["verdict"]["message"],
    }

    gated = invoke("up", "--fail-on-breaking", "-c", cfg, "-D", pg_url)
    assert gated.returncode == 6, gated.stderr
    assert "meet 1 unfinished workflow(s) of another application version (v1: 1, oldest started" in gated.stderr
    assert "workflows: 1 unfinished of another version (v1: 1, oldest" in gated.stdout
    assert "may concern: checkout [v1] x1 via step update_orders" in gated.stdout
    assert "Python 3.x" in gated.stdout  # the generation found

    deploy_v1 = invoke(
        "up", "--fail-on-breaking", "-c", cfg, "-D", pg_url, "-o", "json", env={workflows.APPVERSION_ENV: "v1"}
    )
    assert deploy_v1.returncode == 0, deploy_v1.stderr
    applied = one_json(deploy_v1.stdout)
    assert applied["rehearsal"]["workflows"]["this_version"] == "v1"
    assert applied["rehearsal"]["verdict"]["refuse"] is False
    assert system_rows(pg_url, app_db) == [("PENDING", "v1", "checkout")]  # read, never written


def test_no_unfinished_workflow_passes_unless_strict(tmp_path: Path, pg_url: str, app_db: str, dbos_py: Path) -> None:
    make_app(pg_url, app_db)
    run_app(dbos_py, tmp_path, with_dbname(pg_url, f"{app_db}_dbos_sys"), "v1", "done")
    assert system_rows(pg_url, app_db) == [("SUCCESS", "v1", "checkout")]
    cfg = app_config(tmp_path, app_db, DROP_NOTE)

    strict_plan = invoke("plan", "--rehearse", "--strict", "-c", cfg, "-D", pg_url, "-o", "json")
    assert strict_plan.returncode == 6, strict_plan.stderr
    doc = valid_output(one_json(strict_plan.stdout))
    assert doc["error"]["code"] == "breaking_change" and doc["error"]["message"].startswith("--strict: ")
    assert doc["rehearsal"]["workflows"]["status"] == "none" and doc["changes"][0]["workflows"]["related"] == []
    strict_up = invoke("up", "--fail-on-breaking", "--strict", "-c", cfg, "-D", pg_url)
    assert strict_up.returncode == 6 and "--strict refuses any breaking change" in strict_up.stderr

    gated = invoke("up", "--fail-on-breaking", "-c", cfg, "-D", pg_url)
    assert gated.returncode == 0, gated.stderr
    assert "workflows: no unfinished workflow of another application version" in gated.stdout
    assert "gate: passes: 1 breaking change(s) (BRK002 public.orders.note), but no unfinished workflow" in gated.stdout
    columns = query(
        pg_url, "SELECT column_name FROM information_schema.columns WHERE table_name = 'orders'", dbname=app_db
    )
    assert ("note",) not in columns


def test_workflows_unknown_refuse_a_breaking_change(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """A SQLite system database cannot be read from here: unknown, and the gate refuses."""
    make_app(pg_url, app_db)
    (tmp_path / "step.sql").write_text(DROP_NOTE)
    from test_rehearse import MIGRATE

    cfg = write_config(
        tmp_path, app_db_name=app_db, migrate=[MIGRATE], extra="system_database_url: sqlite:///dbos.sqlite\n"
    )
    gated = invoke("up", "--fail-on-breaking", "-c", cfg, "-D", pg_url, "-o", "json")
    assert gated.returncode == 6, gated.stderr
    doc = valid_output(one_json(gated.stdout))
    wf = doc["rehearsal"]["workflows"]
    assert wf["status"] == "unknown" and "is not PostgreSQL" in wf["reason"]
    assert doc["rehearsal"]["verdict"]["reasons"] == ["workflows-unknown"]
    assert doc["changes"][0]["workflows"]["status"] == "unknown"


# ---------------------------------------------------------------------------- older generations

STATUS_014 = """workflow_uuid text PRIMARY KEY, status text, name text, authenticated_user text, assumed_role text,
    authenticated_roles text, request text, output text, error text, executor_id text,
    created_at bigint NOT NULL DEFAULT (extract(epoch FROM now()) * 1000)::bigint,
    updated_at bigint NOT NULL DEFAULT (extract(epoch FROM now()) * 1000)::bigint, application_version text,
    application_id text, class_name varchar, config_name varchar, recovery_attempts bigint DEFAULT 0,
    queue_name text, workflow_timeout_ms bigint, workflow_deadline_epoch_ms bigint"""
OUTPUTS = "workflow_uuid text NOT NULL, function_id int NOT NULL, output text, error text"
GENERATIONS: dict[str, tuple[str, str]] = {
    # name: (DDL, the generation it must be named)
    "python-0.27": (
        f"""
        CREATE TABLE public.alembic_version (version_num varchar(32) PRIMARY KEY);
        INSERT INTO public.alembic_version VALUES ('27ac6900c6ad');
        CREATE TABLE dbos.workflow_status ({STATUS_014});
        CREATE TABLE dbos.operation_outputs ({OUTPUTS}, function_name text NOT NULL DEFAULT '', child_workflow_id text);
        CREATE TABLE dbos.workflow_inputs (workflow_uuid text PRIMARY KEY, inputs text NOT NULL);
        CREATE TABLE dbos.workflow_queue (workflow_uuid text PRIMARY KEY, queue_name text NOT NULL);
    """,
        "DBOS Python 0.x (alembic_version)",
    ),
    "python-1.14": (
        f"""
        CREATE TABLE dbos.dbos_migrations (version bigint PRIMARY KEY); INSERT INTO dbos.dbos_migrations VALUES (1);
        CREATE TABLE dbos.workflow_status ({STATUS_014}, inputs text, started_at_epoch_ms bigint,
            deduplication_id text, priority int NOT NULL DEFAULT 0);
        CREATE TABLE dbos.operation_outputs ({OUTPUTS}, function_name text NOT NULL DEFAULT '', child_workflow_id text);
    """,
        "DBOS Python 1.x (dbos_migrations 1)",
    ),
    "typescript-1.30": (
        f"""
        CREATE TABLE public.knex_migrations (id serial PRIMARY KEY, name varchar(255));
        CREATE TABLE dbos.workflow_status ({STATUS_014});
        CREATE TABLE dbos.operation_outputs ({OUTPUTS});
    """,
        "DBOS TypeScript 1.x/2.x (knex_migrations)",
    ),
    "typescript-3.5": (
        f"""
        CREATE TABLE dbos.dbos_migrations (version bigint PRIMARY KEY); INSERT INTO dbos.dbos_migrations VALUES (24);
        CREATE TABLE dbos.workflow_status ({STATUS_014}, inputs text, started_at_epoch_ms bigint,
            deduplication_id text, priority int NOT NULL DEFAULT 0);
        CREATE TABLE dbos.operation_outputs ({OUTPUTS}, function_name text NOT NULL DEFAULT '', child_workflow_id text);
        CREATE TABLE dbos.workflow_queue (workflow_uuid text PRIMARY KEY, queue_name text NOT NULL);
    """,
        "DBOS TypeScript 3.x (dbos_migrations 24)",
    ),
    "python-2.31": (
        f"""
        CREATE TABLE dbos.dbos_migrations (version bigint PRIMARY KEY); INSERT INTO dbos.dbos_migrations VALUES (108);
        CREATE TABLE dbos.application_versions (version_id text PRIMARY KEY, version_name text NOT NULL);
        CREATE TABLE dbos.workflow_status ({STATUS_014}, inputs text, started_at_epoch_ms bigint,
            deduplication_id text, priority int NOT NULL DEFAULT 0, delay_until_epoch_ms bigint, application_name text);
        CREATE TABLE dbos.operation_outputs ({OUTPUTS}, function_name text NOT NULL DEFAULT '', child_workflow_id text);
    """,
        "DBOS shared system schema, migration 108 (Python 2.x, TypeScript 4.x or Go)",
    ),
    "no-version-column": (
        """
        CREATE TABLE dbos.workflow_status (workflow_uuid text PRIMARY KEY, status text, name text);
    """,
        "unknown generation (no version table)",
    ),
}
ROWS = """
INSERT INTO dbos.workflow_status (workflow_uuid, status, name{ver}) VALUES
    ('a', 'PENDING', 'ship_orders'{v0}), ('b', 'ENQUEUED', 'ship_orders'{v0}), ('c', 'DELAYED', 'billing'{v1}),
    ('d', 'SUCCESS', 'ship_orders'{v0}), ('e', 'RETRIES_EXCEEDED', 'x'{v0}),
    ('f', 'MAX_RECOVERY_ATTEMPTS_EXCEEDED', 'x'{v0}), ('g', 'ERROR', 'x'{v0}), ('h', 'CANCELLED', 'x'{v0});
"""


@pytest.fixture
def scratch_db(pg_url: str) -> Iterator[str]:
    name = f"t_{uuid.uuid4().hex[:12]}_gen"
    query(pg_url, sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)).as_string(None))
    try:
        yield name
    finally:
        drop_database(pg_url, name)


def test_every_generation_is_read(pg_url: str, scratch_db: str) -> None:
    """The shapes DBOS 0.x-3.x and TypeScript 1.x-3.x write: the generation is named, the columns
    that exist are read, and only PENDING, ENQUEUED and DELAYED count as unfinished."""
    url = with_dbname(pg_url, scratch_db)
    for name, (ddl, expected) in GENERATIONS.items():
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(
                "DROP SCHEMA IF EXISTS dbos CASCADE; DROP TABLE IF EXISTS public.alembic_version, "
                "public.knex_migrations; CREATE SCHEMA dbos"
            )
            conn.execute(ddl.encode())
            has_version = name != "no-version-column"
            rows = ROWS.format(
                ver=", application_version" if has_version else "",
                v0=", 'v0'" if has_version else "",
                v1=", 'v1'" if has_version else "",
            )
            conn.execute(rows.encode())
            if "function_name" in ddl:
                conn.execute(
                    "INSERT INTO dbos.operation_outputs (workflow_uuid, function_id, function_name) "
                    "VALUES ('a', 1, 'reserve_stock')"
                )
            report = workflows.unknown("", None, "dbos", {})
            workflows.inspect(conn, report, 5, Scrubber([]))
        assert report.status == "found", (name, report.reason)
        assert report.generation == expected, name
        counts = {v.version: (v.count, v.statuses) for v in report.versions}
        if has_version:
            assert counts == {"v0": (2, {"PENDING": 1, "ENQUEUED": 1}), "v1": (1, {"DELAYED": 1})}, name
            assert report.missing_columns == []
        else:
            assert counts == {"": (3, {"PENDING": 1, "ENQUEUED": 1, "DELAYED": 1})}, name
            assert report.missing_columns == ["application_version", "created_at"]
        assert report.steps == ({("v0", "ship_orders"): ["reserve_stock"]} if "function_name" in ddl else {}), name


def test_unreadable_system_database_is_unknown(pg_url: str, scratch_db: str) -> None:
    url = with_dbname(pg_url, scratch_db)
    role = f"t_{uuid.uuid4().hex[:10]}_wf"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA dbos; CREATE TABLE dbos.workflow_status ({STATUS_014})".encode())
        conn.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD 'reader-pw'").format(sql.Identifier(role)))
    try:
        with psycopg.connect(with_user(url, role, "reader-pw"), autocommit=True) as conn:
            report = workflows.unknown("", None, "dbos", {})
            workflows.inspect(conn, report, 5, Scrubber([]))
        assert report.status == "unknown" and report.reason is not None
        assert "permission denied" in report.reason and report.generation == "unknown generation (no version table)"
    finally:
        query(pg_url, sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)).as_string(None))


def test_words_and_ties() -> None:
    assert workflows.words("updateOrders") == {"order"} and workflows.words("ship_categories") == {"ship", "category"}
    assert workflows.words("Checkout.process_addresses") == {"checkout", "address"}
    change = rules.Change("BRK002", "public.orders.note", "column note dropped", "table public.orders", "public.orders")
    assert workflows.object_words(change) == {"order", "note"}
    report = workflows.WorkflowReport(
        "found",
        this_version="v2",
        versions=[
            workflows.VersionCount("v1", 2, names=[("send_invoice", 1), ("checkout", 1)]),
            workflows.VersionCount("v2", 5, names=[("ship_orders", 5)]),
        ],
        steps={("v1", "checkout"): ["add_note"]},
    )
    found = workflows.ties(change, report)
    assert [(t.workflow, t.via, t.word) for t in found] == [("checkout", "step add_note", "note")]
