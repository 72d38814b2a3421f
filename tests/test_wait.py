"""`wait`: until the target accepts connections, like dbmate's `wait` (docs/behaviour.md)."""

from __future__ import annotations

import json
from pathlib import Path

from helpers import write_config
from pgharness import free_port, invoke

OUTPUT_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "output.schema.json"


def cli(*args: object) -> tuple[int, str, str]:
    result = invoke(*args)
    return result.returncode, result.stdout, result.stderr


def valid(doc: dict[str, object]) -> dict[str, object]:
    from jsonschema import Draft202012Validator

    Draft202012Validator(json.loads(OUTPUT_SCHEMA.read_text())).validate(doc)
    return doc


def test_wait_returns_once_the_server_accepts(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    code, out, err = cli("wait", "-c", cfg, "-D", pg_url)
    assert code == 0 and "accepts connections" in out, out + err
    code, out, _ = cli("wait", "-c", cfg, "-D", pg_url, "-o", "json", "-q")
    doc = valid(json.loads(out))
    assert code == 0 and doc["command"] == "wait" and doc["reachable"] is True and doc["exists"] is False


def test_wait_gives_up_after_its_time_with_exit_3(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, app_db_name="never_made", migrate=["true"])
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/postgres"
    code, out, _ = cli("wait", "-c", cfg, "-D", url, "--wait", "0.5", "-o", "json")
    doc = valid(json.loads(out))
    assert code == 3 and doc["reachable"] is False and doc["error"]["code"] == "database"  # type: ignore[index]
    assert "gave up after --wait 0.5s" in doc["error"]["message"]  # type: ignore[index]
