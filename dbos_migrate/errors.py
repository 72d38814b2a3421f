"""The error kinds of dbos-migrate, one per exit code (README and docs/behaviour.md, "Exit codes").

Every failure a user can cause ends as one of these. Each carries its exit code and,
where it helps, a hint that says what to do next. The CLI turns them into one message
and the code; nothing else reaches the user as a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


class MigrateError(Exception):
    """Base of every expected failure. Subclasses fix the exit code and a short code name."""

    exit_code = 2
    code = "error"

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class CommandFailed(MigrateError):
    """A migration or rollback command exited non-zero, was not found, or died by a signal."""

    exit_code = 1
    code = "command_failed"


class UsageError(MigrateError):
    """Bad arguments, a bad config, or a request that cannot be carried out as asked."""

    exit_code = 2
    code = "usage"


@dataclass(frozen=True)
class Problem:
    """One located problem in a config file: rendered as `file:line:col: path: message`."""

    file: str
    line: int
    column: int
    path: str
    message: str
    hint: str | None = None
    #: About the file as a whole (it is missing, unreadable): rendered without a position.
    whole_file: bool = False

    def render(self) -> str:
        where = self.file if self.whole_file else f"{self.file}:{self.line}:{self.column}"
        text = f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"
        if self.hint:
            text += f"\n    hint: {self.hint}"
        return text


class ConfigError(UsageError):
    """The config file is unreadable or invalid. Carries every problem found, not just the first."""

    code = "config"

    def __init__(self, problems: list[Problem], warnings: list[Problem] | None = None, partial: object = None) -> None:
        self.problems = problems
        self.warnings = warnings or []
        #: The settings.config.Config built despite the problems, when the document allowed it,
        #: so that `validate` can report the checks made on a Config in the same run.
        self.partial = partial
        count = len(problems)
        summary = "\n".join(p.render() for p in problems)
        super().__init__(f"{summary}\n{count} problem{'s' if count != 1 else ''} in the config")


class DatabaseError(MigrateError):
    """The server is unreachable, refused us, lacks a permission, or the connection was lost."""

    exit_code = 3
    code = "database"


class LockTimeout(MigrateError):
    """Another run kept the migration lock past --lock-timeout."""

    exit_code = 4
    code = "lock_timeout"


class GuardRefused(MigrateError):
    """The production guard refused to go on without confirmation."""

    exit_code = 5
    code = "production_guard"


class BreakingChange(MigrateError):
    """A rehearsal found breaking changes and --fail-on-breaking was given."""

    exit_code = 6
    code = "breaking_change"


class CommandTimeout(MigrateError):
    """A command ran past --command-timeout and its process group was ended."""

    exit_code = 124
    code = "command_timeout"


class Interrupted(MigrateError):
    """SIGINT or SIGTERM stopped the run: exit 130 or 143, as shells report it."""

    code = "interrupted"

    def __init__(self, signum: int, message: str | None = None) -> None:
        self.signum = signum
        self.exit_code = 128 + signum
        name = {2: "SIGINT", 15: "SIGTERM"}.get(signum, f"signal {signum}")
        super().__init__(message or f"interrupted by {name}")


def first_line(exc: BaseException) -> str:
    """The first line of an exception's text, else its type's name: for one-line messages.

    Not scrubbed: callers pass the result through their Scrubber before showing it.
    """
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
