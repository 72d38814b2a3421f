"""What the verbs tell the outside world while they work.

The verbs in `migrate` never print: they emit these events to a sink, and a reporter
(text, json, github) decides what a person or a machine sees. Events are NamedTuples:
immutable, and about ten times cheaper to define than frozen dataclasses, which matters
on the start-up path of every run.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

from dbos_migrate.errors import MigrateError, Problem
from dbos_migrate.runner import CommandResult


class LockHolder(NamedTuple):
    pid: int
    application_name: str
    client: str
    since: datetime | None
    user: str

    def describe(self) -> str:
        since = self.since.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if self.since else "unknown"
        app = self.application_name or "(no application_name)"
        return f"{app}, pid {self.pid}, user {self.user}, from {self.client}, since {since}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "application_name": self.application_name,
            "client": self.client,
            "since": self.since.isoformat() if self.since else None,
            "user": self.user,
        }


@dataclass
class RunReport:
    """Everything a run did, filled in as it goes; rendered at the end (json, summaries)."""

    verb: str
    config_path: str | None = None
    app_database: str | None = None
    app_database_source: str | None = None
    target: str | None = None
    target_source: str | None = None
    production: bool | None = None
    production_reason: str | None = None
    exists: bool | None = None
    created: bool = False
    dry_run: bool = False
    run_id: str | None = None
    commands: list[CommandResult] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
    history_written: bool = False
    warnings: list[Problem] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    error: MigrateError | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.error is None

    def as_json(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "ok": self.ok,
            "command": self.verb,
            "config": self.config_path,
            "app_database": self.app_database,
            "app_database_source": self.app_database_source,
            "target": self.target,
            "target_source": self.target_source,
            "production": self.production,
            "exists": self.exists,
            "created": self.created,
            "dry_run": self.dry_run,
            "run_id": self.run_id,
            "commands": [c.as_dict() for c in self.commands],
            "planned_commands": list(self.planned),
            "history_written": self.history_written,
            "warnings": [w.as_dict() for w in self.warnings],
            "error": error_json(self.error),
        }
        doc.update(self.extra)
        return doc


def error_json(error: MigrateError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    out: dict[str, Any] = {
        "code": error.code,
        "exit_code": error.exit_code,
        "message": error.message,
        "hint": error.hint,
    }
    problems = getattr(error, "problems", None)
    if problems:
        out["problems"] = [p.as_dict() for p in problems]
    return out


class Resolved(NamedTuple):
    report: RunReport


class Notice(NamedTuple):
    text: str
    level: str = "info"  # info, warning


class WaitingForServer(NamedTuple):
    seconds_left: float
    reason: str


class WaitingForLock(NamedTuple):
    holder: LockHolder | None
    seconds_left: float


class LockAcquired(NamedTuple):
    waited_s: float


class DatabaseReady(NamedTuple):
    name: str
    created: bool


class GuardWarning(NamedTuple):
    """The production warning block, shown before down asks for confirmation."""

    report: RunReport
    commands: tuple[str, ...]


@dataclass(frozen=True)
class CommandStarted:
    index: int
    total: int
    command: str


class CommandFinished(NamedTuple):
    result: CommandResult
    total: int


class Finished(NamedTuple):
    report: RunReport


Event = (
    Resolved
    | Notice
    | WaitingForServer
    | WaitingForLock
    | LockAcquired
    | DatabaseReady
    | GuardWarning
    | CommandStarted
    | CommandFinished
    | Finished
)
Sink = Callable[[Event], None]
