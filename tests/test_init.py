"""`init`: complete the `database:` section of dbos-config.yaml from the app's migration tool,
as a textual edit that keeps comments, after showing the diff and asking (docs/behaviour.md)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import one_json
from pgharness import invoke

OUTPUT_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "output.schema.json"

ALEMBIC_APP = """\
# my app (comments survive)
name: my-app  # the name
language: python
database:
  # the database
  app_db_name: my_app
  migrate:
    - "alembic upgrade head"  # keep this one

# a trailing comment
runtimeConfig:
  start: ["python3 main.py"]
"""


def valid(doc: dict[str, object]) -> dict[str, object]:
    from jsonschema import Draft202012Validator

    Draft202012Validator(json.loads(OUTPUT_SCHEMA.read_text())).validate(doc)
    return doc


def app(tmp_path: Path, marker: str, config: str | None) -> Path:
    (tmp_path / marker).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / marker).write_text("")
    if config is not None:
        (tmp_path / "dbos-config.yaml").write_text(config)
    return tmp_path / "dbos-config.yaml"


def test_alembic_gets_its_rollback_and_nothing_else_changes(tmp_path: Path) -> None:
    cfg = app(tmp_path, "alembic.ini", ALEMBIC_APP)
    result = invoke("init", "--yes", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "+  rollback:" in result.stdout and "+    - alembic downgrade -1" in result.stdout
    lines = ALEMBIC_APP.splitlines(keepends=True)
    assert cfg.read_text() == "".join([*lines[:8], "  rollback:\n", "    - alembic downgrade -1\n", *lines[8:]])
    assert invoke("validate", cwd=tmp_path).returncode == 0
    again = invoke("init", "--yes", cwd=tmp_path)  # migrate and rollback set: never overwritten
    assert again.returncode == 0 and "nothing to add" in again.stdout and cfg.read_text().count("rollback") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "alembic.ini",
        "dbos-config.yaml",
    ]  # no temp file left


@pytest.mark.parametrize(
    ("marker", "migrate", "rollback"),
    [
        ("knexfile.ts", "npx knex migrate:latest", "npx knex migrate:rollback"),
        ("prisma/schema.prisma", "npx prisma migrate deploy", None),
        ("drizzle.config.ts", "npx drizzle-kit migrate", None),
    ],
)
def test_each_tool_writes_its_commands_as_one_json_document(
    tmp_path: Path, marker: str, migrate: str, rollback: str | None
) -> None:
    cfg = app(tmp_path, marker, "name: my-app\nlanguage: node\n# end\n")
    result = invoke("init", "--yes", "-o", "json", cwd=tmp_path)
    doc = valid(one_json(result.stdout))
    assert result.returncode == 0 and doc["written"] is True, result.stderr
    assert doc["added"] == (["migrate", "rollback"] if rollback else ["migrate"])
    text = cfg.read_text()
    assert text.startswith("name: my-app\nlanguage: node\n# end\ndatabase:\n  migrate:\n") and migrate in text
    assert (rollback in text) if rollback else ("rollback" not in text)
    assert invoke("validate", cwd=tmp_path).returncode == 0


def test_without_a_terminal_or_yes_it_shows_the_diff_and_writes_nothing(tmp_path: Path) -> None:
    cfg = app(tmp_path, "alembic.ini", ALEMBIC_APP)
    result = invoke("init", cwd=tmp_path)
    assert result.returncode == 0 and "+  rollback:" in result.stdout and "--yes" in result.stdout
    assert cfg.read_text() == ALEMBIC_APP
    dry = invoke("init", "--dry-run", "--yes", cwd=tmp_path)
    assert dry.returncode == 0 and "+  rollback:" in dry.stdout and cfg.read_text() == ALEMBIC_APP


def test_on_a_terminal_it_asks_before_writing(tmp_path: Path) -> None:
    cfg = app(tmp_path, "alembic.ini", ALEMBIC_APP)
    refused = invoke("init", cwd=tmp_path, answers=["n"])
    assert refused.returncode == 5 and cfg.read_text() == ALEMBIC_APP
    asked_json = invoke("init", "-o", "json", cwd=tmp_path, answers=["n"])  # the diff is seen before the question
    assert asked_json.returncode == 5 and "+  rollback:" in asked_json.stderr and one_json(asked_json.stdout)["diff"]
    written = invoke("init", cwd=tmp_path, answers=["yes"])
    assert written.returncode == 0 and "alembic downgrade -1" in cfg.read_text()


def test_a_symlinked_config_is_refused(tmp_path: Path) -> None:
    real = tmp_path / "elsewhere.yaml"
    real.write_text("name: my-app\n")
    app(tmp_path, "alembic.ini", None)
    os.symlink(real, tmp_path / "dbos-config.yaml")
    result = invoke("init", "--yes", cwd=tmp_path)
    assert result.returncode == 2 and "symbolic link" in result.stderr and real.read_text() == "name: my-app\n"


def test_no_tool_a_flow_section_or_an_invalid_result_is_exit_2_and_nothing_written(tmp_path: Path) -> None:
    (tmp_path / "dbos-config.yaml").write_text("name: my-app\n")
    none = invoke("init", "--yes", cwd=tmp_path)
    assert none.returncode == 2 and "no migration tool found" in none.stderr
    flow = app(tmp_path, "alembic.ini", "name: my-app\ndatabase: {app_db_name: x_app}\n")
    result = invoke("init", "--yes", cwd=tmp_path)
    assert result.returncode == 2 and "by hand" in result.stderr and "x_app}" in flow.read_text()
    bad = app(tmp_path, "alembic.ini", "name: my-app\ndatabse: {}\n")
    result = invoke("init", "--yes", cwd=tmp_path)
    assert result.returncode == 2 and "would not be valid" in result.stderr and "databse" in bad.read_text()
    assert "database:" not in bad.read_text()


def test_the_inserted_lines_keep_the_files_line_ends_and_indentation() -> None:
    from dbos_migrate.settings.initconfig import Tool, complete

    knex = Tool("knex", "knexfile.js", ("npx knex migrate:latest",), ("npx knex migrate:rollback",))
    text = "name: my-app\r\ndatabase:\r\n    app_db_name: x_app # four spaces\r\nenv: {}\r\n"
    new, added = complete(text, knex)
    assert added == ["migrate", "rollback"]
    assert new == (
        "name: my-app\r\ndatabase:\r\n    app_db_name: x_app # four spaces\r\n"
        "    migrate:\r\n      - npx knex migrate:latest\r\n"
        "    rollback:\r\n      - npx knex migrate:rollback\r\nenv: {}\r\n"
    )
