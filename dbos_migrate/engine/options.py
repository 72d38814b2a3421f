"""The choices a person makes on the command line: one frozen record per verb family.

Each record holds only what its verbs read, so a verb cannot read an option it was not
given (mypy says so), and a field no verb reads fails tests/test_options.py. The shared
parts are bases the engine's helpers are typed with: `TargetOptions` (resolving the
target, every verb), `LockOptions` (a maintenance connection and the lock), `CommandOptions`
(running commands), `ChangeOptions` (a run that changes the app database and records
history), `RehearseOptions` (a rehearsal), `ConfirmOptions` (the typed confirmation).
Where a new option goes: docs/architecture.md, "Where a change goes".
"""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_GRACE = 5.0


@dataclass(frozen=True, kw_only=True)
class TargetOptions:
    """Where a verb points: what frame.announce reads to load the config and resolve the target."""

    config: str | None = None
    db_url: str | None = None
    app_db_name: str | None = None
    production: bool = False
    sys_db_url: str | None = None  # -s/--sys-db-url: the system database, before the config's
    schema: str | None = None  # --schema: the DBOS system schema, before the config's


@dataclass(frozen=True, kw_only=True)
class LockOptions(TargetOptions):
    """A verb that connects to a maintenance database and takes the lock."""

    maintenance_db: str | None = None
    lock_timeout: float = 300.0


@dataclass(frozen=True, kw_only=True)
class CommandOptions(LockOptions):
    """A verb that runs the config's commands inside frame.run_steps."""

    dry_run: bool = False
    command_timeout: float | None = None
    grace: float = DEFAULT_GRACE  # --kill-after


@dataclass(frozen=True, kw_only=True)
class ChangeOptions(CommandOptions):
    """`up` and `down`: the run under the lock and the lease that records history."""

    wait: float = 0.0
    no_history: bool = False
    history_schema: str = "dbos_migrate"  # where history lives (docs/security.md, "The tool's own objects")
    lease_ttl: float = 30.0  # seconds a run's lease outlives its last renewal (docs/reliability.md)
    note: str | None = None  # added to each history row (the gated up's allow-breaking summary)


@dataclass(frozen=True, kw_only=True)
class RehearseOptions(CommandOptions):
    """The rehearsal (rehearse/), of `plan --rehearse`, `up --fail-on-breaking` and `down --rehearse`."""

    rehearse_url: str | None = None  # the instance to rehearse on [default: the target's]
    rehearse_shared_credentials: bool = False  # the rehearsal's commands get the deploy role's credentials
    data_checks: bool = True  # ask the app database's rows
    data_check_timeout: float = 5.0  # seconds, each data or workflow check
    rollback_check: bool = True  # rehearse database.rollback too (plan --rehearse)


@dataclass(frozen=True, kw_only=True)
class ConfirmOptions(TargetOptions):
    """The typed confirmation of `down` on production and of `drop` (verbs/confirm.py)."""

    yes: bool = False
    confirm: str | None = None


@dataclass(frozen=True, kw_only=True)
class UpOptions(ChangeOptions, RehearseOptions):
    """`up` (alias `migrate`), with --fail-on-breaking's gate and the print-only flags."""

    no_create: bool = False
    app_role: str | None = None
    system_db: str = "auto"  # auto, create, skip
    datasource: str = "auto"  # auto, skip: the app database's DBOS provisioning (docs/dbos-compatibility.md)
    allow_breaking: bool = False  # --fail-on-breaking: run even when the gate refuses
    strict: bool = False  # --fail-on-breaking: refuse any breaking change
    print_user_role: bool = False  # print the runtime role's grants; connect to nothing
    print_migrations: str | None = None  # "all" or N: print what would run; run nothing


@dataclass(frozen=True, kw_only=True)
class DownOptions(ChangeOptions, RehearseOptions, ConfirmOptions):
    """`down` (alias `rollback`), with --rehearse and --print-migrations."""

    print_migrations: str | None = None  # "all" or N: print what would run; run nothing


@dataclass(frozen=True, kw_only=True)
class PlanOptions(RehearseOptions):
    """`plan`, and `plan --rehearse`."""

    strict: bool = False  # refuse any breaking change, even with no unfinished workflow


@dataclass(frozen=True, kw_only=True)
class DropOptions(LockOptions, ConfirmOptions):
    """`drop`."""

    history_schema: str = "dbos_migrate"
    system_db: bool = False  # also drop the system database
    force: bool = False  # end other sessions (DROP DATABASE ... WITH (FORCE))


@dataclass(frozen=True, kw_only=True)
class StatusOptions(TargetOptions):
    """`status`."""

    history_schema: str = "dbos_migrate"


@dataclass(frozen=True, kw_only=True)
class WaitOptions(TargetOptions):
    """`wait`."""

    wait: float = 60.0


@dataclass(frozen=True, kw_only=True)
class HistoryOptions(TargetOptions):
    """`history`."""

    history_schema: str = "dbos_migrate"
    limit: int = 20
    run_id: str | None = None  # --run: every row of one run


@dataclass(frozen=True, kw_only=True)
class UrlOptions(TargetOptions):
    """`url`."""

    show_password: bool = False
