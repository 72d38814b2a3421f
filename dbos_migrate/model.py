"""The records a run produces: plain values that every other room may import.

The runner, the database layer, the verbs and the reporters all speak about the same
things (a command's result, who holds the lock, a history row, what a verb found). They
live here, below all of them, so that no lower room imports an upper one to name them
(see docs/architecture.md). Nothing here does I/O.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal, TypeAlias

from dbos_migrate import __version__
from dbos_migrate.errors import MigrateError, Problem

# ---------------------------------------------------------------------------- one command


@dataclass(frozen=True)
class CommandResult:
    """How one command ended. `status` is one of succeeded, failed, timed_out, interrupted.

    `ended` names descendants that were still running when the command's shell exited
    and had to be stopped (see docs/reliability.md, "No command outlives its run").
    """

    index: int
    command: str
    status: str
    exit_code: int | None
    signal: int | None
    duration_s: float
    started_at: datetime
    finished_at: datetime
    ended: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.status == "succeeded"

    def describe_end(self) -> str:
        if self.status == "timed_out":
            return "timed out"
        if self.signal is not None:
            return f"killed by {signal_name(self.signal)}"
        if self.exit_code == 127:
            return "exit code 127 (command not found)"
        if self.exit_code == 126:
            return "exit code 126 (not executable)"
        return f"exit code {self.exit_code}"


def signal_name(num: int) -> str:
    try:
        return signal.Signals(num).name
    except ValueError:
        return f"signal {num}"


# ---------------------------------------------------------------------------- the lock and history


@dataclass(frozen=True)
class LockHolder:
    """The session holding an app's migration lock, as pg_stat_activity shows it."""

    pid: int
    application_name: str
    client: str
    since: datetime | None
    user: str

    def describe(self) -> str:
        since = self.since.strftime("%Y-%m-%d %H:%M:%S %Z").strip() if self.since else "unknown"
        app = self.application_name or "(no application_name)"
        return f"{app}, pid {self.pid}, user {self.user}, from {self.client}, since {since}"


@dataclass(frozen=True)
class HistoryRow:
    """One row of `dbos_migrate.history`: one command of one run (docs/behaviour.md, History)."""

    run_id: str
    direction: str
    command_index: int
    command: str
    started_at: datetime
    finished_at: datetime | None
    exit_code: int | None
    status: str
    instance: str
    note: str | None = None
    tool_version: str = __version__
    host: str = ""
    os_user: str = ""


# ---------------------------------------------------------------------------- what the verbs return


@dataclass(frozen=True)
class ConnectionDetail:
    """Where a run's connections really go, as libpq reads the target (settings/conninfo.py):
    each parameter's source, and where the password came from, never the password."""

    hosts: list[str]  # "" stands for libpq's default unix socket directory
    hostaddrs: list[str]
    port: str
    user: str | None
    sslmode: str | None
    sources: dict[str, str]
    password_source: str | None


@dataclass
class Resolution:
    """Where a verb acts, as shown to people: every field masked, with the source of each."""

    config_path: str | None = None
    app_name: str | None = None
    app_database: str | None = None
    app_database_source: str | None = None
    target: str | None = None
    target_source: str | None = None
    production: bool | None = None
    production_reason: str | None = None
    connection_detail: ConnectionDetail | None = None
    system_database: str | None = None  # masked URL, or the SQLite URL left to the app
    system_database_source: str | None = None
    warnings: list[Problem] = field(default_factory=list)


@dataclass
class SystemDatabase:
    """The DBOS system database of the app, as `up`, `plan` and `status` saw or left it."""

    url: str  # masked
    kind: str  # "postgresql" or "sqlite" (left to the app)
    source: str
    exists: bool | None = None
    created: bool = False
    schema_version: str | None = None
    toolchain: str | None = None  # what brought the schema up to date, with its version
    action: str = "none"  # what up did: migrated, created, skipped, left to the app, none


# ---------------------------------------------------------------------------- --print-migrations
# What `up` (or `down`) would do, one record per step, in order (docs/dbos-compatibility.md,
# "The flags DBOS users type"). A kind of step is one set of keys in the JSON `steps[]`: `step`
# names it, fixed where a kind is a single step.


@dataclass(frozen=True)
class DatabaseStep:
    """A database that would be created if missing, must exist, or is left alone, and why."""

    step: Literal["app_database", "system_database"]
    database: str | None  # the name, or the masked URL of a database left alone
    action: str


@dataclass(frozen=True)
class SchemaStep:
    """A schema provisioned by no command of its own shown here: the toolchain that would do it
    (None: none found) and what happens."""

    step: Literal["system_schema", "app_schema"]
    toolchain: str | None
    action: str


@dataclass(frozen=True)
class AppSchemaSkipped:
    """The app database's DBOS tables left to the app (--datasource skip): no toolchain asked."""

    step: Literal["app_schema"] = field(default="app_schema", init=False)
    action: str


@dataclass(frozen=True)
class ToolchainStep:
    """The system schema's toolchain command, and the SQL it prints for its own
    --print-migrations (None: a toolchain that prints none)."""

    step: Literal["system_schema"] = field(default="system_schema", init=False)
    toolchain: str
    command: str  # scrubbed
    sql: str | None


@dataclass(frozen=True)
class CommandStep:
    """One of the config's migrate (or rollback) commands."""

    step: Literal["command"] = field(default="command", init=False)
    index: int
    command: str  # as shown


@dataclass(frozen=True)
class GrantStep:
    """The runtime role's grants on these databases; `sql` says where to get them."""

    step: Literal["grant"] = field(default="grant", init=False)
    role: str
    databases: tuple[str, ...]
    sql: str


PlannedStep: TypeAlias = DatabaseStep | SchemaStep | AppSchemaSkipped | ToolchainStep | CommandStep | GrantStep


@dataclass
class RunReport:
    """What `up`, `down` or `plan` did, filled in as it goes, whether or not it succeeded."""

    verb: str
    where: Resolution = field(default_factory=Resolution)
    exists: bool | None = None
    created: bool = False
    dry_run: bool = False
    run_id: str | None = None
    commands: list[CommandResult] = field(default_factory=list)
    planned: list[str] = field(default_factory=list)
    history_written: bool = False
    system_database: SystemDatabase | None = None
    rehearsal: Any = None  # a rehearse.Rehearsal, when one ran
    error: MigrateError | None = None
    steps: list[PlannedStep] | None = None  # --print-migrations: what would run, in order
    user_role_sql: str | None = None  # --print-user-role: the grants, as a psql script
    schema_unchanged: bool = False  # a first run's commands all exited 0 but changed no schema

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class DroppedDatabase:
    """One database `drop` was asked to drop: the app's or the system one."""

    name: str
    role: str  # app, system
    existed: bool | None = None
    dropped: bool = False


@dataclass
class DropReport(RunReport):
    """What `drop` did (docs/behaviour.md, "drop"): each database, whether it existed and was dropped."""

    databases: list[DroppedDatabase] = field(default_factory=list)
    forced: bool = False


@dataclass
class InitReport:
    """What `init` found and did to dbos-config.yaml (docs/behaviour.md, "init")."""

    config_path: str
    tool: str | None = None
    existed: bool | None = None
    added: list[str] = field(default_factory=list)
    diff: str = ""
    written: bool = False
    error: MigrateError | None = None
    verb: str = "init"

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class LastRun:
    """The newest run in the history, as `status` shows it: how it ended and, after a failure,
    the command line to run next (docs/recovery.md)."""

    run_id: str
    direction: str
    outcome: str  # succeeded, failed, timed_out, interrupted
    at: datetime | None
    failed_index: int | None = None
    failed_command: str | None = None
    exit_code: int | None = None
    next_command: str | None = None  # the target as written, password masked
    next_reason: str | None = None


@dataclass
class StatusReport:
    """What `status` found: reachability, existence, lock holder and recent runs, read-only."""

    where: Resolution = field(default_factory=Resolution)
    reachable: bool = False
    unreachable_reason: str | None = None
    server_version: str | None = None
    latency_ms: float | None = None
    exists: bool | None = None
    standby: bool | None = None  # a read-only hot standby (in recovery): up would refuse
    lock_holder: LockHolder | None = None
    recent_runs: list[HistoryRow] = field(default_factory=list)
    last_run: LastRun | None = None
    system_database: SystemDatabase | None = None
    error: MigrateError | None = None
    verb: str = "status"

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class HistoryReport:
    """The rows `history` read, newest first; `run_id` set when one run was asked for."""

    where: Resolution = field(default_factory=Resolution)
    runs: list[HistoryRow] = field(default_factory=list)
    run_id: str | None = None
    exists: bool | None = None
    error: MigrateError | None = None
    verb: str = "history"

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Validation:
    """The outcome of `validate` for one file: problems are errors, warnings do not fail it."""

    config_path: str
    errors: list[Problem] = field(default_factory=list)
    warnings: list[Problem] = field(default_factory=list)
    error: MigrateError | None = None
    verb: str = "validate"
    parts: list[Validation] = field(default_factory=list)  # several files: each one's own

    @property
    def ok(self) -> bool:
        return self.error is None

    valid = ok
