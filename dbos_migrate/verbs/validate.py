"""`validate`: check a config without touching any database."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from dbos_migrate.errors import ConfigError, MigrateError, Problem, UsageError
from dbos_migrate.model import Validation
from dbos_migrate.settings import config as config_mod
from dbos_migrate.settings.config import Config


def validate(config_path: str | None, *, cloud: bool, environ: Mapping[str, str]) -> Validation:
    """Load and check one config: the schema, the app database name, and (with `cloud`)
    the DBOS Cloud rules. Returns every problem at once."""
    path = config_path or config_mod.DEFAULT_CONFIG
    result = Validation(path)
    try:
        cfg = config_mod.load(path, environ)
    except ConfigError as exc:
        result.errors, result.warnings, result.error = list(exc.problems), list(exc.warnings), exc
        if isinstance(exc.partial, Config):  # every problem in one run, not the schema's first
            _add_config_checks(result, exc.partial, cloud=cloud, skip={p.path for p in exc.problems})
        return result
    except MigrateError as exc:
        message = exc.message.removeprefix(f"{path}: ")  # the file is named once, by the problem
        result.errors = [Problem(path, 1, 1, "", message, exc.hint, whole_file=True)]
        result.error = exc
        return result
    result.warnings = list(cfg.warnings)
    _add_config_checks(result, cfg, cloud=cloud, skip=set())
    return result


def _add_config_checks(result: Validation, cfg: Config, *, cloud: bool, skip: set[str]) -> None:
    """The checks made on a loaded Config: the app database name, the URLs, the Cloud rules.
    Problems at a path in `skip` (already reported by the schema) are left out."""
    problems = _app_db_name_problems(cfg)
    if problems and cfg.database.app_db_name is None:
        # A name derived from `name` is only used when the URL names no database: warn.
        result.warnings += [
            replace(p, message=p.message + " (used when the URL names no database)")
            for p in problems
            if p.path not in skip
        ]
        problems = []
    problems += _url_problems(cfg)
    name_errors, name_warnings = _name_problems(cfg)
    problems += name_errors
    result.warnings += name_warnings
    if cloud:
        from dbos_migrate.settings.cloud import cloud_problems

        problems += cloud_problems(cfg)
    problems = [p for p in problems if p.path not in skip]
    if problems:
        result.errors = config_mod.by_position([*result.errors, *problems])
        result.error = ConfigError(result.errors, result.warnings)


def _name_problems(cfg: Config) -> tuple[list[Problem], list[Problem]]:
    """The app name under the rules of the DBOS generation the config is for."""
    from dbos_migrate.settings.generations import detect, name_problems

    name = cfg.name
    if name is None or name.missing:
        return [], []
    where = Problem(cfg.file, name.line, name.column, name.path, "")
    return name_problems(detect(cfg.directory, cfg.language), name.value, where)


def _url_problems(cfg: Config) -> list[Problem]:
    """database_url and system_database_url read as `up` would read them, located in the file.

    A SQLite system_database_url is left to the app; an unset ${VAR} is already a warning."""
    from dbos_migrate.settings.conninfo import url_problem

    problems = []
    for text, what in ((cfg.database_url, "database_url"), (cfg.system_database_url, "system_database_url")):
        if text is None or text.missing or not text.value.strip():
            continue
        if what == "system_database_url" and not text.value.strip().lower().startswith("postgres"):
            continue
        problem = url_problem(text.value.strip(), what=what)
        if problem is not None:
            problems.append(Problem(cfg.file, text.line, text.column, text.path, problem.message, problem.hint))
    return problems


def _app_db_name_problems(cfg: Config) -> list[Problem]:
    """The app database name `up` would use when the URL names none: caught before a deploy."""
    from dbos_migrate.settings.conninfo import PgUrl
    from dbos_migrate.settings.target import resolve_app_database

    source = cfg.database.app_db_name if cfg.database.app_db_name is not None else cfg.name
    if source is None or source.missing:
        return []
    try:
        resolve_app_database(cfg, None, PgUrl("postgresql://", "postgresql", ()))
    except UsageError as exc:
        return [Problem(cfg.file, source.line, source.column, source.path, exc.message, exc.hint)]
    return []


def merge_validations(results: list[Validation]) -> Validation:
    """Several files' validations as one (for one JSON document): every problem, each naming
    its file, and each file's own outcome in `parts` (the document's `configs` list)."""
    merged = Validation(results[0].config_path if len(results) == 1 else "", parts=list(results))
    for r in results:
        merged.errors += r.errors
        merged.warnings += r.warnings
        merged.error = merged.error or r.error
    return merged
