"""What scripts and newcomers rely on: one JSON document whatever fails, options from the
environment, --env-file, positions and hints that fit, status that tells the truth, run ids."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import one_json, write_config
from inmemory import InMemoryContext
from pgharness import free_port, invoke

OUTPUT_SCHEMA = Path(__file__).resolve().parent.parent / "schemas" / "output.schema.json"


def valid(doc: dict[str, object]) -> dict[str, object]:
    from jsonschema import Draft202012Validator

    Draft202012Validator(json.loads(OUTPUT_SCHEMA.read_text())).validate(doc)
    return doc


# ---------------------------------------------------------------------------- one JSON document, always


@pytest.mark.parametrize(
    "args",
    [
        ["up", "-o", "json", "--wait", "abc"],
        ["up", "--output=json", "--no-such-option"],
        ["down", "-ojson", "--lock-timeout"],
        ["validate", "-o", "json", "--cloud=maybe"],
        ["status", "-o", "json", "--production", "extra-argument"],
        ["history", "-o", "json", "--limit", "0"],
    ],
)
def test_option_and_argument_errors_are_one_json_document(args: list[str]) -> None:
    result = invoke(*args)
    assert result.returncode == 2
    doc = valid(one_json(result.stdout))
    assert doc["error"]["code"] == "usage"  # type: ignore[index]
    assert result.stderr.strip()  # and a message for the person, on stderr


def test_output_mode_from_the_environment_covers_usage_errors_too() -> None:
    result = invoke("up", "--wait", "abc", env={"DBOS_MIGRATE_OUTPUT": "json"})
    assert result.returncode == 2 and one_json(result.stdout)["ok"] is False


# ---------------------------------------------------------------------------- options from the environment


def test_every_option_reads_dbos_migrate_variables_and_flags_win(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    env = {
        "DBOS_MIGRATE_CONFIG": str(cfg),
        "DBOS_MIGRATE_DB_URL": pg_url,
        "DBOS_MIGRATE_OUTPUT": "json",
        "DBOS_MIGRATE_SYSTEM_DB": "skip",
        "DBOS_MIGRATE_DRY_RUN": "true",
    }
    doc = one_json(invoke("up", env=env).stdout)
    assert doc["dry_run"] is True and doc["app_database"] == app_db and doc["target_source"] == "--db-url"
    flag = invoke("up", "--app-db-name", "from_flag", env={**env, "DBOS_MIGRATE_APP_DB_NAME": "from_env"})
    assert one_json(flag.stdout)["app_database"] == "from_flag"
    help_text = invoke("up", "--help").stdout
    for var in ("DBOS_MIGRATE_DB_URL", "DBOS_MIGRATE_LOCK_TIMEOUT", "DBOS_MIGRATE_KILL_AFTER", "DBOS_MIGRATE_ENV_FILE"):
        assert var in help_text


def test_env_files_are_read_first_and_never_override(tmp_path: Path, pg_url: str, app_db: str) -> None:
    (tmp_path / ".env").write_text(
        f"# deploy settings\nexport APP_DB='{app_db}'\nGREETING=\"hello\\nworld\" # greeting\nKEEP=from-file\n"
    )
    (tmp_path / "second.env").write_text("GREETING=second\nEXTRA=2\n")
    cfg = write_config(
        tmp_path, app_db_name="${APP_DB}", migrate=['printf "%s|%s|%s" "$GREETING" "$KEEP" "$EXTRA" > seen']
    )
    for placement in (
        ["--env-file", ".env", "--env-file", "second.env", "up"],
        ["up", "--env-file", ".env", "--env-file", "second.env"],
    ):
        result = invoke(
            *placement,
            "-c",
            cfg,
            "-D",
            pg_url,
            "--system-db",
            "skip",
            cwd=tmp_path,
            env={"KEEP": "from-env", "APP_DB": None},
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert (tmp_path / "seen").read_text() == "hello\nworld|from-env|2"
    (tmp_path / "bad.env").write_text("OK=1\nnot a line\n")
    bad = invoke("--env-file", "bad.env", "validate", "-c", cfg, cwd=tmp_path)
    assert bad.returncode == 2 and "bad.env:2" in bad.stderr


# ---------------------------------------------------------------------------- help, positions, hints


def test_top_level_help_shows_every_summary_whole() -> None:
    text = invoke("--help").stdout
    assert "..." not in text.split("Commands:", 1)[1]
    assert "Create the app and system databases if missing, then run" in text and "database.migrate in order." in text


def test_yaml_problems_are_where_a_person_looks(tmp_path: Path) -> None:
    cases = {
        "tab.yaml": ("name: app\ndatabase:\n\tmigrate:\n    - x\n", ":3:1:", "tab in the indentation"),
        "quote.yaml": (
            'name: app\ndatabase:\n  app_db_name: "unterminated\n  migrate:\n    - x\n',
            ":3:16:",
            "never closed",
        ),
        "bracket.yaml": ('name: app\nenv: {A: "x", B: [1, 2\n', ":2:18:", "never closed"),
    }
    for name, (text, where, what) in cases.items():
        (tmp_path / name).write_text(text)
        result = invoke("validate", "-c", tmp_path / name)
        assert result.returncode == 2 and where in result.stderr and what in result.stderr, result.stderr
    (tmp_path / "order.yaml").write_text("language: cobol\nname: app\ndatabse: {}\nzzz: 1\n")
    lines = [
        ln for ln in invoke("validate", "-c", tmp_path / "order.yaml").stderr.splitlines() if ln.startswith("error:")
    ]
    positions = [tuple(int(n) for n in ln.split(":")[2:4]) for ln in lines]
    assert positions == sorted(positions) and len(positions) == 3


@pytest.mark.parametrize(
    ("url", "where", "says"),
    [
        ("postgresql://u:pw@localhost:54x2/db", ":2:15:", "not a number"),
        ("postgresql://u:pw@localhost:5432:5432/db", ":2:15:", "two ports"),
        ("postgresql://u:p@ss@localhost/db", ":2:15:", "percent-encode"),
    ],
)
def test_validate_checks_the_urls_with_their_position(tmp_path: Path, url: str, where: str, says: str) -> None:
    cfg = tmp_path / "dbos-config.yaml"
    cfg.write_text(f"name: app\ndatabase_url: {url}\n")
    result = invoke("validate", "-c", cfg)
    assert result.returncode == 2 and where in result.stderr and says in result.stderr
    assert "p@ss" not in result.stderr
    up = invoke("up", "-c", cfg)  # up says the same, at the same place
    assert up.returncode == 2 and where in up.stderr


def test_a_missing_config_names_the_path_and_only_suggests_c_when_not_given(tmp_path: Path) -> None:
    default = invoke("validate", cwd=tmp_path)
    assert default.returncode == 2 and str(tmp_path) in default.stderr and "-c/--config" in default.stderr
    given = invoke("validate", "-c", "nope/dbos-config.yaml", cwd=tmp_path)
    assert given.returncode == 2 and str(tmp_path / "nope" / "dbos-config.yaml") in given.stderr
    assert "pass -c" not in given.stderr


def test_several_files_like_pre_commit_passes_them(tmp_path: Path) -> None:
    good = write_config(tmp_path / "good", migrate=["true"])
    bad = tmp_path / "bad" / "dbos-config.yaml"
    bad.parent.mkdir()
    bad.write_text("name: x\ndatabse: {}\n")
    result = invoke("validate", good, bad)
    assert result.returncode == 2 and "bad/dbos-config.yaml:2:1" in result.stderr and "good" in result.stdout
    doc = valid(one_json(invoke("validate", "-o", "json", good, bad).stdout))
    assert doc["valid"] is False and len(doc["errors"]) == 1  # type: ignore[arg-type]


def test_several_files_json_lists_each_config_with_its_own_outcome(tmp_path: Path) -> None:
    good = write_config(tmp_path / "good", migrate=["true"])
    bad = tmp_path / "bad" / "dbos-config.yaml"
    bad.parent.mkdir()
    bad.write_text("name: x\ndatabse: {}\n")
    doc = valid(one_json(invoke("validate", "-o", "json", good, bad).stdout))
    configs = doc["configs"]
    assert isinstance(configs, list) and [c["path"] for c in configs] == [str(good), str(bad)]
    assert [c["ok"] for c in configs] == [True, False] and doc["config"] is None
    assert configs[0]["errors"] == [] and [e["line"] for e in configs[1]["errors"]] == [2]
    one = valid(one_json(invoke("validate", "-o", "json", good).stdout))
    assert one["config"] == str(good) and [c["path"] for c in one["configs"]] == [str(good)]  # type: ignore[union-attr]


def test_the_target_source_names_what_was_used(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, app_db_name="x_app", migrate=["true"])
    result = invoke(
        "up",
        "-c",
        cfg,
        "--dry-run",
        "-o",
        "json",
        env={
            "PGPORT": str(free_port()),
            "PGHOST": "127.0.0.1",
            "DBOS_DATABASE_URL": None,
            "DBOS_MIGRATE_HOME": str(tmp_path / "home"),
        },
    )
    source = one_json(result.stdout)["target_source"]
    assert "PGPORT=" in source and "PGHOST=127.0.0.1" in source


# ---------------------------------------------------------------------------- status and history


def test_status_on_an_unreachable_server_is_exit_3_and_says_it_once(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, app_db_name="x_app", migrate=["true"])
    url = f"postgresql://u:unused-pw@127.0.0.1:{free_port()}/postgres"
    text = invoke("status", "-c", cfg, "-D", url, env={"NO_COLOR": "1"})
    assert text.returncode == 3
    assert (text.stdout + text.stderr).count("error:") == 1 and "error:" in text.stderr
    quiet = invoke("status", "-c", cfg, "-D", url, "-q")
    assert quiet.returncode == 3 and quiet.stdout == "" and "error:" in quiet.stderr
    doc = one_json(invoke("status", "-c", cfg, "-D", url, "-o", "json").stdout)
    assert doc["reachable"] is False and doc["error"]["exit_code"] == 3


def test_history_shows_run_ids_and_one_run(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true", "echo second"])
    assert invoke("up", "-c", cfg, "-D", pg_url, "--system-db", "skip").returncode == 0
    assert invoke("up", "-c", cfg, "-D", pg_url, "--system-db", "skip").returncode == 0
    runs = one_json(invoke("history", "-c", cfg, "-D", pg_url, "-o", "json").stdout)["runs"]
    first_run = runs[-1]["run_id"]
    text = invoke("history", "-c", cfg, "-D", pg_url).stdout
    assert first_run[:8] in text
    one = one_json(invoke("history", "-c", cfg, "-D", pg_url, "--run", first_run, "-o", "json").stdout)
    assert [r["command_index"] for r in one["runs"]] == [1, 2] and {r["run_id"] for r in one["runs"]} == {first_run}
    missing = invoke("history", "-c", cfg, "-D", pg_url, "--run", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 2


# ---------------------------------------------------------------------------- internal errors


def test_an_internal_error_is_exit_70_and_its_traceback_masks_passwords(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug is one line (exit 70); -v adds the traceback, whose text may quote a URL."""
    from dbos_migrate import cli, verbs

    def broken(*args: object, **kwargs: object) -> None:
        raise ValueError("cannot read postgresql://deploy:hunter2-pw@db.example.com/app (from-env-pw)")

    monkeypatch.setattr(verbs, "up", broken)
    monkeypatch.setenv("PGPASSWORD", "from-env-pw")
    for args, traceback in (
        (["up", "-D", "postgresql://x@127.0.0.1:1/x"], False),
        (["up", "-v", "-D", "postgresql://x@127.0.0.1:1/x"], True),
    ):
        ctx = InMemoryContext(os.environ)
        code = cli.main(args, ctx)
        err = ctx.captured()[1]
        assert code == 70 and "internal error: ValueError" in err
        assert ("Traceback" in err) is traceback
        assert ("deploy:***@db.example.com" in err) is traceback  # the message itself is shown masked
        assert "hunter2-pw" not in err and "from-env-pw" not in err
