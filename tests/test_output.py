"""Output contracts: the JSON documents against their shipped schema, GitHub Actions extras,
status and history, colour and quiet modes."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import one_json, write_config
from jsonschema import Draft202012Validator
from pgharness import free_port, invoke, with_dbname

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "output.schema.json").read_text())


def check(doc: dict[str, Any], kind: str) -> None:
    """Validate against one branch of the schema, so a document cannot pass as another kind."""
    schema = {"$ref": f"#/$defs/{kind}", "$defs": SCHEMA["$defs"]}
    errors = sorted(Draft202012Validator(schema).iter_errors(doc), key=str)
    assert not errors, [e.message for e in errors]


def test_schema_is_itself_valid() -> None:
    meta = Draft202012Validator(Draft202012Validator.META_SCHEMA)
    assert [e.message for e in meta.iter_errors(SCHEMA)] == []
    assert SCHEMA["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert {"run", "status", "history", "validate"} <= set(SCHEMA["$defs"])  # the kinds check() validates against


def test_run_documents_match_the_schema(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["echo hi"], rollback=["echo bye"])
    docs = []
    for args in (["up"], ["up"], ["plan"], ["down"], ["up", "--dry-run"]):
        result = invoke(*args, "-c", cfg, "-D", pg_url, "--output", "json")
        assert result.returncode == 0, result.stderr
        docs.append(one_json(result.stdout))
    for doc in docs:
        check(doc, "run")
    assert docs[0]["created"] is True and docs[1]["created"] is False
    bad = write_config(tmp_path, app_db_name=app_db, migrate=["exit 3"])
    failed = invoke("up", "-c", bad, "-D", pg_url, "--output", "json")
    assert failed.returncode == 1
    doc = one_json(failed.stdout)
    check(doc, "run")
    assert doc["error"]["code"] == "command_failed" and doc["commands"][0]["exit_code"] == 3


def test_error_before_connecting_is_still_one_document(tmp_path: Path) -> None:
    (tmp_path / "dbos-config.yaml").write_text("name: x\ndatabse: {}\n")
    result = invoke("up", "-c", tmp_path / "dbos-config.yaml", "--output", "json")
    assert result.returncode == 2
    doc = one_json(result.stdout)
    check(doc, "run")
    assert doc["error"]["code"] == "config"
    assert doc["error"]["problems"][0]["line"] == 2 and doc["error"]["problems"][0]["path"] == "databse"
    cfg = write_config(tmp_path, app_db_name="x_app", migrate=["true"])
    unreachable = invoke(
        "up", "-c", cfg, "-D", f"postgresql://u:pw@127.0.0.1:{free_port()}/postgres", "--output", "json"
    )
    assert unreachable.returncode == 3
    check(one_json(unreachable.stdout), "run")


def test_status_reports_everything(tmp_path: Path, pg_url: str, app_db: str) -> None:
    from dbos_migrate.engine.database import LOCK_CLASS, lock_key

    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    missing = one_json(invoke("status", "-c", cfg, "-D", pg_url, "--output", "json").stdout)
    check(missing, "status")
    assert missing["reachable"] is True and missing["exists"] is False and missing["server_version"]
    assert missing["production"] is False and missing["lock_holder"] is None

    assert invoke("up", "-c", cfg, "-D", pg_url).returncode == 0
    with psycopg.connect(with_dbname(pg_url, app_db), autocommit=True, application_name="holder-for-status") as holder:
        holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, lock_key(app_db)))
        doc = one_json(invoke("status", "-c", cfg, "-D", pg_url, "--output", "json").stdout)
        text = invoke("status", "-c", cfg, "-D", pg_url, env={"NO_COLOR": "1"}).stdout
    check(doc, "status")
    assert doc["exists"] is True and doc["lock_holder"]["application_name"] == "holder-for-status"
    assert len(doc["recent_runs"]) == 1 and doc["recent_runs"][0]["status"] == "succeeded"
    assert "holder-for-status" in text and "reachable, PostgreSQL" in text and app_db in text

    down = invoke("status", "-c", cfg, "-D", f"postgresql://x:pw@127.0.0.1:{free_port()}/postgres", "--output", "json")
    doc = one_json(down.stdout)
    check(doc, "status")
    assert doc["reachable"] is False


def test_status_and_plan_show_the_system_database(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """Whether the system database exists and its DBOS schema version, read-only."""
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    sysdb = f"{app_db}_dbos_sys"
    plan = one_json(invoke("plan", "-c", cfg, "-D", pg_url, "-o", "json").stdout)
    check(plan, "run")
    assert plan["system_database"]["exists"] is False and plan["system_database"]["url"].endswith(sysdb)
    assert "would be created" in invoke("plan", "-c", cfg, "-D", pg_url).stdout
    status = one_json(invoke("status", "-c", cfg, "-D", pg_url, "-o", "json").stdout)
    check(status, "status")
    assert status["system_database"]["exists"] is False

    assert invoke("up", "-c", cfg, "-D", pg_url, "--system-db", "create").returncode == 0
    with psycopg.connect(with_dbname(pg_url, sysdb), autocommit=True) as conn:  # as a DBOS 3.4 app leaves it
        conn.execute("CREATE SCHEMA dbos; CREATE TABLE dbos.dbos_migrations (version bigint NOT NULL)")
        conn.execute("INSERT INTO dbos.dbos_migrations VALUES (125)")
    status = one_json(invoke("status", "-c", cfg, "-D", pg_url, "-o", "json").stdout)
    check(status, "status")
    assert (status["system_database"]["exists"], status["system_database"]["schema_version"]) == (True, "125")
    text = invoke("status", "-c", cfg, "-D", pg_url).stdout
    assert re.search(rf"system db\s+\S+/{sysdb}: exists, DBOS schema version 125", text), text
    assert f"/{sysdb} exists, DBOS schema version 125" in invoke("plan", "-c", cfg, "-D", pg_url).stdout


def test_history_lists_newest_first_and_highlights_failures(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true", "exit 2"])
    assert invoke("up", "-c", cfg, "-D", pg_url).returncode == 1
    doc = one_json(invoke("history", "-c", cfg, "-D", pg_url, "--output", "json").stdout)
    check(doc, "history")
    assert [(r["command_index"], r["status"]) for r in doc["runs"]] == [(2, "failed"), (1, "succeeded")]
    text = invoke("history", "-c", cfg, "-D", pg_url, "--limit", "1", env={"FORCE_COLOR": "1"}).stdout
    assert "\x1b[31;1mfailed" in text and "succeeded" not in text  # --limit 1, failure in red


def test_github_actions_annotations_and_step_summary(tmp_path: Path, pg_url: str, app_db: str) -> None:
    summary = tmp_path / "summary.md"
    env: dict[str, str | None] = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "dbos-config.yaml").write_text("name: x\ndatabase:\n  migrate: npx knex migrate:latest\n")
    result = invoke("validate", "-c", bad / "dbos-config.yaml", env=env)
    assert result.returncode == 2
    assert re.search(
        r"^::error file=[^,]*dbos-config\.yaml,line=3,col=\d+::database\.migrate: must be a list", result.stdout, re.M
    )

    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["echo fine", "exit 7"])
    failed = invoke("up", "-c", cfg, "-D", pg_url, env=env)
    assert failed.returncode == 1
    assert "::error title=dbos-migrate command_failed::command 2 failed with exit code 7: exit 7" in failed.stdout
    text = summary.read_text()
    assert "### dbos-migrate up" in text and "| 2 | <code>exit 7</code> | failed | 7 |" in text
    assert "**Target:** <code>postgresql://" in text and "**Created:** yes" in text


def test_no_color_and_quiet(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["echo from-command"])
    plain = invoke("up", "-c", cfg, "-D", pg_url, env={"NO_COLOR": "1", "FORCE_COLOR": None})
    assert plain.returncode == 0 and "\x1b[" not in plain.stdout + plain.stderr
    quiet = invoke("up", "-c", cfg, "-D", pg_url, "-q", "--system-db", "create")
    assert quiet.returncode == 0
    assert quiet.stdout.strip() == "from-command"  # only the command's own output


@pytest.mark.parametrize("args", [["--help"], ["up", "--help"], ["--version"]])
def test_help_and_version(args: list[str]) -> None:
    result = invoke(*args)
    assert result.returncode == 0 and result.stdout.strip()


def _render_terminal(raw: str) -> list[str]:
    """What a terminal would show: apply \\r, erase-line and colour codes to the raw stream."""
    raw = re.sub(r"\x1b\[[0-9;]*m", "", raw)
    lines: list[str] = []
    current = ""
    for token in re.split(r"(\r\n|\n|\r|\x1b\[K)", raw):
        if token in ("\n", "\r\n"):
            lines.append(current)
            current = ""
        elif token == "\r":
            current = ""
        elif token == "\x1b[K":
            pass
        else:
            current += token
    lines.append(current)
    return lines


def test_spinner_on_a_tty_does_not_garble_command_output(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """The commands wait for the test, which lets each go on only once it has seen a spinner
    frame drawn after the previous output line (and, for command 2, a frame with its elapsed
    time): no pause has to be long enough for a frame. The one pause left, inside the
    partial line `part-`, cannot become a condition: it gives the spinner the chance to
    draw where it must not, and a frame that is never drawn leaves nothing to wait for; the
    test's outcome does not depend on its length (a correct spinner passes whatever it is)."""
    import os
    import pty
    import select
    import subprocess
    import time

    from pgharness import cli_command

    def hold(name: str) -> str:
        return f'while [ ! -e "{tmp_path / name}" ]; do sleep 0.02; done'

    cmd = f"for i in 1 2 3; do echo step-$i; {hold('go-$i')}; done; printf part-; sleep 0.3; echo whole"
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[cmd, hold("go-4")])
    frame = "[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏]"
    gates = [(rf"step-{i}\r?\n.*{frame} \[1/2\]", f"go-{i}") for i in (1, 2, 3)]
    gates.append((rf"{frame} \[2/2\] \d+\.\d+s", "go-4"))
    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if k not in ("NO_COLOR", "FORCE_COLOR")}
    env["TERM"] = "xterm"
    proc = subprocess.Popen(
        [*cli_command(), "up", "-c", str(cfg), "-D", pg_url],
        stdin=subprocess.DEVNULL,
        stdout=slave,
        stderr=slave,
        env=env,
    )
    os.close(slave)
    chunks: list[bytes] = []
    deadline = time.monotonic() + 60
    try:
        while True:
            assert time.monotonic() < deadline, b"".join(chunks).decode(errors="replace")
            if not select.select([master], [], [], 1.0)[0]:
                continue
            try:
                data = os.read(master, 65536)
            except OSError:  # EIO once the child side is closed
                break
            if not data:
                break
            chunks.append(data)
            seen = b"".join(chunks).decode(errors="replace")
            while gates and re.search(gates[0][0], seen, re.DOTALL):
                (tmp_path / gates.pop(0)[1]).touch()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        os.close(master)
    raw = b"".join(chunks).decode(errors="replace")
    assert proc.returncode == 0, raw
    assert "\x1b[" in raw  # colour and line control: this really was the terminal mode
    assert re.search(r"[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] \[2/2\] \d+\.\d+s", raw), "no spinner with elapsed time was drawn"
    shown = _render_terminal(raw)
    for line in ("step-1", "step-2", "step-3", "part-whole"):
        assert line in shown, shown  # each output line intact, on a line of its own
    assert any(re.fullmatch(r"\[2/2\] ok in \d+\.\d+s", ln) for ln in shown), shown
