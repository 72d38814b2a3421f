"""Option and argument errors as a newcomer reads them, and as a script parses them: every
command, with a bad option under `-o json`, prints one document that the schema accepts and
that names the command click was parsing (report/usage.py). In-process, through `cli.run`."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
import typer
from helpers import write_config
from pgharness import invoke, with_dbname

from dbos_migrate.cli import app

OUTPUT_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "output.schema.json"


def cli(*args: object, environ: dict[str, str] | None = None) -> tuple[int, str, str]:
    """`dbos-migrate ARGS` in this process: (exit code, stdout, stderr)."""
    result = invoke(*args, env=environ)
    return result.returncode, result.stdout, result.stderr


def schema_errors(doc: Any) -> list[str]:
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(json.loads(OUTPUT_SCHEMA.read_text()))
    return [e.message for e in validator.iter_errors(doc)]


def command_paths() -> list[list[str]]:
    """Every command of the app as typed, aliases and the `postgres` subcommands included."""
    paths: list[list[str]] = []

    def walk(command: Any, prefix: list[str]) -> None:
        for name, sub in sorted(getattr(command, "commands", {}).items()):
            if getattr(sub, "commands", None):
                walk(sub, [*prefix, name])
            else:
                paths.append([*prefix, name])

    walk(typer.main.get_command(app), [])
    return paths


def test_every_command_with_a_bad_option_prints_one_valid_json_document() -> None:
    paths = command_paths()
    assert {"migrate", "rollback", "url"} <= {p[0] for p in paths} and ["postgres", "start"] in paths
    failures = []
    for path in paths:
        for args in ([*path, "--no-such-option", "-o", "json"], [*path, "-o", "json", "--no-such-option"]):
            code, out, err = cli(*args)
            try:
                doc = json.loads(out)  # exactly one document: anything else fails to parse
            except ValueError:
                failures.append(f"{args}: stdout is not one JSON document: {out!r}")
                continue
            expected = {"migrate": "up", "rollback": "down"}.get(" ".join(path), " ".join(path))
            problems = schema_errors(doc)
            if code != 2 or problems or doc.get("command") != expected:
                failures.append(f"{args}: exit {code}, command {doc.get('command')!r}, schema: {problems}")
            message = doc.get("error", {}).get("message", "")
            if not message.startswith("No such option: ") or "Possible options" in message or message not in err:
                failures.append(f"{args}: message {message!r}, stderr {err!r}")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize(
    ("args", "command"),
    [
        (["-o", "json", "up"], "dbos-migrate"),  # an option of the commands, before the command
        (["--env-file", "{env}", "up", "-o", "json", "--bogus"], "up"),
        (["--env-file", "{env}", "status", "--output=json", "--limit", "3"], "status"),
        (["migrate", "-o", "json", "--wait", "abc"], "up"),
    ],
)
def test_json_usage_errors_name_the_command_being_parsed(tmp_path: Path, args: list[str], command: str) -> None:
    env = tmp_path / ".env"
    env.write_text("GREETING=hello\n")
    code, out, err = cli(*(a.replace("{env}", str(env)) for a in args))
    doc = json.loads(out)
    assert code == 2 and doc["command"] == command and not schema_errors(doc), (doc, err)
    assert doc["error"]["code"] == "usage" and doc["error"]["message"] in err
    assert "Input should" not in err and "env var" not in err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["up", "--wait", "abc"], "Invalid value for '--wait': 'abc' is not a number"),
        (["history", "--limit", "x"], "Invalid value for '--limit' / '-n': 'x' is not a whole number"),
        (["history", "--limit", "0"], "Invalid value for '--limit' / '-n': must be at least 1, not 0"),
        (["up", "--lock-timeout", "-1"], "Invalid value for '--lock-timeout': must be at least 0, not -1"),
        (["up", "-o", "yaml"], "Invalid value for '--output' / '-o': 'yaml' is not one of 'text', 'json'"),
        (["up", "--dryrun"], "No such option: --dryrun. Did you mean --dry-run?"),
        (["up", "--bogus"], "No such option: --bogus\n"),  # nothing is close: no suggestion
        (["-o", "json", "up"], "No such option before the command: -o goes after it, e.g. `dbos-migrate up -o"),
    ],
)
def test_messages_are_in_plain_words(args: list[str], says: str) -> None:
    code, _, err = cli(*args)
    assert code == 2 and says in err, err
    for leak in ("Input should", "env var", "Possible options", "float range", "Value error"):
        assert leak not in err, err


def test_a_value_from_the_environment_names_its_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DBOS_MIGRATE_WAIT", "soon")  # click reads the process's environment
    code, _, err = cli("up")
    assert code == 2
    assert "Invalid value for '--wait' (from the environment variable DBOS_MIGRATE_WAIT): 'soon' is not a number" in err


def test_validate_help_shows_plain_metavars() -> None:
    code, out, _ = cli("validate", "--help")
    assert code == 0 and "Usage: dbos-migrate validate [OPTIONS] [PATH]...\n" in out
    assert "[[PATH]" not in out and "<list[str]>" not in out and "PATH...: the config files to check" in out


def test_a_missing_config_has_no_position(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "dbos-config.yaml"
    code, out, err = cli("validate", "-c", missing)
    assert code == 2 and f"error: {missing}: no such config file" in err
    assert f"{missing}:1:1" not in err and f"{missing}: {missing}" not in err
    code, out, _ = cli("validate", "-c", missing, "-o", "json")
    problem = json.loads(out)["errors"][0]
    assert (problem["line"], problem["column"]) == (1, 1) and problem["message"].startswith("no such config file")


def test_a_command_timeout_is_said_once(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["sleep 30"])
    code, out, err = cli(
        "up",
        "-c",
        cfg,
        "-D",
        pg_url,
        "--system-db",
        "skip",
        "--command-timeout",
        "0.5",
        "--kill-after",
        "0.5",
        "--no-history",
    )
    assert code == 124, out + err
    assert "[1/1] timed out after " in out + err and "timed out: timed out" not in out + err


def test_a_lock_timeout_says_a_round_duration(tmp_path: Path, pg_url: str, app_db: str) -> None:
    from dbos_migrate.engine.database import LOCK_CLASS, lock_key

    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    assert cli("up", "-c", cfg, "-D", pg_url, "--system-db", "skip")[0] == 0
    with psycopg.connect(with_dbname(pg_url, app_db), autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, lock_key(app_db)))
        code, _, err = cli("up", "-c", cfg, "-D", pg_url, "--system-db", "skip", "--lock-timeout", "0.7")
    assert code == 4, err
    within = re.search(r"within (\S+)s; held by", err)
    assert within is not None and re.fullmatch(r"\d+(\.\d)?", within.group(1)), err
