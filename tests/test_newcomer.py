"""The newcomer's path: `validate` says every problem in one run, and the README's main
command on the bundled sample prints no warning (docs/behaviour.md). In-process."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from pgharness import invoke

SAMPLE = Path(__file__).resolve().parent.parent / "sample_app" / "dbos-config.yaml"


def cli(*args: object, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    result = invoke(*args, env=environ)
    return result.returncode, result.stdout, result.stderr


def test_validate_reports_the_app_database_name_with_the_schema_problems(tmp_path: Path) -> None:
    cfg = tmp_path / "dbos-config.yaml"
    cfg.write_text(
        "name: app\ndatabase:\n  app_db_name: Bad-Name\n  migrate: [alembic upgrade head]\n"
        "databse: {}\ndatabase_url: postgresql://u:pw@localhost:54x2/db\n"
    )
    code, _, err = cli("validate", "-c", cfg)
    assert code == 2
    assert f"{cfg}:3:16: database.app_db_name: app database name 'Bad-Name'" in err  # hidden before
    assert f"{cfg}:5:1: databse: unknown key" in err and f"{cfg}:6:" in err
    assert "3 problems" in err
    code, out, _ = cli("validate", "-c", cfg, "-o", "json")
    doc = json.loads(out)
    assert [e["path"] for e in doc["errors"]] == ["database.app_db_name", "databse", "database_url"]
    assert doc["ok"] is False and doc["command"] == "validate"


def test_the_quick_start_prints_no_warning(pg_url: str, app_db: str) -> None:
    """The README's main command, `up -c sample_app/dbos-config.yaml`: the sample has no DBOS
    toolchain installed, which is said once, in plain words, and not as a warning."""
    path = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")  # alembic
    environ = {"PATH": path}
    code, out, err = cli("up", "-c", SAMPLE, "-D", pg_url, "--app-db-name", app_db, "-q", environ=environ)
    assert code == 0, out + err
    assert "warning" not in (out + err).lower() and "DBOS tables" not in out + err
    code, out, err = cli("up", "-c", SAMPLE, "-D", pg_url, "--app-db-name", app_db, environ=environ)
    assert code == 0 and "warning" not in (out + err).lower(), out + err
    said = [line for line in (out + err).splitlines() if "DBOS tables" in line]
    assert len(said) == 1 and "the app creates its DBOS tables at its first launch" in said[0], said
