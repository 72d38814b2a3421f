"""`validate`: check a config without touching any database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from dbos_migrate import config as config_mod
from dbos_migrate.config import Config
from dbos_migrate.errors import ConfigError, MigrateError, Problem, UsageError
from dbos_migrate.model import Validation


def validate(config_path: str | None, *, cloud: bool, environ: Mapping[str, str]) -> Validation:
    """Load and check one config: the schema, the app database name, and (with `cloud`)
    the DBOS Cloud rules. Returns every problem at once."""
    path = config_path or config_mod.DEFAULT_CONFIG
    result = Validation(path)
    try:
        cfg = config_mod.load(path, environ)
    except ConfigError as exc:
        result.errors, result.warnings, result.error = list(exc.problems), list(exc.warnings), exc
        return result
    except MigrateError as exc:
        result.errors = [Problem(path, 1, 1, "", exc.message, exc.hint)]
        result.error = exc
        return result
    result.warnings = list(cfg.warnings)
    problems = _app_db_name_problems(cfg)
    if problems and cfg.database.app_db_name is None:
        # A name derived from `name` is only used when the URL names no database: warn.
        result.warnings += [
            replace(p, message=p.message + " (used when the URL names no database)") for p in problems
        ]
        problems = []
    if cloud:
        from dbos_migrate.cloud import cloud_problems

        problems += cloud_problems(cfg)
    if problems:
        result.errors = problems
        result.error = ConfigError(problems, result.warnings)
    return result


def _app_db_name_problems(cfg: Config) -> list[Problem]:
    """The app database name `up` would use when the URL names none: caught before a deploy."""
    from dbos_migrate.conninfo import PgUrl
    from dbos_migrate.target import resolve_app_database

    source = cfg.database.app_db_name if cfg.database.app_db_name is not None else cfg.name
    if source is None or source.missing:
        return []
    try:
        resolve_app_database(cfg, None, PgUrl("postgresql://", "postgresql", ()))
    except UsageError as exc:
        return [Problem(cfg.file, source.line, source.column, source.path, exc.message, exc.hint)]
    return []
