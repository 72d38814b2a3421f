"""Start-up stays light without any cache: --help, --version and validate never load the
database driver, and a valid config needs no JSON Schema library (docs/architecture.md)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from helpers import write_config

PROBE = """
import sys
sys.argv = ["dbos-migrate", *{args!r}]
from dbos_migrate.cli import console
try:
    console()
except SystemExit:
    pass
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"psycopg", "jsonschema", "yaml", "rich", "pydantic"}})
sys.stderr.write("LOADED=" + ",".join(heavy) + "\\n")
"""


def loaded_modules(args: list[str], cwd: Path) -> set[str]:
    out = subprocess.run([sys.executable, "-c", PROBE.format(args=args)], cwd=cwd, env=dict(os.environ),
                         capture_output=True, text=True, timeout=120)  # fmt: skip
    line = [ln for ln in out.stderr.splitlines() if ln.startswith("LOADED=")]
    assert line, out.stderr
    return {m for m in line[-1][len("LOADED=") :].split(",") if m}


def test_help_version_and_validate_never_import_psycopg(tmp_path: Path) -> None:
    write_config(tmp_path, app_db_name="x_app", migrate=["true"])
    assert not loaded_modules(["--help"], tmp_path) & {"psycopg", "yaml", "jsonschema"}
    assert not loaded_modules(["--version"], tmp_path) & {"psycopg", "yaml", "jsonschema"}
    valid = loaded_modules(["validate"], tmp_path)
    assert "psycopg" not in valid and "yaml" in valid
    assert "jsonschema" not in valid  # a valid config needs no messages: the quick check suffices
    (tmp_path / "dbos-config.yaml").write_text("name: x\ndatabse: {}\n")
    assert "jsonschema" in loaded_modules(["validate"], tmp_path)  # messages for the bad one


def test_no_cache_or_gate_files_are_written(tmp_path: Path) -> None:
    """A run writes nothing outside what the user asked for: no cache dir, no gate files."""
    write_config(tmp_path, app_db_name="x_app", migrate=["true"])
    home, cache, tmp = tmp_path / "home", tmp_path / "cache", tmp_path / "tmp"
    for d in (home, cache, tmp):
        d.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(cache), TMPDIR=str(tmp))
    for args in (["validate"], ["up", "--dry-run", "-D", "postgresql://u@127.0.0.1:1/x"], ["--version"]):
        subprocess.run([sys.executable, "-m", "dbos_migrate", *args], cwd=tmp_path, env=env,
                       capture_output=True, timeout=120, check=False)  # fmt: skip
    assert [list(d.iterdir()) for d in (home, cache, tmp)] == [[], [], []]
