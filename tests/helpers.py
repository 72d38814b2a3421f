"""Small helpers for the CLI tests: write configs, query the server, read JSON output."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import psycopg
from hypothesis import settings
from pgharness import with_dbname


def examples(n: int) -> int:
    """`n` Hypothesis examples, or the mutation profile's smaller count under HYPOTHESIS_PROFILE=mutation
    (an explicit max_examples would otherwise override the profile; see docs/mutation.md)."""
    if os.environ.get("HYPOTHESIS_PROFILE") == "mutation":
        return min(n, settings().max_examples)
    return n


def write_config(
    directory: Path,
    *,
    name: str | None = "test-app",
    migrate: list[str] | None = None,
    rollback: list[str] | None = None,
    app_db_name: str | None = None,
    extra: str = "",
) -> Path:
    """A dbos-config.yaml in `directory`; commands are written as YAML-quoted strings."""
    lines = []
    if name is not None:
        lines.append(f"name: {json.dumps(name)}")
    db: list[str] = []
    if app_db_name is not None:
        db.append(f"  app_db_name: {app_db_name}")
    if migrate is not None:
        db.append("  migrate:" + ("" if migrate else " []"))
        db.extend(f"    - {json.dumps(c)}" for c in migrate)
    if rollback is not None:
        db.append("  rollback:" + ("" if rollback else " []"))
        db.extend(f"    - {json.dumps(c)}" for c in rollback)
    if db:
        lines.append("database:")
        lines.extend(db)
    text = "\n".join(lines) + "\n" + extra
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "dbos-config.yaml"
    path.write_text(text)
    return path


def query(
    instance_url: str, sql: str, params: tuple[Any, ...] = (), dbname: str | None = None
) -> list[tuple[Any, ...]]:
    url = with_dbname(instance_url, dbname) if dbname else instance_url
    with psycopg.connect(url, autocommit=True, connect_timeout=10) as conn:
        cur = conn.execute(sql, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def db_exists(instance_url: str, name: str) -> bool:
    return bool(query(instance_url, "SELECT 1 FROM pg_database WHERE datname = %s", (name,)))


def one_json(stdout: str) -> dict[str, Any]:
    """stdout must be exactly one JSON document."""
    doc = json.loads(stdout)
    assert isinstance(doc, dict)
    return doc


def history_rows(instance_url: str, app_db: str) -> list[dict[str, Any]]:
    with psycopg.connect(with_dbname(instance_url, app_db), autocommit=True) as conn:
        cur = conn.execute("SELECT * FROM dbos_migrate.history ORDER BY id")
        names = [d.name for d in cur.description or []]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
