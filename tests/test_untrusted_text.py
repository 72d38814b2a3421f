"""Text that others control reaches terminals and CI logs only through one sanitizer
(docs/security.md, "Text that others control"): no control character, bidi control or line
feed of a single-line field reaches the text output, a GitHub annotation or the step summary,
and no field is longer than its documented cap. The verbs run in-process against a real
PostgreSQL, with the reporters of the CLI."""

from __future__ import annotations

import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from helpers import query, write_config
from inmemory import InMemoryContext

from dbos_migrate import verbs
from dbos_migrate.events import Finished, Sink
from dbos_migrate.model import CommandResult, RunReport, StatusReport, SystemDatabase
from dbos_migrate.report import Fanout, JsonReporter, TextReporter, in_github_actions
from dbos_migrate.report.github import GithubReporter, cell, escape
from dbos_migrate.report.style import FIELD_LIMIT, printable, printable_fields

# An OSC title, a bell, a screen clear, a right-to-left override, and CR/LF that would start a
# line of their own in a log: a forged run line and a workflow command.
HOSTILE = (
    "x\x1b]0;pwned\x07\x1b[2J\u202eevil\r\n    2099-01-01 00:00:00  deadbeef  up   #1  succeeded\n::warning::forged"
)
RAW = ("\x1b", "\x07", "\u202e", "\r")


def context(environ: dict[str, str] | None = None) -> InMemoryContext:
    return InMemoryContext({"PATH": os.environ["PATH"], **(environ or {})})


def reporting(ctx: InMemoryContext, *, json: bool) -> tuple[Sink, InMemoryContext]:
    """The CLI's reporters for this output mode (report.reporting), over in-memory streams."""
    parts: list[Sink] = [JsonReporter(ctx.stdout, guard_err=ctx.stderr) if json else TextReporter(ctx)]
    if in_github_actions(ctx.environ):
        parts.append(GithubReporter(ctx.stdout, ctx.environ))
    return Fanout(*parts), ctx


def assert_clean(text: str, *, free_text: bool = False) -> None:
    """No raw control character, no forged workflow command; no forged run line either, unless
    `text` holds free text of several lines (an error message quoting a command as written)."""
    for char in RAW:
        assert char not in text, repr(char)
    for line in text.splitlines():
        assert not line.lstrip().startswith("::warning::forged"), line
        assert free_text or not line.lstrip().startswith("2099-01-01"), line


def test_a_history_row_with_a_line_feed_cannot_forge_a_run_line(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    assert verbs.up(context(), verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip"), lambda e: None).ok
    query(pg_url, "UPDATE dbos_migrate.history SET command = %s, note = %s, os_user = %s", (HOSTILE,) * 3, app_db)
    shown = verbs.HistoryOptions(config=str(cfg), db_url=pg_url)
    looked = verbs.StatusOptions(config=str(cfg), db_url=pg_url)
    for verb, options in ((verbs.history, shown), (verbs.status, looked)):
        ctx = context()
        sink, run_ctx = reporting(ctx, json=False)
        assert verb(run_ctx, options, sink).ok
        out, err = ctx.captured()
        assert "evil\\r\\n    2099-01-01" in out  # shown, escaped, on the run's own line
        assert_clean(out + err)


def test_annotations_and_step_summary_carry_no_control_character(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """A failing command whose text (from a config under review) holds escape sequences, a
    forged workflow command and Markdown that would add a table row or an image."""
    summary = tmp_path / "summary.md"
    environ = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
    command = "exit 3 # " + HOSTILE + " | forged | row | ![i](https://evil.example/p.png) `code"
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[command])
    ctx = context(environ)
    sink, run_ctx = reporting(ctx, json=False)
    report = verbs.up(run_ctx, verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip"), sink)
    assert not report.ok
    out, err = ctx.captured()
    annotations = [line for line in out.splitlines() if line.startswith("::")]
    assert annotations and all(line.startswith("::error title=") for line in annotations), annotations
    assert_clean(out)  # the command's header, the annotations
    assert_clean(err, free_text=True)  # the error quotes the command as written
    text = summary.read_text()
    assert_clean(text)
    rows = [line for line in text.splitlines() if line.startswith("| 1 |")]
    assert len(rows) == 1 and rows[0].count(" | ") == 4 + 0, rows  # the name adds no cell
    assert "![i]" not in text and "\\!\\[i\\]" not in text and "!\\[i\\]" in text  # no image
    assert "`code" not in text.replace("\\`", "") and "\\`code" in text


def test_a_config_path_with_a_line_feed_prints_no_workflow_command(tmp_path: Path) -> None:
    folder = tmp_path / "x\n::warning::forged"
    folder.mkdir()
    good = folder / "dbos-config.yaml"
    good.write_text("name: my-app\ndatabase:\n  migrate: ['true']\n")
    bad = folder / "bad.yaml"
    bad.write_text("name: my-app\ndatabse: {}\n")
    for path in (good, bad):
        for environ in ({}, {"GITHUB_ACTIONS": "true"}):
            ctx = context(environ)
            sink, _ = reporting(ctx, json=False)
            sink(Finished(verbs.validate(str(path), cloud=False, environ=ctx.environ)))
            out, err = ctx.captured()
            assert "\\n::warning::forged" in out + err
            assert_clean(out + err)


def test_renderers_escape_and_cap_every_field() -> None:
    """The one sanitizer: GitHub properties and messages, Markdown cells and text fields."""
    huge = "9." + "v" * 100_000  # an application version of 100 KB, from a system database
    shown = printable(huge)
    assert len(shown) < FIELD_LIMIT + 40 and shown.startswith("9.vvv") and "(100002 characters)" in shown
    assert escape(HOSTILE, prop=True).count("\n") == 0 and "%3A%3Awarning%3A%3Aforged" in escape(HOSTILE, prop=True)
    assert "\n" not in escape(HOSTILE) and "%0A::warning::forged" in escape(HOSTILE)
    for value in (escape(HOSTILE), escape(HOSTILE, prop=True), cell(HOSTILE), cell(huge)):
        assert_clean(value)
    assert "|" not in cell("a | b").replace("\\|", "")

    now = datetime.now(timezone.utc)
    report = RunReport("up", commands=[CommandResult(1, HOSTILE, "succeeded", 0, None, 0.1, now, now)])
    report.where.target, report.where.app_database = HOSTILE, "db"
    summary = context()
    GithubReporter(summary.stdout, {})(Finished(report))
    assert_clean(summary.captured()[0])
    status = StatusReport(reachable=True, exists=True, server_version=HOSTILE)
    status.where.app_database, status.where.target = "db", "postgresql://h/db"
    status.system_database = SystemDatabase(
        url="postgresql://h/s", kind="postgresql", source="config", exists=True, schema_version=huge
    )
    ctx = context()
    sink, _ = reporting(ctx, json=False)
    sink(Finished(status))
    text, _ = ctx.captured()
    assert_clean(text)
    assert max(len(line) for line in text.splitlines()) < FIELD_LIMIT + 200
    assert "(100002 characters)" in text


def test_validate_echoes_no_line_of_a_file_that_is_not_a_config(tmp_path: Path) -> None:
    """`validate -c` on a symlink to a file such as /etc/shadow: its lines parse as keys, and
    an unknown key is echoed only when it looks like a key name."""
    shadow = tmp_path / "shadow"
    shadow.write_text(
        "root:$6$saltsalt$hAsHhAsHhAsH:19000:0:99999:7:::\n"
        "daemon:*:19000:0:99999:7:::\n"
        "deploy:$6$x$SeCrEtHaSh:19000:0:99999:7:::\n"
    )
    link = tmp_path / "dbos-config.yaml"
    link.symlink_to(shadow)
    for as_json in (False, True):
        ctx = context()
        sink, _ = reporting(ctx, json=as_json)
        result = verbs.validate(str(link), cloud=False, environ=ctx.environ)
        sink(Finished(result))
        out, err = ctx.captured()
        assert not result.ok and len(result.errors) == 3
        for secret in ("root:", "$6$", "hAsH", "SeCrEt", "daemon", "deploy", "99999"):
            assert secret not in out + err, (secret, out + err)
        assert "<a key of 47 characters, not shown>: unknown key" in out + err or as_json
        if as_json:
            assert json.loads(out)["errors"][0]["path"] == "<a key of 47 characters, not shown>"
    typo = tmp_path / "typo.yaml"
    typo.write_text("name: my-app\ndatabse: {}\nruntime_config: {}\n")
    shown = verbs.validate(str(typo), cloud=False, environ={})
    assert [p.path for p in shown.errors] == ["databse", "runtime_config"]  # keys are still named
    assert re.search(r"did you mean 'database'", shown.errors[0].hint or "")


def test_workflow_names_and_versions_from_a_system_database_are_sanitized() -> None:
    """Workflow names, statuses and a 100 KB application version, as a hostile system database
    may hold them: the text and GitHub renderers print them escaped and capped."""
    from dbos_migrate.rehearse.workflows import VersionCount, WorkflowReport
    from dbos_migrate.report.rehearsal import workflows_line

    huge = "1." + "v" * 100_000
    report = WorkflowReport(
        status="found",
        database="app_dbos_sys",
        generation="dbos 2.x",
        this_version=HOSTILE,
        versions=[VersionCount(huge, 3, {HOSTILE: 3}, None, [(HOSTILE, 3)])],
        steps={(huge, HOSTILE): [HOSTILE]},
    )
    clean = printable_fields(report)
    line = workflows_line(clean) or ""
    assert_clean(line)
    assert "(100002 characters)" in line and len(line) < 4 * FIELD_LIMIT
    assert all("\n" not in k[1] and "\x1b" not in k[1] for k in clean.steps)
    assert "\x1b" not in repr(clean.versions[0].statuses) and "\\x1b" in next(iter(clean.versions[0].statuses))
    assert_clean(escape(workflows_line(report) or ""))
    assert_clean(cell(workflows_line(report) or ""))
