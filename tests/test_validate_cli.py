"""`dbos-migrate validate` as a user runs it, through `cli.main` in-process (the installed console
script itself is tested in test_packaging.py and test_quickstart.py)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

import pytest
from pgharness import invoke

from dbos_migrate import __version__
from dbos_migrate.settings import config

CLI = Path(sys.executable).parent / "dbos-migrate"
CONFIGS = sorted((Path(__file__).parent / "configs").glob("*.yaml"))
LOCATED = re.compile(
    r"^(?:error|warning): (?P<file>[^:\n]+):(?P<line>\d+):(?P<col>\d+): (?P<path>[^:\n]+): (?P<msg>.+)$"
)


def run(*args: str, cwd: Path | None = None, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environ: dict[str, str | None] = {k: None for k in os.environ if k == "GITHUB_ACTIONS" or k.startswith("DBOS")}
    environ["NO_COLOR"] = "1"
    environ.update(env or {})
    proc = invoke(*args, env=environ, cwd=cwd)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout, proc.stdout
    return proc


def write(tmp_path: Path, text: str, name: str = "dbos-config.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


BROKEN = """\
name: my-app
databse:
  migrate: [x]
database:
  migrate: alembic upgrade head
  app_db_nmae: foo
  port: nope
env:
  PORT: 8000
"""
BROKEN_WHERE = {
    ("databse", 2, 1),
    ("database.migrate", 5, 12),
    ("database.app_db_nmae", 6, 3),
    ("database.port", 7, 9),
    ("env.PORT", 9, 9),
}


def test_console_script_exists() -> None:
    assert CLI.exists(), CLI


def test_version() -> None:
    proc = run("--version")
    assert proc.returncode == 0
    assert proc.stdout.strip() == f"dbos-migrate {__version__}"


@pytest.mark.parametrize("args", [("--help",), ("-h",), ("validate", "--help")])
def test_help(args: tuple[str, ...]) -> None:
    proc = run(*args)
    assert proc.returncode == 0
    assert "Usage: dbos-migrate" in proc.stdout


def test_help_lists_the_commands() -> None:
    out = run("--help").stdout
    for command in ("validate", "up", "down"):
        assert command in out


def test_valid_config_exit_0_with_warnings(tmp_path: Path) -> None:
    path = write(tmp_path, "name: my-app\ndatabase:\n  hostname: localhost\n  migrate:\n    - echo ${NOT_SET_VAR}\n")
    proc = run("validate", "-c", str(path))
    assert proc.returncode == 0, proc.stderr
    assert f"{path}: valid (2 warning(s))" in proc.stdout
    lines = [m.groupdict() for line in proc.stderr.splitlines() if (m := LOCATED.match(line))]
    assert {(d["path"], d["line"], d["col"]) for d in lines} == {
        ("database.hostname", "3", "3"),
        ("database.migrate[0]", "5", "7"),
    }
    assert all(d["file"] == str(path) for d in lines)


def test_quiet_valid_config_prints_nothing_on_stdout(tmp_path: Path) -> None:
    proc = run("validate", "-q", "-c", str(write(tmp_path, "name: my-app\n")))
    assert proc.returncode == 0
    assert proc.stdout == ""


def test_default_config_path_is_cwd(tmp_path: Path) -> None:
    write(tmp_path, "name: here\n")
    proc = run("validate", cwd=tmp_path)
    assert proc.returncode == 0
    assert "dbos-config.yaml: valid" in proc.stdout


def test_invalid_config_exit_2_lists_every_problem(tmp_path: Path) -> None:
    path = write(tmp_path, BROKEN)
    proc = run("validate", "-c", str(path))
    assert proc.returncode == 2
    errors = [
        m.groupdict() for line in proc.stderr.splitlines() if line.startswith("error: ") and (m := LOCATED.match(line))
    ]
    assert {(d["path"], int(d["line"]), int(d["col"])) for d in errors} == BROKEN_WHERE
    assert all(d["file"] == str(path) for d in errors)
    assert "hint: did you mean 'database'?" in proc.stderr
    assert "hint: did you mean 'app_db_name'?" in proc.stderr
    assert "one character at a time" in proc.stderr
    assert f"{path}: 5 problems" in proc.stderr


def test_relative_config_path_named_as_given(tmp_path: Path) -> None:
    write(tmp_path, BROKEN)
    proc = run("validate", "-c", "dbos-config.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert "error: dbos-config.yaml:2:1: databse: unknown key" in proc.stderr


def test_json_output_is_exactly_one_document(tmp_path: Path) -> None:
    path = write(tmp_path, BROKEN)
    proc = run("validate", "-c", str(path), "--output", "json")
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)  # the whole of stdout is one document
    assert doc["valid"] is False
    assert {(e["path"], e["line"], e["column"]) for e in doc["errors"]} == BROKEN_WHERE
    for item in doc["errors"] + doc["warnings"]:
        assert {"line", "column", "path", "message"} <= set(item)
        assert isinstance(item["line"], int) and isinstance(item["column"], int)
    assert [w["path"] for w in doc["warnings"]] == ["database.port"]


def test_json_output_valid(tmp_path: Path) -> None:
    proc = run("validate", "-o", "json", "-c", str(write(tmp_path, "name: my-app\ndatabase:\n  port: 5432\n")))
    assert proc.returncode == 0
    doc = json.loads(proc.stdout)
    assert doc["valid"] is True
    assert doc["errors"] == []
    assert doc["warnings"][0]["path"] == "database.port"
    assert doc["warnings"][0]["message"].startswith("deprecated")


def test_json_output_for_missing_file(tmp_path: Path) -> None:
    proc = run("validate", "-o", "json", "-c", str(tmp_path / "nope.yaml"))
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert doc["valid"] is False
    assert "no such config file" in doc["errors"][0]["message"]


def test_missing_config_file_is_a_clean_exit_2(tmp_path: Path) -> None:
    proc = run("validate", "-c", str(tmp_path / "missing.yaml"))
    assert proc.returncode == 2
    assert "no such config file" in proc.stderr
    assert "-c/--config" in proc.stderr


def test_directory_as_config_is_a_clean_exit_2(tmp_path: Path) -> None:
    proc = run("validate", "-c", str(tmp_path))
    assert proc.returncode == 2
    assert "is a directory" in proc.stderr


def test_no_config_in_cwd(tmp_path: Path) -> None:
    proc = run("validate", cwd=tmp_path)
    assert proc.returncode == 2
    assert "dbos-config.yaml: no such config file" in proc.stderr


def test_cloud_rules(tmp_path: Path) -> None:
    text = "name: My App\ndatabase:\n  username: postgres\n  password: ${PW}\n"
    path = write(tmp_path, text)
    assert run("validate", "-c", str(path), env={"PW": "bad pw@x"}).returncode == 0
    proc = run("validate", "--cloud", "-c", str(path), env={"PW": "bad pw@x"})
    assert proc.returncode == 2
    assert "bad pw@x" not in proc.stderr + proc.stdout
    errors = {(m["path"], m["line"], m["col"]) for line in proc.stderr.splitlines() if (m := LOCATED.match(line))}
    assert ("name", "1", "7") in errors
    assert ("database.username", "3", "13") in errors
    assert ("database.password", "4", "13") in errors
    assert all(
        line.startswith(f"error: {path}:") or line.startswith(f"warning: {path}:") or not LOCATED.match(line)
        for line in proc.stderr.splitlines()
    )


def test_cloud_rules_json(tmp_path: Path) -> None:
    path = write(tmp_path, "name: ok-app\ndatabase_url: postgresql://admin:Pw-12345678@h/postgres\n")
    proc = run("validate", "--cloud", "-o", "json", "-c", str(path))
    assert proc.returncode == 2
    doc = json.loads(proc.stdout)
    assert [e["path"] for e in doc["errors"]] == ["database_url"]
    assert "reserved" in doc["errors"][0]["message"]
    assert "Pw-12345678" not in proc.stdout


def test_cloud_valid(tmp_path: Path) -> None:
    path = write(tmp_path, "name: ok-app\ndatabase:\n  migrate:\n    - alembic upgrade head\n")
    assert run("validate", "--cloud", "-c", str(path)).returncode == 0


def test_github_actions_annotations(tmp_path: Path) -> None:
    write(tmp_path, BROKEN)
    proc = run("validate", "-c", "dbos-config.yaml", cwd=tmp_path, env={"GITHUB_ACTIONS": "true"})
    assert proc.returncode == 2
    out = proc.stdout + proc.stderr
    annotations = re.findall(r"^::error file=([^,]+),line=(\d+),col=(\d+)::(.*)$", out, re.M)
    assert {(path, int(line), int(col)) for path, line, col, _ in annotations} == {
        ("dbos-config.yaml", line, col) for _, line, col in BROKEN_WHERE
    }
    messages = {msg for *_, msg in annotations}
    assert any(m.startswith("databse: unknown key") for m in messages)
    assert "::warning file=dbos-config.yaml,line=7,col=3::" in out


def test_github_annotations_in_json_mode_keep_stdout_one_document(tmp_path: Path) -> None:
    path = write(tmp_path, BROKEN)
    proc = run("validate", "-o", "json", "-c", str(path), env={"GITHUB_ACTIONS": "true"})
    json.loads(proc.stdout)
    assert "::error file=" in proc.stderr


def test_no_annotations_outside_github(tmp_path: Path) -> None:
    proc = run("validate", "-c", str(write(tmp_path, BROKEN)))
    assert "::error" not in proc.stdout + proc.stderr


def test_secret_never_printed(tmp_path: Path) -> None:
    secret = "Sup3r-Secret-Value"
    text = "database:\n  port: ${S}\n  migrate: ${S}\n  ssl: ${S}\nenv:\n  A: ${S}\nlanguage: ${S}\n"
    path = write(tmp_path, text)
    for extra in ((), ("--cloud",), ("-o", "json")):
        proc = run("validate", *extra, "-c", str(path), env={"S": secret, "GITHUB_ACTIONS": "true"})
        assert proc.returncode == 2
        assert secret not in proc.stdout + proc.stderr


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"- a\n- b\n",
        b"\xff\xfe\x00n\x00a\x00",
        b"name: [unclosed\n",
        b"name: !!python/object/apply:os.system ['echo pwned']\n",
        b"a: &a [*a]\n",
        b"\t\tname: x\n",
        b"name: a\nname: b\n",
        b"{" * 2000,
        b"name: \x00\n",
    ],
)
def test_hostile_files_never_traceback(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "dbos-config.yaml"
    path.write_bytes(content)
    for extra in ((), ("-o", "json"), ("--cloud",)):
        proc = run("validate", *extra, "-c", str(path))
        assert proc.returncode == 2, (content, proc.stdout, proc.stderr)
        assert "pwned" not in proc.stdout
        if extra == ("-o", "json"):
            assert json.loads(proc.stdout)["valid"] is False


def test_unknown_option_is_exit_2() -> None:
    proc = run("validate", "--no-such-option")
    assert proc.returncode == 2


# ---------------------------------------------------------------------------- real configs


def test_there_are_real_configs() -> None:
    names = {p.name for p in CONFIGS}
    assert len(names) >= 10
    assert any(n.startswith("py-0.") for n in names)
    assert any(n.startswith("py-3.") for n in names)
    assert any(n.startswith("ts-1.") for n in names)
    assert any(n.startswith("ts-4.") for n in names)


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_real_config_accepted_by_validate(path: Path) -> None:
    proc = run("validate", "-c", str(path))
    assert proc.returncode == 0, proc.stderr
    assert "error:" not in proc.stderr
    assert f"{path}: valid" in proc.stdout


@pytest.mark.parametrize("path", CONFIGS, ids=[p.name for p in CONFIGS])
def test_real_config_loads_with_commands(path: Path, tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "db_password").write_text("s3cret\n", encoding="utf-8")
    env = {
        "DBOS_MIGRATE_SECRETS_DIR": str(secrets),
        "PGPASSWORD": "pw",
        "CURRENT_BANK": "bank_a",
        "DBOS_DATABASE_URL": "postgresql://u:pw@localhost:5432/postgres",
        "DBOS_SYSTEM_DATABASE_URL": "postgresql://u:pw@localhost:5432/sys",
    }
    cfg = config.load(path, env)
    assert cfg.database.migrate, "every starter declares migrate commands"
    assert all(t.value.strip() for t in cfg.database.migrate)
    missing = [w for w in cfg.warnings if "not set" in w.message and "DBOS" in w.message]
    assert missing == []


def test_invalid_app_db_name_is_caught_by_validate(tmp_path: Path) -> None:
    cfg = write(tmp_path, "name: ok-app\ndatabase:\n  app_db_name: Bad-Name\n")
    proc = run("validate", "-c", str(cfg))
    assert proc.returncode == 2
    assert re.search(r"dbos-config.yaml:3:16: database.app_db_name: app database name 'Bad-Name'", proc.stderr)


def test_underivable_name_is_only_a_warning(tmp_path: Path) -> None:
    """A URL may name the database, so a name that derives to no valid database name only warns."""
    cfg = write(tmp_path, "name: My.App!\n")
    proc = run("validate", "-c", str(cfg))
    assert proc.returncode == 0
    assert "(used when the URL names no database)" in proc.stderr
