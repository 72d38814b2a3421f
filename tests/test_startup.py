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
except SystemExit as exc:
    sys.stderr.write(f"EXIT={{exc.code}}\\n")
heavy = sorted({{m.split(".")[0] for m in sys.modules}} & {{"psycopg", "jsonschema", "yaml", "rich", "pydantic"}})
sys.stderr.write("LOADED=" + ",".join(heavy) + "\\n")
sys.stderr.write("OURS=" + ",".join(sorted(m for m in sys.modules if m.startswith("dbos_migrate"))) + "\\n")
"""


def probe(args: list[str], cwd: Path) -> dict[str, set[str]]:
    """What a fresh process running `args` reported: EXIT (its status), LOADED (the heavy
    libraries it imported) and OURS (our own modules it imported)."""
    env = {k: v for k, v in os.environ.items() if k != "GITHUB_ACTIONS"}  # GitHub's renderer: not here
    out = subprocess.run(
        [sys.executable, "-c", PROBE.format(args=args)], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )
    found: dict[str, set[str]] = {}
    for line in out.stderr.splitlines():
        key, eq, value = line.partition("=")
        if eq and key in ("EXIT", "LOADED", "OURS"):
            found[key] = {m for m in value.split(",") if m}
    assert "LOADED" in found, out.stderr
    return found


def loaded_modules(args: list[str], cwd: Path) -> set[str]:
    return probe(args, cwd)["LOADED"]


def test_help_version_and_validate_never_import_psycopg(tmp_path: Path) -> None:
    write_config(tmp_path, app_db_name="x_app", migrate=["true"])
    assert not loaded_modules(["--help"], tmp_path) & {"psycopg", "yaml", "jsonschema"}
    assert not loaded_modules(["--version"], tmp_path) & {"psycopg", "yaml", "jsonschema"}
    valid = loaded_modules(["validate"], tmp_path)
    assert "psycopg" not in valid and "yaml" in valid
    assert "jsonschema" not in valid  # a valid config needs no messages: the quick check suffices
    (tmp_path / "dbos-config.yaml").write_text("name: x\ndatabse: {}\n")
    assert "jsonschema" in loaded_modules(["validate"], tmp_path)  # messages for the bad one


def test_help_and_version_load_no_renderer_and_no_event(tmp_path: Path) -> None:
    """--help and --version print a few lines: the renderers, the events and the records
    they carry are not imported for them (docs/architecture.md, "Start-up")."""
    for args in (["--help"], ["--version"]):
        ours = probe(args, tmp_path)["OURS"]
        assert not ours & {
            "dbos_migrate.events",
            "dbos_migrate.model",
            "dbos_migrate.report.text",
            "dbos_migrate.report.json",
            "dbos_migrate.report.github",
        }, args


def test_a_noop_up_loads_only_the_renderer_it_uses(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """A no-op `up` in text mode renders text: neither the JSON nor the GitHub renderer, no
    rehearsal, no JSON Schema library for a valid config."""
    write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    args = ["up", "-D", pg_url, "--system-db", "skip"]
    assert probe(args, tmp_path)["EXIT"] == {"0"}  # creates the database
    noop = probe(args, tmp_path)
    assert noop["EXIT"] == {"0"}
    assert noop["LOADED"] & {"psycopg", "jsonschema"} == {"psycopg"}
    ours = noop["OURS"]
    assert {"dbos_migrate.verbs.migrate", "dbos_migrate.report.text"} <= ours
    assert not ours & {"dbos_migrate.report.json", "dbos_migrate.report.github"}
    assert not {m for m in ours if m.startswith("dbos_migrate.rehearse")}


def test_no_cache_or_gate_files_are_written(tmp_path: Path) -> None:
    """A run writes nothing outside what the user asked for: no cache dir, no gate files."""
    write_config(tmp_path, app_db_name="x_app", migrate=["true"])
    home, cache, tmp = tmp_path / "home", tmp_path / "cache", tmp_path / "tmp"
    for d in (home, cache, tmp):
        d.mkdir()
    env = dict(os.environ, HOME=str(home), XDG_CACHE_HOME=str(cache), TMPDIR=str(tmp))
    for args in (["validate"], ["up", "--dry-run", "-D", "postgresql://u@127.0.0.1:1/x"], ["--version"]):
        subprocess.run(
            [sys.executable, "-m", "dbos_migrate", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            timeout=120,
            check=False,
        )
    assert [list(d.iterdir()) for d in (home, cache, tmp)] == [[], [], []]
