"""What the verbs tell the outside world while they work.

The verbs never print: they emit these events to a sink, and a reporter (text, JSON,
GitHub; see report/) decides what a person or a machine sees. Every event is a frozen
dataclass; the records they carry live in model.py.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from dbos_migrate.model import (
    CommandResult,
    HistoryReport,
    InitReport,
    LockHolder,
    Resolution,
    RunReport,
    StatusReport,
    Validation,
)

Result = RunReport | StatusReport | HistoryReport | Validation | InitReport


@dataclass(frozen=True)
class Resolved:
    """The target and app database are known: shown before anything connects."""

    verb: str
    where: Resolution
    dry_run: bool = False


@dataclass(frozen=True)
class Notice:
    text: str
    level: str = "info"  # info, warning


@dataclass(frozen=True)
class WaitingForServer:
    seconds_left: float
    reason: str


@dataclass(frozen=True)
class WaitingForLock:
    holder: LockHolder | None
    seconds_left: float


@dataclass(frozen=True)
class LockAcquired:
    waited_s: float


@dataclass(frozen=True)
class DatabaseReady:
    """A database `up` needs is there: the app database, or the DBOS system database."""

    name: str
    created: bool
    kind: str = "app"  # app, system


@dataclass(frozen=True)
class GuardWarning:
    """The production warning block, shown before `down` asks for confirmation."""

    where: Resolution
    commands: tuple[str, ...]


@dataclass(frozen=True)
class DropWarning:
    """The warning `drop` prints first, before it asks for the typed confirmation."""

    where: Resolution
    databases: tuple[str, ...]


@dataclass(frozen=True)
class ConfigDiff:
    """`init`: the unified diff of the config it would write, shown before it asks."""

    path: str
    diff: str


@dataclass(frozen=True)
class CommandStarted:
    """A command starts: migration command `index` of `total`, or the one command of a
    `step` of `up` (the system schema's or the app schema's toolchain)."""

    index: int
    total: int
    command: str
    step: str = ""


@dataclass(frozen=True)
class CommandFinished:
    result: CommandResult
    total: int
    step: str = ""


@dataclass(frozen=True)
class FeatureEvent:
    """The base of events that a feature above the engine defines for its own renderers (the
    rehearsal's `RehearsalDone`), so this vocabulary never imports the feature."""


@dataclass(frozen=True)
class Finished:
    """The verb is done; `result` is what it returns (rendered whole by JSON and GitHub)."""

    result: Result


Event = (
    Resolved
    | Notice
    | WaitingForServer
    | WaitingForLock
    | LockAcquired
    | DatabaseReady
    | GuardWarning
    | DropWarning
    | ConfigDiff
    | CommandStarted
    | CommandFinished
    | FeatureEvent
    | Finished
)
Sink = Callable[[Event], None]
