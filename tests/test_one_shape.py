"""One shape for every command: `-o text|json`, `-q` and `-v` are accepted everywhere, and
`url` and `postgres start|stop|status` print one document the schema accepts (docs/behaviour.md)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import write_config
from pgharness import free_port, invoke
from test_usage_errors import command_paths

OUTPUT_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "output.schema.json"


def cli(*args: object, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = invoke(*args, env=env)
    return result.returncode, result.stdout, result.stderr


def valid(doc: dict[str, object]) -> dict[str, object]:
    from jsonschema import Draft202012Validator

    Draft202012Validator(json.loads(OUTPUT_SCHEMA.read_text())).validate(doc)
    return doc


def test_every_command_takes_output_quiet_and_verbose() -> None:
    refused = []
    for path in command_paths():
        for options in (["-o", "json", "-q"], ["--output=text", "--verbose"]):
            code, _, err = cli(*path, *options, "--help")
            if code != 0:
                refused.append(f"{' '.join(path)} {' '.join(options)}: {err.strip().splitlines()[-1:]}")
    assert not refused, "\n".join(refused)


def test_url_prints_one_document(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, app_db_name="shape_app", migrate=["true"])
    code, out, _ = cli(
        "url", "-c", cfg, "-D", "postgresql://u@db.example:5432", "-o", "json", env={"PGPASSWORD": "s3cret-pw"}
    )
    doc = valid(json.loads(out))
    assert code == 0 and doc["url"] == "postgresql://u:***@db.example:5432/shape_app" and "s3cret" not in out
    code, out, _ = cli("url", "-c", tmp_path / "missing.yaml", "-o", "json")
    doc = valid(json.loads(out))
    assert code == 2 and doc["ok"] is False and doc["url"] is None


def test_postgres_status_prints_one_document(reachable_tmp: Path) -> None:
    env = {"DBOS_MIGRATE_HOME": str(reachable_tmp / "home")}
    port = free_port()
    code, out, _ = cli("postgres", "status", "-p", port, "-o", "json", env=env)
    doc = valid(json.loads(out))
    assert code == 1 and doc["command"] == "postgres status" and doc["running"] is False
    code, out, err = cli("postgres", "status", "-p", port, "-q", env=env)
    assert code == 1 and out == "" and err == ""
