"""The validated-config cache and import isolation: what keeps start-up fast, and stays correct."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from helpers import write_config
from pgharness import run_cli

from dbos_migrate import __version__

PROBE = """
import sys
sys.argv = ["dbos-migrate", *{args!r}]
from dbos_migrate.cli import main
try:
    main()
except SystemExit:
    pass
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"psycopg", "jsonschema", "yaml", "rich", "pydantic"}})
sys.stderr.write("LOADED=" + ",".join(heavy) + "\\n")
"""


def loaded_modules(args: list[str], cwd: Path, env_extra: dict[str, str]) -> set[str]:
    import os

    env = dict(os.environ, **env_extra)
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    line = [ln for ln in out.stderr.splitlines() if ln.startswith("LOADED=")]
    assert line, out.stderr
    return {m for m in line[-1][len("LOADED=") :].split(",") if m}


def test_version_loads_nothing_heavy() -> None:
    probe = "import sys; sys.argv = ['dbos-migrate', '--version']; from dbos_migrate.entry import main; main(); "
    probe += "print(sorted(m for m in ('typer', 'psycopg', 'yaml', 'jsonschema') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.splitlines() == [f"dbos-migrate {__version__}", "[]"]


def test_help_version_and_validate_never_import_psycopg(tmp_path: Path) -> None:
    write_config(tmp_path, app_db_name="x_app", migrate=["true"])
    env = {"DBOS_MIGRATE_CACHE_DIR": str(tmp_path / "cache")}
    assert "psycopg" not in loaded_modules(["--help"], tmp_path, env)
    assert "psycopg" not in loaded_modules(["--version"], tmp_path, env)
    assert not loaded_modules(["--version"], tmp_path, env) & {"yaml", "jsonschema"}
    cold = loaded_modules(["validate"], tmp_path, env)
    assert "psycopg" not in cold and "yaml" in cold  # cold: really parses (and checks, see below)
    assert "jsonschema" not in cold  # a valid config needs no messages: the quick check suffices
    (tmp_path / "dbos-config.yaml").write_text("name: x\ndatabse: {}\n")
    assert "jsonschema" in loaded_modules(["validate"], tmp_path, env)  # messages for the bad one


def test_warm_cache_up_skips_yaml_and_jsonschema(tmp_path: Path, pg_url: str, app_db: str) -> None:
    write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    env = {"DBOS_MIGRATE_CACHE_DIR": str(tmp_path / "cache")}
    cold = loaded_modules(["up", "-q", "-D", pg_url], tmp_path, env)
    assert {"yaml", "psycopg"} <= cold and "jsonschema" not in cold
    warm = loaded_modules(["up", "-q", "-D", pg_url], tmp_path, env)
    assert "psycopg" in warm
    assert not warm & {"yaml", "jsonschema", "rich", "pydantic"}, warm


def test_cache_never_stores_substituted_values_and_revalidates_when_they_change(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    cfg = tmp_path / "dbos-config.yaml"
    cfg.write_text("name: app\nlanguage: ${APP_LANG}\ndatabase_url: ${SECRET_URL}\n")
    secret = "postgresql://u:TopSecretValue123@h/db"
    env: dict[str, str | None] = {"DBOS_MIGRATE_CACHE_DIR": str(cache), "APP_LANG": "python", "SECRET_URL": secret}
    assert run_cli("validate", "-c", cfg, env=env).returncode == 0
    assert run_cli("validate", "-c", cfg, env=env).returncode == 0  # warm
    for f in cache.iterdir():
        assert b"TopSecretValue123" not in f.read_bytes()
        assert f.stat().st_mode & 0o077 == 0
    assert cache.stat().st_mode & 0o077 == 0
    bad = run_cli("validate", "-c", cfg, env={**env, "APP_LANG": "cobol"})
    assert bad.returncode == 2 and "language: must be one of" in bad.stderr


def test_cache_follows_file_edits_and_survives_corruption(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    env: dict[str, str | None] = {"DBOS_MIGRATE_CACHE_DIR": str(cache)}
    cfg = write_config(tmp_path, migrate=["true"])
    assert run_cli("validate", "-c", cfg, env=env).returncode == 0
    entries = [f for f in cache.iterdir() if f.name.startswith("config-")]
    assert len(entries) == 1
    entries[0].write_text("{not json")
    assert run_cli("validate", "-c", cfg, env=env).returncode == 0
    json.loads(entries[0].read_text())  # rewritten
    cfg.write_text(cfg.read_text() + "databse: {}\n")
    edited = run_cli("validate", "-c", cfg, env=env)
    assert edited.returncode == 2 and "databse: unknown key" in edited.stderr
    off = run_cli("validate", "-c", cfg, env={"DBOS_MIGRATE_CACHE_DIR": str(tmp_path / "c2"), "DBOS_MIGRATE_NO_CACHE": "1"})
    assert off.returncode == 2 and not (tmp_path / "c2").exists()
