"""The verbs called as a library: a Context with in-memory streams, a recording sink, a real
PostgreSQL. What they emit, in order, and what they return; nothing printed by themselves
(docs/architecture.md). The CLI surface, signals and terminals are tested as subprocesses."""

from __future__ import annotations

import os
from pathlib import Path

from helpers import write_config
from inmemory import InMemoryContext

from dbos_migrate import verbs
from dbos_migrate.errors import GuardRefused
from dbos_migrate.events import (
    CommandFinished,
    CommandStarted,
    DatabaseReady,
    Event,
    Finished,
    GuardWarning,
    LockAcquired,
    Notice,
    Resolved,
)
from dbos_migrate.model import HistoryReport, RunReport, StatusReport


def context(answers: list[str] | None = None) -> InMemoryContext:
    return InMemoryContext({"PATH": os.environ["PATH"]}, answers=answers)


def test_up_emits_the_run_in_order_and_prints_nothing_itself(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["echo to-stdout", "echo to-stderr >&2"])
    ctx, events = context(), list[Event]()
    report = verbs.up(ctx, verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip"), events.append)
    assert report.ok and report.created and [c.status for c in report.commands] == ["succeeded", "succeeded"]
    assert [type(e) for e in events] == [
        Resolved,
        LockAcquired,
        LockAcquired,
        DatabaseReady,
        CommandStarted,
        CommandFinished,
        CommandStarted,
        CommandFinished,
        Notice,  # echo changes no schema on a fresh database: "the migrations changed nothing"
        Finished,
    ]
    out, err = ctx.captured()
    assert out == "to-stdout\n" and err == "to-stderr\n"  # only the commands' own output reached the streams
    assert isinstance(events[-1], Finished) and events[-1].result is report


def test_down_asks_through_the_context_and_refuses_a_wrong_answer(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"], rollback=[f"touch {tmp_path / 'rolled'}"])
    assert verbs.up(context(), verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip"), lambda e: None).ok
    events: list[Event] = []
    wrong = verbs.down(
        context(["not-it"]), verbs.DownOptions(config=str(cfg), db_url=pg_url, production=True), events.append
    )
    assert isinstance(wrong.error, GuardRefused) and not (tmp_path / "rolled").exists()
    assert any(isinstance(e, GuardWarning) for e in events)
    right = verbs.down(
        context([app_db]), verbs.DownOptions(config=str(cfg), db_url=pg_url, production=True), lambda e: None
    )
    assert right.ok and (tmp_path / "rolled").exists()
    nobody = verbs.down(context(), verbs.DownOptions(config=str(cfg), db_url=pg_url, production=True), lambda e: None)
    assert isinstance(nobody.error, GuardRefused)  # no terminal: no answer, refused


def test_status_history_and_validate_return_typed_results(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    run = verbs.up(context(), verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip"), lambda e: None)
    assert isinstance(run, RunReport) and run.ok
    status = verbs.status(context(), verbs.StatusOptions(config=str(cfg), db_url=pg_url), lambda e: None)
    assert isinstance(status, StatusReport) and status.reachable and status.exists and status.lock_holder is None
    assert [r.run_id for r in status.recent_runs] == [run.run_id]
    shown = verbs.HistoryOptions(config=str(cfg), db_url=pg_url, run_id=run.run_id)
    history = verbs.history(context(), shown, lambda e: None)
    assert isinstance(history, HistoryReport) and [r.command for r in history.runs] == ["true"]
    checked = verbs.validate(str(cfg), cloud=True, environ={})
    assert checked.ok and checked.errors == []


def test_a_sink_that_records_is_all_a_caller_needs(tmp_path: Path) -> None:
    """A config error comes back as the result's error and as the Finished event: no exception."""
    cfg = tmp_path / "dbos-config.yaml"
    cfg.write_text("name: x\ndatabse: {}\n")
    events: list[Event] = []
    report = verbs.up(context(), verbs.UpOptions(config=str(cfg)), events.append)
    assert report.error is not None and report.error.exit_code == 2
    assert [type(e) for e in events] == [Finished]
