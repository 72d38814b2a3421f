"""The one reading of a yes/no value, for every flag and its DBOS_MIGRATE_* variable
(docs/behaviour.md, "Yes and no in the environment"). Other tools' variables are read as
those tools set them: GITHUB_ACTIONS and DBOS__CLOUD are exactly `true`, in any case."""

from __future__ import annotations

#: The spellings of yes and no, compared without case and surrounding blanks.
TRUE = ("true", "1", "yes")
FALSE = ("false", "0", "no")
SPELLINGS = "true, 1 or yes; false, 0 or no"


def parse_bool(value: str | None) -> bool | None:
    """True or False for a documented spelling, False for unset or empty, None for anything
    else (`on`, `y`, `enabled`...): the caller refuses it or treats it as not yes."""
    if value is None:
        return False
    word = value.strip().lower()
    if word == "":
        return False
    if word in TRUE:
        return True
    if word in FALSE:
        return False
    return None


def is_true(value: str | None) -> bool:
    """Only a documented spelling of yes is yes."""
    return parse_bool(value) is True
