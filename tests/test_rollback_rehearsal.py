"""The rollback, rehearsed (docs/rehearsal.md, "The rollback"; docs/recovery.md): `plan --rehearse`
runs database.rollback on the scratch copy after the migrations and says whether it restores
the schema; `down --rehearse` shows what a rollback would destroy before the guard asks.
Against real PostgreSQL, with psql commands."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jsonschema
from helpers import one_json, query, write_config
from inmemory import InMemoryContext
from pgharness import invoke

from dbos_migrate import verbs
from dbos_migrate.errors import GuardRefused
from dbos_migrate.events import Event, GuardWarning
from dbos_migrate.rehearse.result import RehearsalDone

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "output.schema.json").read_text())

MIGRATE = "psql -v ON_ERROR_STOP=1 -qc 'ALTER TABLE t ADD COLUMN c int; CREATE TABLE u (x int PRIMARY KEY)'"
FULL_ROLLBACK = "psql -v ON_ERROR_STOP=1 -qc 'DROP TABLE u; ALTER TABLE t DROP COLUMN c'"
FORGETFUL_ROLLBACK = "psql -v ON_ERROR_STOP=1 -qc 'DROP TABLE u'"


def valid(doc: dict[str, Any]) -> dict[str, Any]:
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    return doc


def make_app(pg_url: str, app_db: str) -> None:
    query(pg_url, f'CREATE DATABASE "{app_db}"')
    query(
        pg_url,
        "CREATE TABLE t (id int PRIMARY KEY, name text); CREATE TABLE keep (id int);"
        "INSERT INTO keep VALUES (1), (2), (3); INSERT INTO t VALUES (1, 'a'), (2, NULL), (3, 'c')",
        dbname=app_db,
    )


def plan_json(cfg: Path, pg_url: str, *args: str) -> tuple[int, dict[str, Any]]:
    result = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url, "-o", "json", *args)
    return result.returncode, valid(one_json(result.stdout))


def test_a_rollback_that_restores_the_schema(tmp_path: Path, pg_url: str, app_db: str) -> None:
    make_app(pg_url, app_db)
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[MIGRATE], rollback=[FULL_ROLLBACK])
    code, doc = plan_json(cfg, pg_url)
    assert code == 0, doc
    rollback = doc["rehearsal"]["rollback"]
    assert rollback["ran"] is True and rollback["restores"] is True and rollback["differences"] == []
    assert [c["status"] for c in rollback["commands"]] == ["succeeded"]
    text = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url)
    assert "rollback: restores the schema" in text.stdout


def test_a_forgotten_drop_column_is_left_over(tmp_path: Path, pg_url: str, app_db: str) -> None:
    make_app(pg_url, app_db)
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[MIGRATE], rollback=[FORGETFUL_ROLLBACK])
    code, doc = plan_json(cfg, pg_url)
    assert code == 0, doc  # plan reports; --strict refuses
    rollback = doc["rehearsal"]["rollback"]
    assert rollback["ran"] is True and rollback["restores"] is False
    assert [(d["object"], d["kind"], d["issue"]) for d in rollback["differences"]] == [
        ("public.t.c", "column", "left over")
    ]
    text = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url)
    assert "rollback: does NOT restore the schema" in text.stdout and "column public.t.c left over" in text.stdout
    summary = tmp_path / "summary.md"
    github = invoke(
        "plan",
        "--rehearse",
        "-c",
        cfg,
        "-D",
        pg_url,
        env={"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)},
    )
    assert github.returncode == 0, github.stdout + github.stderr
    assert "column public.t.c left over" in summary.read_text()
    strict, refused = plan_json(cfg, pg_url, "--strict")
    assert strict == 6 and "public.t.c" in refused["error"]["message"]
    off, unchecked = plan_json(cfg, pg_url, "--strict", "--no-rollback-check")
    assert off == 0 and unchecked["rehearsal"]["rollback"] is None
    assert query(
        pg_url,
        "SELECT count(*) FROM pg_catalog.pg_attribute WHERE attrelid = 'public.t'::regclass AND attname = 'c'",
        dbname=app_db,
    ) == [(0,)]


def test_a_rollback_that_fails_on_the_scratch_copy_names_its_command_and_exit_code(
    tmp_path: Path, pg_url: str, app_db: str
) -> None:
    make_app(pg_url, app_db)
    failing = "psql -v ON_ERROR_STOP=1 -qc 'DROP TABLE no_such_table'"
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[MIGRATE], rollback=[FULL_ROLLBACK, failing])
    code, doc = plan_json(cfg, pg_url)
    assert code == 0, doc
    rollback = doc["rehearsal"]["rollback"]
    assert rollback["restores"] is False and rollback["failed"]["command"] == failing
    assert rollback["failed"]["exit_code"] == 1
    text = invoke("plan", "--rehearse", "-c", cfg, "-D", pg_url)
    assert f"rollback: failed on the scratch database (exit code 1): {failing}" in text.stdout
    assert plan_json(cfg, pg_url, "--strict")[0] == 6


# ---------------------------------------------------------------------------- down --rehearse

DESTRUCTIVE = "psql -v ON_ERROR_STOP=1 -qc 'DROP TABLE keep; ALTER TABLE t DROP COLUMN name'"


def test_down_rehearse_dry_run_counts_what_the_rollback_destroys_and_writes_nothing(
    tmp_path: Path, pg_url: str, app_db: str
) -> None:
    make_app(pg_url, app_db)
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"], rollback=[DESTRUCTIVE])
    result = invoke("down", "--rehearse", "--dry-run", "-c", cfg, "-D", pg_url, "-o", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    doc = valid(one_json(result.stdout))
    assert [(d["object"], d["kind"], d["rows"]) for d in doc["rehearsal"]["destroys"]] == [
        ("public.keep", "table", 3),
        ("public.t.name", "column", 2),
    ]
    assert {c["rule"] for c in doc["changes"]} == {"BRK001", "BRK002"}
    text = invoke("down", "--rehearse", "--dry-run", "-c", cfg, "-D", pg_url)
    assert "drops public.keep: 3 rows" in text.stdout and "drops public.t.name: 2 non-NULL values" in text.stdout
    assert query(pg_url, "SELECT count(*) FROM keep", dbname=app_db) == [(3,)]  # the real database is untouched
    assert query(pg_url, "SELECT count(name) FROM t", dbname=app_db) == [(2,)]


def test_down_rehearse_shows_the_cost_before_the_guard_asks(tmp_path: Path, pg_url: str, app_db: str) -> None:
    from dbos_migrate.verbs.rehearsal import down as rehearsed_down

    make_app(pg_url, app_db)
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"], rollback=[DESTRUCTIVE])
    options = verbs.DownOptions(config=str(cfg), db_url=pg_url, production=True)
    events: list[Event] = []
    refused = rehearsed_down(InMemoryContext({"PATH": os.environ["PATH"]}, answers=["no"]), options, events.append)
    assert isinstance(refused.error, GuardRefused)
    kinds = [type(e) for e in events]
    assert kinds.index(RehearsalDone) < kinds.index(GuardWarning)
    done = events[kinds.index(RehearsalDone)]
    assert isinstance(done, RehearsalDone) and done.rehearsal.destroys is not None
    assert [loss.describe() for loss in done.rehearsal.destroys] == [
        "drops public.keep: 3 rows",
        "drops public.t.name: 2 non-NULL values",
    ]
    assert query(pg_url, "SELECT count(*) FROM keep", dbname=app_db) == [(3,)]
    confirmed = rehearsed_down(InMemoryContext({"PATH": os.environ["PATH"]}, answers=[app_db]), options, lambda e: None)
    assert confirmed.ok, confirmed.error
    assert query(pg_url, "SELECT to_regclass('public.keep')", dbname=app_db) == [(None,)]
