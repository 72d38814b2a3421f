"""Which DBOS generation a config is for, and the rules and advice that differ between them
(docs/dbos-compatibility.md, "Config rules per generation").

The generation is read without running anything: `language` (or a package.json beside the
config) says Python or TypeScript; the installed `@dbos-inc/dbos-sdk` (node_modules, looked
up as node does) or the version the app pins (package.json, requirements.txt,
pyproject.toml) says which release line. Unknown stays unknown: the advice then names the
generations it holds for.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, replace
from pathlib import Path

from dbos_migrate.errors import Problem

SDK = "@dbos-inc/dbos-sdk"
_PIN = re.compile(r"""(?im)(?:^|[\s"'\[,])dbos\s*(?:\[[^\]]*\])?\s*(?:==|~=|>=|\^|=)\s*["']?(\d+)""")
_SPEC_MAJOR = re.compile(r"(\d+)")


@dataclass(frozen=True)
class Generation:
    """`language` is python or typescript; `major` the DBOS release line, when known."""

    language: str
    major: int | None = None
    source: str = ""
    declared: bool = True  # False: Python only because nothing says otherwise

    def describe(self) -> str:
        name = "DBOS Python" if self.language == "python" else SDK
        return f"{name} {self.major}.x" if self.major is not None else name


def detect(directory: Path, language: str | None) -> Generation:
    """The generation of the app whose config is in `directory` (see the module doc)."""
    is_ts = language in ("node", "typescript") or (language is None and (directory / "package.json").is_file())
    if is_ts:
        return _typescript(directory)
    found = _python(directory)
    return found if language == "python" or found.major is not None else replace(found, declared=False)


def _typescript(directory: Path) -> Generation:
    for base in (directory, *directory.parents):
        package = base / "node_modules" / "@dbos-inc" / "dbos-sdk" / "package.json"
        if package.is_file():
            version = str(_json(package).get("version") or "")
            if (m := _SPEC_MAJOR.match(version)) is not None:
                return Generation("typescript", int(m[1]), f"{package}")
            break
    manifest = _json(directory / "package.json")
    for key in ("dependencies", "devDependencies"):
        deps = manifest.get(key)
        spec = deps.get(SDK) if isinstance(deps, dict) else None
        if isinstance(spec, str) and (m := _SPEC_MAJOR.search(spec)) is not None:
            return Generation("typescript", int(m[1]), f"package.json {key}")
    return Generation("typescript")


def _python(directory: Path) -> Generation:
    for name in ("requirements.txt", "pyproject.toml"):
        path = directory / name
        try:
            text = path.read_text(encoding="utf-8", errors="replace")[:200_000] if path.is_file() else ""
        except OSError:
            continue
        if (m := _PIN.search(text)) is not None:
            return Generation("python", int(m[1]), name)
    return Generation("python")


def _json(path: Path) -> dict[str, object]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


# ---------------------------------------------------------------------------- the app name


def name_problems(gen: Generation, name: str, where: Problem) -> tuple[list[Problem], list[Problem]]:
    """(errors, warnings) for the app `name` under this generation's rules. DBOS Python
    refuses at launch names outside 3 to 30 characters (0.x-2.x) or 3 to 256 (3.x) and any
    character but a-z, 0-9, - and _; the TypeScript SDK has no rule on `name` itself."""
    if gen.language != "python":
        return [], []
    rule = "lowercase letters, digits, - and _"
    errors: list[Problem] = []
    warnings: list[Problem] = []
    top = 256 if gen.major is None or gen.major >= 3 else 30
    if not re.fullmatch(r"[a-z0-9_-]+", name):
        errors.append(
            replace(where, message=f"app name {name!r}: {gen.describe()} refuses it at launch: only {rule} are allowed")
        )
    if len(name) < 3 or len(name) > top:
        errors.append(
            replace(
                where,
                message=f"app name {name!r} is {len(name)} characters long: "
                f"{gen.describe()} refuses it at launch (3 to {top} characters)",
            )
        )
    elif gen.major is None and len(name) > 30:
        warnings.append(
            replace(
                where,
                message=f"app name {name!r} is {len(name)} characters long: DBOS Python "
                "0.x-2.x refuse names over 30 characters (3.x allows 256)",
            )
        )
    if not gen.declared:  # no `language`, no pin: it may not be a Python app at all
        said = " (if this is a DBOS Python app: set `language: python` to make it an error)"
        return [], [replace(p, message=p.message + said) for p in errors + warnings]
    return errors, warnings


# ---------------------------------------------------------------------------- legacy fields

#: The generations in which a replacement exists: (language, first major that has it).
_HAS = {
    ("typescript", "database_url"): 2,
    ("typescript", "system_database_url"): 3,
    ("python", "database_url"): 0,
    ("python", "system_database_url"): 1,
}


def advise(gen: Generation, warnings: tuple[Problem, ...]) -> tuple[Problem, ...]:
    """The deprecation warnings reworded for this generation: a field whose replacement the
    app's DBOS does not have is no warning (it is that generation's way); with the release
    line unknown, the warning says from which one the replacement exists."""
    out: list[Problem] = []
    for problem in warnings:
        prefix = "deprecated: replaced by "
        if not problem.message.startswith(prefix):
            out.append(problem)
            continue
        replacement = problem.message[len(prefix) :]
        field = next((f for f in ("system_database_url", "database_url") if f in replacement), None)
        first = _HAS.get((gen.language, field)) if field else None
        if first is None:
            out.append(problem)
        elif gen.major is not None and gen.major < first:
            continue  # the field is current in this generation
        elif gen.language == "python" and gen.major is not None and gen.major >= 3 and field == "database_url":
            out.append(
                replace(
                    problem,
                    message="deprecated: DBOS Python 3.x reads neither this nor database_url; "
                    "dbos-migrate reads it to find the app database (database_url or -D says it in one place)",
                )
            )
        elif gen.major is None and first > 0:
            name = "DBOS Python" if gen.language == "python" else SDK
            lo = 0 if gen.language == "python" else 1
            older = f"{lo}.x" if lo == first - 1 else f"{lo}.x-{first - 1}.x"
            out.append(
                replace(
                    problem,
                    message=f"{problem.message} (from {name} {first}.x on; {older} has no {field}: keep it there)",
                )
            )
        else:
            out.append(problem)
    return tuple(out)
