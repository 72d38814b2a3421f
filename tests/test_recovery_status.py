"""`status` after a failed deploy (docs/recovery.md): the last run's outcome from the history,
its failed command and exit code, when, and the recovery command line with the target as
written and the password masked. Against real PostgreSQL (a scram cluster for the masking)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
from helpers import one_json, write_config
from pgharness import PASSWORD, ClusterFactory, invoke

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "output.schema.json").read_text())


def valid(doc: dict[str, Any]) -> dict[str, Any]:
    jsonschema.Draft202012Validator(SCHEMA).validate(doc)
    return doc


def test_status_names_the_failed_command_and_the_recovery_command(tmp_path: Path, own_cluster: ClusterFactory) -> None:
    cluster = own_cluster()
    url = f"postgresql://postgres:***@localhost:{cluster.port}/postgres?connect_timeout=10"
    env: dict[str, str | None] = {"PGPASSWORD": PASSWORD, "PGSERVICE": None, "HOME": str(tmp_path), "NO_COLOR": "1"}
    cfg = write_config(tmp_path, app_db_name="shop", migrate=["true", "exit 7"], rollback=["true"])
    failed = invoke("up", "-c", cfg, "--db-url", url, "--system-db", "skip", env=env)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    result = invoke("status", "-c", cfg, "--db-url", url, "-o", "json", env=env)
    assert result.returncode == 0, result.stdout + result.stderr
    last = valid(one_json(result.stdout))["last_run"]
    expected = f"dbos-migrate down -c {cfg} --db-url '{url}'"
    assert last["outcome"] == "failed" and last["direction"] == "up" and last["at"]
    assert last["failed_command"] == {"index": 2, "command": "exit 7", "exit_code": 7}
    assert last["next_command"] == expected
    text = invoke("status", "-c", cfg, "--db-url", url, env=env)
    assert "last run        failed: up" in text.stdout and "exit 7 at " in text.stdout
    assert f"next            {expected}" in text.stdout
    assert PASSWORD not in result.stdout + text.stdout

    # The recovery command, as printed, works (the password from PGPASSWORD); then status says so.
    down = invoke(*expected.split()[1:3], cfg, "--db-url", url, env=env)
    assert down.returncode == 0, down.stdout + down.stderr
    after = valid(one_json(invoke("status", "-c", cfg, "--db-url", url, "-o", "json", env=env).stdout))
    assert after["last_run"]["outcome"] == "succeeded" and after["last_run"]["direction"] == "down"
    assert after["last_run"]["next_command"] is None
