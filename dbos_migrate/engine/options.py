"""The choices a person makes on the command line, as one frozen value for the verbs."""

from __future__ import annotations

from dataclasses import dataclass

DEFAULT_GRACE = 5.0


@dataclass(frozen=True)
class Options:
    """Every option of up/down/plan/status/history/url; the outside world is in Context."""

    config: str | None = None
    db_url: str | None = None
    app_db_name: str | None = None
    production: bool = False
    maintenance_db: str | None = None
    lock_timeout: float = 300.0
    command_timeout: float | None = None
    wait: float = 0.0
    dry_run: bool = False
    no_create: bool = False
    no_history: bool = False
    history_schema: str = "dbos_migrate"  # where history lives (docs/security.md, "The tool's own objects")
    app_role: str | None = None
    yes: bool = False
    confirm: str | None = None
    note: str | None = None
    grace: float = DEFAULT_GRACE
    lease_ttl: float = 30.0  # seconds a run's lease outlives its last renewal (docs/reliability.md)
    system_db: str = "auto"  # auto, create, skip
    data_checks: bool = True  # plan --rehearse / up --fail-on-breaking: ask the app database's rows
    data_check_timeout: float = 5.0  # seconds, each data or workflow check
    rollback_check: bool = True  # plan --rehearse: rehearse database.rollback too
    strict: bool = False  # refuse any breaking change, even with no unfinished workflow
    sys_db_url: str | None = None  # -s/--sys-db-url: the system database, before the config's
    schema: str | None = None  # --schema: the DBOS system schema, before the config's
    print_user_role: bool = False  # print the runtime role's grants; connect to nothing
    print_migrations: str | None = None  # "all" or N: print what would run; run nothing
    datasource: str = "auto"  # auto, skip: the app database's DBOS provisioning (docs/dbos-compatibility.md)
    rehearse_shared_credentials: bool = False  # the rehearsal's commands get the deploy role's credentials
