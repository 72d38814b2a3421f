"""`--env-file` honours every variable the tool reads, the options' DBOS_MIGRATE_* included,
before or after the command, never over the real environment or a flag; a file that cannot
be read is still one JSON document under -o json (docs/behaviour.md, "Options, environment
and env files"). In-process, through `cli.run`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import write_config
from pgharness import invoke

OUTPUT_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "output.schema.json"


def cli(*args: object) -> tuple[int, str, str]:
    result = invoke(*args)
    return result.returncode, result.stdout, result.stderr


def valid(doc: dict[str, object]) -> dict[str, object]:
    from jsonschema import Draft202012Validator

    Draft202012Validator(json.loads(OUTPUT_SCHEMA.read_text())).validate(doc)
    return doc


@pytest.fixture(autouse=True)
def no_option_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    """The real environment sets none of the options (click reads the process's own)."""
    for key in list(os.environ):
        if key.startswith("DBOS_MIGRATE_") and key != "DBOS_MIGRATE_TEST_DATABASE_URL":
            monkeypatch.delenv(key)


def test_option_variables_in_an_env_file_are_read(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    env = tmp_path / "deploy.env"
    env.write_text(
        f"DBOS_MIGRATE_DB_URL={pg_url}\nDBOS_MIGRATE_OUTPUT=json\nexport DBOS_MIGRATE_DRY_RUN=yes\n"
        "DBOS_MIGRATE_SYSTEM_DB=skip\nDBOS_MIGRATE_LOCK_TIMEOUT=7\n"
    )
    for args in (["--env-file", env, "up", "-c", cfg], ["up", "-c", cfg, "--env-file", env]):
        code, out, err = cli(*args)
        assert code == 0, out + err
        doc = valid(json.loads(out))
        assert doc["target_source"] == "--db-url" and doc["dry_run"] is True, doc
    code, out, err = cli("--env-file", env, "status", "-c", cfg)  # status went to localhost:5432 before
    assert code in (0, 3) and json.loads(out)["target_source"] == "--db-url", out + err


def test_the_environment_and_flags_win_over_the_file(
    tmp_path: Path, pg_url: str, app_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    cfg = write_config(tmp_path, app_db_name="from_config", migrate=["true"])
    env = tmp_path / ".env"
    env.write_text(f"DBOS_MIGRATE_APP_DB_NAME=from_file\nDBOS_MIGRATE_DB_URL={pg_url}\nDBOS_MIGRATE_DRY_RUN=1\n")
    later = tmp_path / "later.env"
    later.write_text("DBOS_MIGRATE_APP_DB_NAME=from_later_file\nDBOS_MIGRATE_OUTPUT=json\n")

    code, out, _ = cli("--env-file", env, "up", "-c", cfg, "--env-file", later, "--system-db", "skip")
    assert code == 0 and json.loads(out)["app_database"] == "from_file"  # the first file wins

    flag = cli("--env-file", env, "--env-file", later, "up", "-c", cfg, "--app-db-name", app_db)
    assert json.loads(flag[1])["app_database"] == app_db

    monkeypatch.setenv("DBOS_MIGRATE_APP_DB_NAME", "from_env")
    code, out, _ = cli("--env-file", env, "--env-file", later, "up", "-c", cfg, "--system-db", "skip")
    assert code == 0 and json.loads(out)["app_database"] == "from_env"


def test_a_bad_value_in_the_file_names_its_variable(tmp_path: Path) -> None:
    env = tmp_path / ".env"
    env.write_text("DBOS_MIGRATE_WAIT=soon\n")
    code, _, err = cli("up", "--env-file", env)
    assert code == 2
    assert "Invalid value for '--wait' (from DBOS_MIGRATE_WAIT in --env-file): 'soon' is not a number" in err


@pytest.mark.parametrize(
    "args",
    [
        ["status", "-o", "json", "--env-file", "{missing}"],
        ["--env-file", "{missing}", "status", "-o", "json"],
        ["up", "--output=json", "--env-file", "{directory}"],
    ],
)
def test_an_env_file_that_cannot_be_read_is_one_json_document(tmp_path: Path, args: list[str]) -> None:
    paths = {"{missing}": str(tmp_path / "missing.env"), "{directory}": str(tmp_path)}
    code, out, err = cli(*(paths.get(a, a) for a in args))
    doc = valid(json.loads(out))
    assert code == 2 and doc["ok"] is False and doc["error"]["code"] == "usage"  # type: ignore[index]
    assert doc["command"] in ("status", "up")
    message = doc["error"]["message"]  # type: ignore[index]
    assert "--env-file" in message and ("no such file" in message or "a directory" in message), message
    assert message in err
