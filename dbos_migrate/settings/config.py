"""Load `dbos-config.yaml`: parse, substitute `${...}`, validate, return frozen values.

This module reads the file and the environment and nothing else. Every problem is
collected before failing, so a user fixes a config in one pass. Messages never show a
substituted value: a secret that came from the environment cannot leak through them.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path as FsPath
from typing import Any

from dbos_migrate.errors import ConfigError, Problem, UsageError
from dbos_migrate.settings.yamltree import Path, YamlTree, parse

DEFAULT_CONFIG = "dbos-config.yaml"
SECRETS_DIR = "/run/secrets"
MAX_CONFIG_BYTES = 1_000_000

_VAR = re.compile(r"\$\{([^}]*)\}")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_SECRET_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\Z")
APP_DB_NAME = re.compile(r"[a-z_][a-z0-9_]*\Z")
MAX_IDENTIFIER_BYTES = 63
#: Databases every PostgreSQL instance has: never an app's or a system database.
RESERVED_DATABASES = ("postgres", "template0", "template1")
#: The rehearsal's scratch databases start with this; nothing else may (docs/rehearsal.md).
SCRATCH_PREFIX = "dbos_rehearse_"


@dataclass(frozen=True)
class Text:
    """A string from the config after `${...}` substitution, remembering its source text.

    `missing` names the variables that were unset. Using such a value is an error
    (`require`); merely having it in the file is only a warning.
    """

    value: str
    raw: str
    path: str
    line: int
    column: int
    missing: tuple[str, ...] = ()

    def require(self, file: str, what: str) -> str:
        if self.missing:
            names = ", ".join("${" + m + "}" for m in self.missing)
            raise ConfigError(
                [
                    Problem(
                        file,
                        self.line,
                        self.column,
                        self.path,
                        f"{names} is not set, and this value is needed for {what}",
                        "export the variable, or give a default with ${VAR:-default}",
                    )
                ]
            )
        return self.value


@dataclass(frozen=True)
class DatabaseSection:
    """The `database:` block: app database name, commands, and legacy connection fields."""

    app_db_name: Text | None = None
    migrate: tuple[Text, ...] = ()
    rollback: tuple[Text, ...] = ()
    hostname: Text | None = None
    port: Text | None = None
    username: Text | None = None
    password: Text | None = None
    connect_timeout_ms: int | None = None
    ssl: bool | None = None
    ssl_ca: Text | None = None
    sys_db_name: Text | None = None

    @property
    def has_legacy_connection(self) -> bool:
        return any(v is not None for v in (self.hostname, self.port, self.username, self.password))


@dataclass(frozen=True)
class Config:
    """A validated config. `directory` is where migration commands run."""

    path: FsPath
    name: Text | None
    language: str | None
    database_url: Text | None
    system_database_url: Text | None
    database: DatabaseSection
    env: tuple[tuple[str, Text], ...] = ()
    warnings: tuple[Problem, ...] = ()
    display: str | None = None
    system_schema: str | None = None  # system_database_schema_name
    package_name: str | None = None  # package.json's name, for a TypeScript app without `name`
    secrets: tuple[str, ...] = ()  # values read through ${DOCKER_SECRET:...}: scrubbed from output

    @property
    def directory(self) -> FsPath:
        return self.path.parent

    @property
    def file(self) -> str:
        """The file as the user named it, so every later problem names it the same way."""
        return self.display or str(self.path)

    def command(self, item: Text, what: str, env: Mapping[str, str]) -> str:
        """A migrate/rollback command as the shell gets it (docs/behaviour.md, "Variables in
        commands"): ${VAR} and ${VAR:-default} are left to the shell, which finds the variables
        in its environment, so no value is ever spliced into shell code; ${DOCKER_SECRET:NAME}
        is substituted shell-quoted. A ${VAR} without default that `env` lacks is an error now,
        before anything runs."""
        secrets_dir = env.get("DBOS_MIGRATE_SECRETS_DIR") or SECRETS_DIR
        text, missing = shell_text(item.raw, env, secrets_dir)
        if missing:
            replace_missing = Text(item.value, item.raw, item.path, item.line, item.column, missing)
            replace_missing.require(self.file, what)
        return text


@dataclass
class _Substituted:
    missing: dict[Path, tuple[str, ...]] = field(default_factory=dict)
    secrets: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- schema


def schema_text() -> str:
    """The JSON Schema, from inside the installed package, or from the source tree."""
    from importlib import resources

    try:
        return (resources.files("dbos_migrate") / "schemas" / "dbos-config.schema.json").read_text("utf-8")
    except (FileNotFoundError, NotADirectoryError):
        source = FsPath(__file__).resolve().parents[2] / "schemas" / "dbos-config.schema.json"
        return source.read_text("utf-8")


@cache
def schema() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(schema_text())
    return loaded


# ---------------------------------------------------------------------------- substitution


def substitute(text: str, environ: Mapping[str, str], secrets_dir: str) -> tuple[str, tuple[str, ...]]:
    """Expand `${VAR}`, `${VAR:-default}` and `${DOCKER_SECRET:NAME}` in one string.

    Returns the expanded text and the names that were unset (expanded as empty).
    Anything else between `${` and `}` is left as written.
    """
    missing: list[str] = []

    def expand(match: re.Match[str]) -> str:
        inner = match.group(1)
        if inner.startswith("DOCKER_SECRET:"):
            name = inner[len("DOCKER_SECRET:") :]
            if not _SECRET_NAME.match(name):
                return match.group(0)
            try:
                with open(os.path.join(secrets_dir, name), encoding="utf-8") as fh:
                    return fh.read().rstrip("\r\n")
            except (OSError, UnicodeDecodeError):
                missing.append(inner)
                return ""
        var, sep, default = inner.partition(":-")
        if not _NAME.match(var):
            return match.group(0)
        value = environ.get(var)
        if value is not None and (value != "" or not sep):
            return value
        if sep:
            return default
        missing.append(var)
        return ""

    return _VAR.sub(expand, text), tuple(missing)


def shell_text(raw: str, environ: Mapping[str, str], secrets_dir: str) -> tuple[str, tuple[str, ...]]:
    """A command's text for /bin/sh: only ${DOCKER_SECRET:NAME} is replaced (shell-quoted);
    returns it and the ${VAR} names (without default) that `environ` does not set."""
    import shlex

    missing: list[str] = []

    def expand(match: re.Match[str]) -> str:
        inner = match.group(1)
        if inner.startswith("DOCKER_SECRET:"):
            value, gone = substitute(match.group(0), {}, secrets_dir)
            missing.extend(gone)
            return shlex.quote(value) if not gone else match.group(0)
        var, sep, _ = inner.partition(":-")
        if _NAME.match(var) and not sep and var not in environ:
            missing.append(var)
        return match.group(0)

    return _VAR.sub(expand, raw), tuple(missing)


def _substitute_tree(value: Any, path: Path, env: Mapping[str, str], sdir: str, out: _Substituted) -> Any:
    if isinstance(value, str):
        if "${" not in value:
            return value
        new, missing = substitute(value, env, sdir)
        if missing:
            out.missing[path] = missing
        for match in _VAR.finditer(value):
            if match.group(1).startswith("DOCKER_SECRET:") and match.group(1) not in missing:
                out.secrets.append(substitute(match.group(0), {}, sdir)[0])
        return new
    if isinstance(value, dict):
        return {k: _substitute_tree(v, (*path, k), env, sdir, out) for k, v in value.items()}
    if isinstance(value, list):
        return [_substitute_tree(v, (*path, i), env, sdir, out) for i, v in enumerate(value)]
    return value


# ---------------------------------------------------------------------------- validation


# What a key name looks like. A key that does not (a line of /etc/shadow read as a key, a
# token) is never echoed: only its length is (docs/security.md, "Text that others control").
_KEY_LIKE = re.compile(r"[A-Za-z_][A-Za-z0-9_-]{0,63}\Z")


def shown_key(key: str) -> str:
    """`key` as a problem may show it: itself if it looks like a key name, else its length."""
    return key if _KEY_LIKE.match(key) else f"<a key of {len(key)} characters, not shown>"


def dotted(path: Path) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{shown_key(part)}" if out else shown_key(part))
    return out


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__}"


_TYPE_WORDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "empty",
}


def _all_keys(node: Mapping[str, Any], prefix: str, out: dict[str, str]) -> None:
    for key, sub in node.get("properties", {}).items():
        out.setdefault(key, f"{prefix}{key}")
        if isinstance(sub, dict) and "properties" in sub:
            _all_keys(sub, f"{prefix}{key}.", out)


def _unknown_key_hint(key: str, allowed: list[str], here: str) -> str | None:
    def norm(s: str) -> str:
        return s.lower().replace("_", "").replace("-", "")

    for candidate in allowed:
        if norm(candidate) == norm(key):
            return f"did you mean '{candidate}'?"
    import difflib  # only to explain an unknown key: not on the start-up path

    close = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
    if close:
        return f"did you mean '{close[0]}'?"
    everywhere: dict[str, str] = {}
    _all_keys(schema(), "", everywhere)
    home = everywhere.get(key)
    if home and home != f"{here}{key}":
        return f"'{key}' belongs at '{home}'"
    if allowed:
        return "known keys here: " + ", ".join(sorted(allowed))
    return None


_ANNOTATIONS = frozenset(
    {
        "$schema",
        "$id",
        "$defs",
        "title",
        "description",
        "deprecated",
        "x-replacement",
        "x-schema-version",
        "default",
    }
)
_CHECKED = frozenset(
    {
        "type",
        "enum",
        "properties",
        "additionalProperties",
        "items",
        "minLength",
        "pattern",
        "minimum",
        "maximum",
        "anyOf",
        "$ref",
    }
)
_TYPES = {
    "string": lambda v: isinstance(v, str),
    "boolean": lambda v: isinstance(v, bool),
    "null": lambda v: v is None,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
    "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
    "integer": lambda v: (isinstance(v, int) and not isinstance(v, bool)) or (isinstance(v, float) and v.is_integer()),
}


def _conforms(value: Any, node: Any, root: dict[str, Any]) -> bool:
    """A yes/no check of `value` against our schema's small keyword set, without jsonschema.

    Importing jsonschema costs more than the rest of a no-op run, and a valid config needs
    no messages. Anything this cannot decide counts as invalid, and the full validator
    (which also writes the messages) takes over; a test cross-checks the two.
    """
    if not isinstance(node, dict) or not set(node) <= _CHECKED | _ANNOTATIONS:
        return False
    if "$ref" in node:
        ref = node["$ref"]
        if not (isinstance(ref, str) and ref.startswith("#/$defs/")):
            return False
        if not _conforms(value, root.get("$defs", {}).get(ref[len("#/$defs/") :]), root):
            return False
    if "type" in node:
        types = node["type"] if isinstance(node["type"], list) else [node["type"]]
        if not any(t in _TYPES and _TYPES[t](value) for t in types):
            return False
    if "enum" in node and not any(value == e and type(value) is type(e) for e in node["enum"]):
        return False
    if "anyOf" in node and not any(_conforms(value, sub, root) for sub in node["anyOf"]):
        return False
    if isinstance(value, str):
        if len(value) < node.get("minLength", 0):
            return False
        if "pattern" in node and not re.search(node["pattern"], value):
            return False
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if "minimum" in node and value < node["minimum"]:
            return False
        if "maximum" in node and value > node["maximum"]:
            return False
    if isinstance(value, list) and "items" in node and not all(_conforms(i, node["items"], root) for i in value):
        return False
    if isinstance(value, dict):
        props = node.get("properties", {})
        extra = node.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                if not _conforms(item, props[key], root):
                    return False
            elif extra is False or (extra is not True and not _conforms(item, extra, root)):
                return False
    return True


def _schema_problems(tree: YamlTree, value: Any, file: str, skip: set[Path]) -> list[Problem]:
    if _conforms(value, schema(), schema()):
        return []
    from jsonschema import Draft202012Validator

    problems: list[Problem] = []
    validator = Draft202012Validator(schema())
    for err in validator.iter_errors(value):
        path: Path = tuple(err.absolute_path)
        if path in skip:
            continue
        here = dotted(path)
        if err.validator == "additionalProperties" and isinstance(err.instance, dict):
            allowed = list(err.schema.get("properties", {}))
            for key in err.instance:
                if key in allowed:
                    continue
                line, col = tree.where((*path, key), key=True)
                hint = _unknown_key_hint(key, allowed, f"{here}." if here else "")
                problems.append(Problem(file, line, col, dotted((*path, key)), "unknown key", hint))
            continue
        line, col = tree.where(path)
        message, hint = _describe(err.validator, err.validator_value, err.instance, path, err.schema)
        problems.append(Problem(file, line, col, here or "(top level)", message, hint))
    return problems


def _describe(kind: Any, expected: Any, instance: Any, path: Path, sch: Any) -> tuple[str, str | None]:
    last = path[-1] if path else ""
    parent = path[-2] if len(path) >= 2 else ""
    if kind == "type":
        if last in ("migrate", "rollback", "start", "setup") and isinstance(instance, str):
            return (
                "must be a list of commands, not a single string: DBOS runs a bare string one character at a time",
                f"write it as a list:\n      {last}:\n        - <command>",
            )
        types = expected if isinstance(expected, list) else [expected]
        words = " or ".join(_TYPE_WORDS.get(str(t), str(t)) for t in types)
        hint = None
        if parent == "env" or (path and path[0] == "env" and len(path) == 2):
            hint = 'quote the value, e.g. PORT: "8000"'
        return f"must be {words}, not {_json_type(instance)}", hint
    if kind == "enum":
        return "must be one of: " + ", ".join(str(e) for e in expected), None
    if kind == "minLength":
        return "must not be empty", None
    if kind == "pattern":
        if expected == "\\S":
            return "a command must not be blank", None
        return "must be a number", None
    if kind in ("minimum", "maximum"):
        word = "at least" if kind == "minimum" else "at most"
        return f"must be {word} {expected}", None
    if kind == "anyOf" and last in ("port", "admin_port"):
        return "must be a port number from 1 to 65535", None
    return f"is not valid here ({kind})", None


def _deprecations(tree: YamlTree, value: Any, file: str) -> list[Problem]:
    out: list[Problem] = []

    def walk(node: Any, sch: Mapping[str, Any], path: Path) -> None:
        if not isinstance(node, dict):
            return
        props = sch.get("properties", {})
        for key, sub in node.items():
            spec = props.get(key)
            if not isinstance(spec, dict):
                continue
            if spec.get("deprecated"):
                line, col = tree.where((*path, key), key=True)
                repl = spec.get("x-replacement", "")
                out.append(Problem(file, line, col, dotted((*path, key)), f"deprecated: replaced by {repl}"))
            walk(sub, spec, (*path, key))

    walk(value, schema(), ())
    return out


# ---------------------------------------------------------------------------- loading


def load(
    path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load and validate a config file. Raises ConfigError listing every problem found."""
    env = os.environ if environ is None else environ
    fs_path = FsPath(path if path is not None else DEFAULT_CONFIG)
    file = str(fs_path)
    raw = read_config_bytes(fs_path, given=path is not None)
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        line, col = _offset_line_col(raw, exc.start)
        raise ConfigError([Problem(file, line, col, "", "the file is not valid UTF-8")]) from None
    return from_text(text, fs_path.absolute(), env, display=file)


def read_config_bytes(fs_path: FsPath, *, given: bool) -> bytes:
    """The file's bytes, refusing anything larger than MAX_CONFIG_BYTES before reading it
    whole: a 3 GB file or /dev/zero must be a clean exit 2, not a crash (docs/behaviour.md)."""
    from dbos_migrate.settings.regular import NotRegularFile, open_regular

    file = str(fs_path)
    try:
        with os.fdopen(open_regular(fs_path), "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > MAX_CONFIG_BYTES:
                raise _too_big(file)
            raw = fh.read(MAX_CONFIG_BYTES + 1)
    except FileNotFoundError:
        if given:
            raise UsageError(
                f"{file}: no such config file (tried {fs_path.absolute()})", "check the path given to -c/--config"
            ) from None
        raise UsageError(
            f"{file}: no such config file in {FsPath.cwd()}", "run from the app's directory, or pass -c/--config PATH"
        ) from None
    except IsADirectoryError:
        raise UsageError(f"{file}: is a directory, not a config file", "pass -c PATH/dbos-config.yaml") from None
    except NotRegularFile as exc:  # a FIFO would block forever (docs/security.md)
        raise UsageError(f"{file}: is {exc.kind}, not a config file", "pass a regular file") from None
    except OSError as exc:
        raise UsageError(f"{file}: cannot read the config file: {exc.strerror}") from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise _too_big(file)
    return raw


def _too_big(file: str) -> ConfigError:
    return ConfigError(
        [Problem(file, 1, 1, "", f"the file is larger than {MAX_CONFIG_BYTES} bytes: not a config file")]
    )


def by_position(problems: list[Problem]) -> list[Problem]:
    """Problems in the order a person reads the file: by line, then column."""
    return sorted(problems, key=lambda p: (p.line, p.column))


def _offset_line_col(raw: bytes, offset: int) -> tuple[int, int]:
    before = raw[:offset]
    return before.count(b"\n") + 1, offset - (before.rfind(b"\n") + 1) + 1


def from_text(text: str, path: FsPath, environ: Mapping[str, str], display: str | None = None) -> Config:
    """Validate config text that was read from `path`."""
    file = display or str(path)
    tree = parse(text)
    yaml_problems = [Problem(file, line, col, dotted(p), msg) for line, col, p, msg in tree.errors]
    if yaml_problems and not isinstance(tree.value, dict):
        raise ConfigError(yaml_problems)
    # The document was built despite local problems (a duplicate key, a bad tag): keep going,
    # so the schema's problems are reported in the same pass. Paths that already have a
    # problem are not checked again.
    yaml_paths = {p for _, _, p, _ in tree.errors}
    secrets_dir = environ.get("DBOS_MIGRATE_SECRETS_DIR") or SECRETS_DIR
    subst = _Substituted()
    value = _substitute_tree(tree.value, (), environ, secrets_dir, subst)
    warnings: list[Problem] = []
    for p, names in sorted(subst.missing.items(), key=lambda item: tree.where(item[0])):
        line, col = tree.where(p)
        shown = ", ".join("${" + n + "}" for n in names)
        warnings.append(Problem(file, line, col, dotted(p), f"{shown} is not set (read as empty)"))
    problems = yaml_problems + _schema_problems(tree, value, file, set(subst.missing) | yaml_paths)
    warnings.extend(_deprecations(tree, value, file))
    if problems:
        partial = None
        if isinstance(value, dict):
            # Best effort, so that validate reports the name and URL problems in the same run.
            with contextlib.suppress(TypeError, AttributeError, ValueError, KeyError):
                partial = _build(tree, value, path, subst, tuple(warnings), file)
        raise ConfigError(by_position(problems), by_position(warnings), partial)
    return _build(tree, value, path, subst, tuple(warnings), file)


def _build(
    tree: YamlTree,
    value: dict[str, Any],
    path: FsPath,
    subst: _Substituted,
    warnings: tuple[Problem, ...],
    display: str | None = None,
) -> Config:
    raw_tree = tree.value

    def text(p: Path) -> Text | None:
        node: Any = value
        raw: Any = raw_tree
        for part in p:
            if not isinstance(node, (dict, list)):
                return None
            try:
                node = node[part]  # type: ignore[index]
                raw = raw[part]
            except (KeyError, IndexError, TypeError):
                return None
        if node is None:
            return None
        line, col = tree.where(p)
        return Text(str(node), str(raw), dotted(p), line, col, subst.missing.get(p, ()))

    def texts(p: Path) -> tuple[Text, ...]:
        node: Any = value
        for part in p:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, list):
            return ()
        return tuple(t for i in range(len(node)) if (t := text((*p, i))) is not None)

    db: dict[str, Any] = value.get("database") or {}
    timeout = db.get("connectionTimeoutMillis")
    section = DatabaseSection(
        app_db_name=text(("database", "app_db_name")),
        migrate=texts(("database", "migrate")),
        rollback=texts(("database", "rollback")),
        hostname=text(("database", "hostname")),
        port=text(("database", "port")),
        username=text(("database", "username")),
        password=text(("database", "password")),
        connect_timeout_ms=timeout if isinstance(timeout, int) else None,
        ssl=db.get("ssl") if isinstance(db.get("ssl"), bool) else None,
        ssl_ca=text(("database", "ssl_ca")),
        sys_db_name=text(("database", "sys_db_name")),
    )
    env_block = value.get("env") or {}
    language = value.get("language")
    language = language if isinstance(language, str) else None
    name = text(("name",))
    package = None
    if name is None and language in (None, "node", "typescript"):
        package = _package_name(path.parent)
    from dbos_migrate.settings.generations import advise, detect

    warnings = advise(detect(path.parent, language), warnings)  # docs/dbos-compatibility.md
    return Config(
        path=path,
        name=name,
        language=language,
        database_url=text(("database_url",)),
        system_database_url=text(("system_database_url",)),
        database=section,
        env=tuple((str(k), t) for k in env_block if (t := text(("env", k))) is not None),
        warnings=warnings,
        display=display,
        package_name=package,
        system_schema=(
            t.value if (t := text(("system_database_schema_name",))) is not None and not t.missing else None
        ),
        secrets=tuple(s for s in subst.secrets if s),
    )


def _package_name(directory: FsPath) -> str | None:
    """`name` from package.json beside the config, as the TypeScript SDK takes it when the
    config has none (used as written: a scoped name fails the app database name check)."""
    try:
        with open(directory / "package.json", encoding="utf-8") as fh:
            data = json.loads(fh.read(MAX_CONFIG_BYTES))
    except (OSError, ValueError):
        return None
    name = data.get("name") if isinstance(data, dict) else None
    if not isinstance(name, str) or not name.strip():
        return None
    return name


# ---------------------------------------------------------------------------- app database name


def derive_app_db_name(app_name: str) -> str:
    """DBOS's derivation: lowercase, `-` and space become `_`, `_` prefixed before a digit."""
    name = app_name.lower().replace("-", "_").replace(" ", "_")
    if name[:1].isdigit():
        name = "_" + name
    return name


def check_app_db_name(name: str, source: str) -> str:
    """Reject names PostgreSQL would truncate or that need quoting games; say where it came from."""
    hint = "set database.app_db_name to a name of lowercase letters, digits and underscores"
    if len(name.encode("utf-8")) > MAX_IDENTIFIER_BYTES:
        raise UsageError(
            f"app database name from {source} is {len(name.encode('utf-8'))} bytes long; "
            f"PostgreSQL truncates names past {MAX_IDENTIFIER_BYTES} bytes, so two apps could collide",
            hint,
        )
    if not APP_DB_NAME.match(name):
        raise UsageError(
            f"app database name {name!r} from {source} is not valid: it must match ^[a-z_][a-z0-9_]*$",
            hint,
        )
    if name in RESERVED_DATABASES:
        raise UsageError(
            f"app database name {name!r} from {source} is a database every PostgreSQL instance has, not an app's own",
            hint,
        )
    if name.startswith(SCRATCH_PREFIX):
        raise UsageError(
            f"app database name {name!r} from {source} starts with {SCRATCH_PREFIX!r}, which is kept "
            "for the rehearsal's scratch databases (dropped after each rehearsal)",
            hint,
        )
    return name
