"""The DBOS Cloud rules that `validate --cloud` adds (from the DBOS Cloud docs).

Cloud refuses these at provisioning or deploy time; checking them before a deploy
saves a round trip.
"""

from __future__ import annotations

import re

from dbos_migrate.errors import Problem, UsageError
from dbos_migrate.settings.config import Config, Text
from dbos_migrate.settings.target import parse_url

RESERVED_USERS = frozenset({"dbosadmin", "dbos", "postgres", "admin"})
_USER = re.compile(r"[a-z][a-z0-9_]{2,15}\Z")
_APP = re.compile(r"[a-z0-9_-]{3,30}\Z")
_PASSWORD_FORBIDDEN = re.compile(r"[/\"@'\s]")


def _user_problem(user: str) -> str | None:
    if user in RESERVED_USERS:
        return f"the user name {user!r} is reserved on DBOS Cloud"
    if not _USER.match(user):
        return "a DBOS Cloud user name has 3-16 characters: lowercase letters, digits and underscores, starting with a letter"
    return None


def _problem(config: Config, text: Text, message: str) -> Problem:
    return Problem(config.file, text.line, text.column, text.path, message)


def cloud_problems(config: Config) -> list[Problem]:
    """Every DBOS Cloud rule the config breaks. Messages never include a password."""
    problems: list[Problem] = []
    db = config.database
    if db.username is not None and not db.username.missing:
        msg = _user_problem(db.username.value)
        if msg:
            problems.append(_problem(config, db.username, msg))
    if config.database_url is not None and not config.database_url.missing:
        try:
            user = parse_url(config.database_url.value, what="database_url").user
        except UsageError as exc:
            problems.append(_problem(config, config.database_url, exc.message))
            user = None
        if user is not None:
            msg = _user_problem(user)
            if msg:
                problems.append(_problem(config, config.database_url, "the user in database_url: " + msg))
    if db.password is not None and not db.password.missing:
        pw = db.password.value
        if not 8 <= len(pw) <= 128:
            problems.append(_problem(config, db.password, "a DBOS Cloud password has 8 to 128 characters"))
        if _PASSWORD_FORBIDDEN.search(pw):
            problems.append(
                _problem(config, db.password, "a DBOS Cloud password cannot contain / \" @ ' or whitespace")
            )
    if config.name is not None and not config.name.missing and not _APP.match(config.name.value):
        problems.append(
            _problem(
                config,
                config.name,
                "a DBOS Cloud app name has 3-30 characters: lowercase letters, digits, _ and -",
            )
        )
    return problems
