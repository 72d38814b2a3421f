"""Option and argument errors in words a newcomer reads at once (docs/behaviour.md, "Usage
errors").

The parser (click, or typer's copy of it with pydantic doing the conversions) words its
errors in its own terms: "Input should be a valid number, unable to parse string as a
number", "'abc' is not a valid float range", "(Possible options: --verbose)" for `--bogus`,
"(env var: ...)" after an option the user typed. This module words them once, the same
whichever parser version is installed, from the exception's own parsing context: which
command was being parsed, which option, and where its value came from. It is duck-typed on
click's exception attributes so that it imports neither click nor typer.
"""

from __future__ import annotations

import difflib
import re
from typing import Any

PROGRAM = "dbos-migrate"
#: How close an unknown option must be to a real one to be suggested (difflib's ratio).
CLOSE_MATCH = 0.75


def command_name(exc: Any) -> str:
    """The command being parsed when the error was raised, as typed ("up", "migrate",
    "postgres start"), or the program's name for an error in its own options."""
    ctx = getattr(exc, "ctx", None)
    path = str(getattr(ctx, "command_path", "") or PROGRAM)
    below = getattr(ctx, "invoked_subcommand", None)  # raised by a group's own callback
    if below:
        path += f" {below}"
    return path.split(" ", 1)[1] if " " in path else PROGRAM


def help_hint(exc: Any) -> str:
    ctx = getattr(exc, "ctx", None)
    return f"see `{getattr(ctx, 'command_path', None) or PROGRAM} --help`"


def reworded(exc: Any) -> str | None:
    """The error's message in our words, or None to keep the parser's."""
    kind = type(exc).__name__
    if kind == "NoSuchOption":
        return _no_such_option(exc)
    if kind == "BadParameter" and getattr(exc, "param", None) is not None:
        return f"Invalid value for {_param_hint(exc)}: {_value_problem(exc)}"
    return None


def _options_of(command: Any) -> list[str]:
    names: list[str] = []
    for param in getattr(command, "params", []):
        names += [o for o in [*getattr(param, "opts", []), *getattr(param, "secondary_opts", [])] if o[:1] == "-"]
    return names


def _no_such_option(exc: Any) -> str:
    name = str(getattr(exc, "option_name", "") or "")
    ctx = getattr(exc, "ctx", None)
    command = getattr(ctx, "command", None)
    known = [*_options_of(command), "--help", "-h"]
    close = difflib.get_close_matches(name, known, n=3, cutoff=CLOSE_MATCH)
    if getattr(ctx, "parent", True) is None:  # the program's own options, before the command
        below = {o for sub in (getattr(command, "commands", None) or {}).values() for o in _options_of(sub)}
        if name in below:
            return f"No such option before the command: {name} goes after it, e.g. `{PROGRAM} up {name} ...`"
    text = f"No such option: {name}"
    if close:
        text += f". Did you mean {close[0]}?" if len(close) == 1 else f". Did you mean one of {', '.join(close)}?"
    return text


def _param_hint(exc: Any) -> str:
    """'--wait', and where the value came from unless it was typed on the command line."""
    param = exc.param
    hint = " / ".join(f"'{o}'" for o in getattr(param, "opts", None) or [param.name])
    source = None
    ctx = getattr(exc, "ctx", None)
    if ctx is not None and hasattr(ctx, "get_parameter_source"):
        source = getattr(ctx.get_parameter_source(param.name), "name", None)
    if source == "ENVIRONMENT" and getattr(param, "envvar", None):
        hint += f" (from the environment variable {param.envvar})"
    elif source == "DEFAULT_MAP" and getattr(param, "envvar", None):
        hint += f" (from {param.envvar} in --env-file)"
    return hint


def _num(value: object) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def _bounds(low: object, high: object, got: object) -> str:
    if low is not None and high is not None:
        return f"must be between {_num(low)} and {_num(high)}, not {got}"
    if low is not None:
        return f"must be at least {_num(low)}, not {got}"
    return f"must be at most {_num(high)}, not {got}"


_PYDANTIC = {
    "float_parsing": "{input!r} is not a number",
    "float_type": "{input!r} is not a number",
    "int_parsing": "{input!r} is not a whole number",
    "int_type": "{input!r} is not a whole number",
    "int_from_float": "{input!r} is not a whole number",
    "bool_parsing": "{input!r} is neither true nor false",
}


def _value_problem(exc: Any) -> str:
    """What is wrong with the value, from pydantic's structured error when typer used it,
    else from click's sentence."""
    cause = exc.__cause__
    errors = cause.errors() if cause is not None and hasattr(cause, "errors") else None
    message = str(getattr(exc, "message", "") or "")
    if errors:
        error = errors[0]
        kind, got, limits = error.get("type"), error.get("input"), error.get("ctx") or {}
        if kind in _PYDANTIC:
            return _PYDANTIC[kind].format(input=got)
        if kind in ("greater_than_equal", "greater_than", "less_than_equal", "less_than"):
            low = limits.get("ge", limits.get("gt"))
            high = limits.get("le", limits.get("lt"))
            return _bounds(low, high, got)
        if kind == "enum" and "expected" in limits:
            return f"{got!r} is not one of {limits['expected'].replace(' or ', ', ')}"
        text = str(error.get("msg", message))
        return re.sub(r"^(?:Input should be |Value error, )", "", text).rstrip(".")
    return _click_problem(message)


def _click_problem(message: str) -> str:
    match = re.fullmatch(r"(.*) is not a valid (float|integer)(?: range)?\.", message)
    if match:
        return f"{match.group(1)} is not a {'number' if match.group(2) == 'float' else 'whole number'}"
    match = re.fullmatch(r"(.*) is not in the range (?:([-\d.]+)<=?)?x(?:>=?([-\d.]+))?(?:<=?([-\d.]+))?\.", message)
    if match:
        got, low, low_alone, high = match.groups()
        return _bounds(low or low_alone, high, got)
    return message.rstrip(".")
