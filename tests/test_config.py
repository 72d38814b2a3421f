"""Loading dbos-config.yaml (docs/behaviour.md, "The config file"). Pure: no database, no network.

Every test asserts on a specific message, path, line or value, so a regression in the
loader's wording or positions fails here rather than in a user's CI.
"""

from __future__ import annotations

import dataclasses
import os
import re
import time
from collections.abc import Mapping
from pathlib import Path

import pytest

from dbos_migrate.errors import ConfigError, Problem, UsageError
from dbos_migrate.report.jsonshape import to_json
from dbos_migrate.settings import config
from dbos_migrate.settings.config import Config, Text, check_app_db_name, derive_app_db_name

FILE = "dbos-config.yaml"
RENDERED = re.compile(r"^(?P<file>[^\n]+?):(?P<line>\d+):(?P<col>\d+): (?:(?P<path>[^:\n]+): )?(?P<msg>.+)$")


def env_values(c: Config) -> dict[str, str]:
    """The env: block as read at load time (against the given environment)."""
    return {k: t.value for k, t in c.env}


def write(tmp_path: Path, text: str | bytes, name: str = FILE) -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str | bytes, env: Mapping[str, str] | None = None) -> Config:
    """Load twice, through a private config cache: a cold and a warm load must agree."""
    environ = {"DBOS_MIGRATE_CACHE_DIR": str(tmp_path / ".cache"), **(env or {})}
    path = write(tmp_path, text)
    cold = config.load(path, environ)
    warm = config.load(path, environ)
    assert warm == cold
    return cold


def problems(tmp_path: Path, text: str | bytes, env: Mapping[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    return info.value.problems


def one(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> Problem:
    found = problems(tmp_path, text, env)
    assert len(found) == 1, [p.render() for p in found]
    return found[0]


def by_path(found: list[Problem]) -> dict[str, list[Problem]]:
    out: dict[str, list[Problem]] = {}
    for p in found:
        out.setdefault(p.path, []).append(p)
    return out


# ---------------------------------------------------------------------------- parsing


def test_minimal_config_loads_with_positions(tmp_path: Path) -> None:
    cfg = load(tmp_path, "# comment\nname: my-app\nlanguage: python\n")
    assert cfg.name is not None
    assert cfg.name.value == "my-app"
    assert (cfg.name.line, cfg.name.column) == (2, 7)
    assert cfg.name.path == "name"
    assert cfg.language == "python"
    assert cfg.database.migrate == ()
    assert cfg.warnings == ()
    assert cfg.directory == tmp_path
    assert cfg.path.is_absolute()


def test_yaml_syntax_error_has_line_and_column(tmp_path: Path) -> None:
    p = one(tmp_path, "name: a\ndatabase:\n  migrate: [one, two\nlanguage: python\n")
    assert p.message.startswith("invalid YAML")
    assert p.line in (3, 4)
    assert p.column >= 1
    assert p.render().startswith(f"{tmp_path / FILE}:{p.line}:{p.column}: ") or p.render().startswith(f"{FILE}:")


def test_bad_indentation_is_a_clean_error(tmp_path: Path) -> None:
    p = one(tmp_path, "database:\n  migrate:\n    - a\n   - b\n")
    assert "invalid YAML" in p.message
    assert p.line == 4


def test_duplicate_top_level_key_names_both_lines(tmp_path: Path) -> None:
    p = one(tmp_path, "name: one\nlanguage: python\n\nname: two\n")
    assert p.path == "name"
    assert p.line == 4
    assert p.column == 1
    assert "duplicate key" in p.message
    assert "line 1" in p.message


def test_duplicate_nested_key_is_an_error(tmp_path: Path) -> None:
    text = "name: a\ndatabase:\n  migrate:\n    - one\n  migrate:\n    - two\n"
    p = one(tmp_path, text)
    assert p.path == "database.migrate"
    assert (p.line, p.column) == (5, 3)
    assert "first defined on line 3" in p.message


def test_duplicate_key_does_not_hide_other_problems(tmp_path: Path) -> None:
    """Every problem at once, so a duplicate key must not stop the schema check."""
    found = problems(tmp_path, "name: a\nname: b\ndatabse:\n  migrate: [x]\n")
    paths = {p.path for p in found}
    assert paths == {"name", "databse"}, [p.render() for p in found]


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("- name: a\n- name: b\n", "a list"),
        ("just a string\n", "a single value"),
        ("42\n", "a single value"),
    ],
)
def test_top_level_must_be_a_mapping(tmp_path: Path, text: str, kind: str) -> None:
    p = one(tmp_path, text)
    assert p.message == f"the top level must be a mapping of keys, not {kind}"
    assert (p.line, p.column) == (1, 1)


@pytest.mark.parametrize("text", ["", "\n\n", "# only a comment\n", "---\n"])
def test_empty_file_is_an_error(tmp_path: Path, text: str) -> None:
    p = one(tmp_path, text)
    assert "empty" in p.message
    assert "mapping" in p.message


def test_top_level_null_value_document_is_not_a_mapping(tmp_path: Path) -> None:
    p = one(tmp_path, "~\n")
    assert "top level must be a mapping" in p.message


# ---------------------------------------------------------------------------- unknown keys


@pytest.mark.parametrize(
    ("text", "path", "line", "hint"),
    [
        ("databse:\n  migrate: [x]\n", "databse", 1, "did you mean 'database'?"),
        ("name: a\ndatabase:\n  migrations:\n    - x\n", "database.migrations", 3, "did you mean 'migrate'?"),
        ("database:\n  app_db_nmae: foo\n", "database.app_db_nmae", 2, "did you mean 'app_db_name'?"),
        ("name: a\nmigrate:\n  - x\n", "migrate", 2, "'migrate' belongs at 'database.migrate'"),
        ("rollback: [x]\n", "rollback", 1, "'rollback' belongs at 'database.rollback'"),
        ("app_db_name: x\n", "app_db_name", 1, "'app_db_name' belongs at 'database.app_db_name'"),
        ("Name: x\n", "Name", 1, "did you mean 'name'?"),
        ("system-database-url: x\n", "system-database-url", 1, "did you mean 'system_database_url'?"),
        ("runtimeConfig:\n  entrypoint: x\n", "runtimeConfig.entrypoint", 2, "did you mean 'entrypoints'?"),
        ("database:\n  host: x\n", "database.host", 2, "hostname"),
        ("runtime_config:\n  start: [x]\n", "runtime_config", 1, "did you mean 'runtimeConfig'?"),
    ],
)
def test_unknown_key_with_hint(tmp_path: Path, text: str, path: str, line: int, hint: str) -> None:
    p = one(tmp_path, text)
    assert p.path == path
    assert p.message == "unknown key"
    assert p.line == line
    assert p.hint is not None
    assert hint in p.hint
    # the column is the key's own column
    key = path.rsplit(".", 1)[-1]
    assert text.splitlines()[line - 1][p.column - 1 :].startswith(key)


def test_unknown_key_without_close_match_lists_known_keys(tmp_path: Path) -> None:
    p = one(tmp_path, "database:\n  zzzzqqq: 1\n")
    assert p.hint is not None
    assert p.hint.startswith("known keys here: ")
    assert "app_db_name" in p.hint and "migrate" in p.hint


def test_unknown_keys_at_several_levels_reported_together(tmp_path: Path) -> None:
    text = "nmae: a\ndatabase:\n  migrat: [x]\nruntimeConfig:\n  strat: [y]\n"
    found = by_path(problems(tmp_path, text))
    assert set(found) == {"nmae", "database.migrat", "runtimeConfig.strat"}
    assert found["nmae"][0].hint == "did you mean 'name'?"
    assert found["database.migrat"][0].hint == "did you mean 'migrate'?"
    assert found["runtimeConfig.strat"][0].hint == "did you mean 'start'?"


# ---------------------------------------------------------------------------- every field accepted

EVERY_FIELD = """\
# yaml-language-server: $schema=https://raw.githubusercontent.com/dbos-inc/dbos-transact-py/main/dbos/dbos-config.schema.json
name: every-field
language: typescript
version: "1.0"
database_url: postgresql://u:p@db.example.com:5432/every_field?sslmode=require
system_database_url: postgresql://u:p@db.example.com:5432/every_field_dbos_sys
system_database_schema_name: dbos
database:
  app_db_name: every_field
  migrate:
    - npx knex migrate:latest
  rollback:
    - npx knex migrate:rollback
  hostname: localhost
  port: 5432
  username: postgres
  password: ${PGPASSWORD}
  connectionTimeoutMillis: 3000
  ssl: false
  ssl_ca: /etc/ssl/certs/ca.pem
  sys_db_name: every_field_sys
  local_suffix: false
  app_db_client: knex
runtimeConfig:
  start:
    - node dist/main.js
  setup:
    - npm ci
  entrypoints:
    - dist/operations.js
  port: 3000
  admin_port: "3001"
  runAdminServer: true
env:
  NODE_ENV: production
  PORT: "3000"
telemetry:
  logs:
    logLevel: info
  OTLPExporter:
    tracesEndpoint: http://localhost:4318/v1/traces
http:
  cors_middleware: true
application:
  payment_host: http://localhost:8086
"""

DEPRECATED = {
    "version": "remove it",
    "database.hostname": "database_url",
    "database.port": "database_url",
    "database.username": "database_url",
    "database.password": "database_url",
    "database.connectionTimeoutMillis": "connect_timeout in database_url",
    "database.ssl": "sslmode in database_url",
    "database.ssl_ca": "sslrootcert in database_url",
    "database.sys_db_name": "system_database_url",
    "database.local_suffix": "database.app_db_name",
    "database.app_db_client": "ORM",
}


def test_every_field_of_every_release_is_accepted(tmp_path: Path) -> None:
    cfg = load(tmp_path, EVERY_FIELD, {"PGPASSWORD": "pw"})
    db = cfg.database
    assert cfg.language == "typescript"
    assert db.app_db_name is not None and db.app_db_name.value == "every_field"
    assert [t.value for t in db.migrate] == ["npx knex migrate:latest"]
    assert [t.value for t in db.rollback] == ["npx knex migrate:rollback"]
    assert db.hostname is not None and db.hostname.value == "localhost"
    assert db.port is not None and db.port.value == "5432"
    assert db.password is not None and db.password.value == "pw"
    assert db.connect_timeout_ms == 3000
    assert db.ssl is False
    assert db.sys_db_name is not None and db.sys_db_name.value == "every_field_sys"
    assert env_values(cfg) == {"NODE_ENV": "production", "PORT": "3000"}
    assert cfg.system_database_url is not None


def test_deprecated_fields_warn_naming_the_replacement(tmp_path: Path) -> None:
    cfg = load(tmp_path, EVERY_FIELD, {"PGPASSWORD": "pw"})
    warned = {w.path: w for w in cfg.warnings}
    assert set(warned) == set(DEPRECATED)
    lines = EVERY_FIELD.splitlines()
    for path, replacement in DEPRECATED.items():
        w = warned[path]
        assert w.message.startswith("deprecated: replaced by ")
        assert replacement in w.message
        key = path.rsplit(".", 1)[-1]
        assert lines[w.line - 1][w.column - 1 :].startswith(key + ":"), (path, w)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('version: "1.0"\n', "deprecated: replaced by nothing: DBOS no longer reads it, remove it"),
        ("database:\n  app_db_client: knex\n", "deprecated: replaced by configuring the ORM in the app's code"),
        ("database:\n  ssl_ca: ca.pem\n", "deprecated: replaced by sslrootcert in database_url"),
    ],
)
def test_deprecation_messages_read_well(tmp_path: Path, text: str, message: str) -> None:
    (w,) = load(tmp_path, text).warnings
    assert w.message == message


@pytest.mark.parametrize("language", ["python", "node", "typescript"])
def test_language_values(tmp_path: Path, language: str) -> None:
    assert load(tmp_path, f"language: {language}\n").language == language


def test_unknown_language_lists_the_allowed_ones(tmp_path: Path) -> None:
    p = one(tmp_path, "language: rust\n")
    assert p.path == "language"
    assert p.message == "must be one of: python, node, typescript"


def test_app_db_client_enum(tmp_path: Path) -> None:
    p = one(tmp_path, "database:\n  app_db_client: sequelize\n")
    assert p.path == "database.app_db_client"
    assert "knex" in p.message and "prisma" in p.message


# ---------------------------------------------------------------------------- commands


@pytest.mark.parametrize("key", ["migrate", "rollback"])
def test_bare_string_command_is_an_error_explaining_char_by_char(tmp_path: Path, key: str) -> None:
    p = one(tmp_path, f"database:\n  {key}: alembic upgrade head\n")
    assert p.path == f"database.{key}"
    assert "not a single string" in p.message
    assert "one character at a time" in p.message
    assert p.hint is not None and f"{key}:\n" in p.hint and "- <command>" in p.hint
    assert (p.line, p.column) == (2, len(key) + 5)


@pytest.mark.parametrize(
    ("item", "message"),
    [
        ('""', "must not be empty"),
        ('"   "', "a command must not be blank"),
        ("42", "must be a string, not a number"),
        ("~", "must be a string, not null"),
        ("[a, b]", "must be a string, not a list"),
        ("{a: b}", "must be a string, not a mapping"),
        ("true", "must be a string, not a boolean"),
    ],
)
def test_command_items_must_be_non_empty_strings(tmp_path: Path, item: str, message: str) -> None:
    found = problems(tmp_path, f"database:\n  migrate:\n    - ok\n    - {item}\n")
    assert all(p.path == "database.migrate[1]" for p in found), [p.render() for p in found]
    assert message in [p.message for p in found]
    assert all((p.line, p.column) == (4, 7) for p in found)


@pytest.mark.parametrize("value", ["{a: b}", "42", "~"])
def test_commands_must_be_a_list(tmp_path: Path, value: str) -> None:
    p = one(tmp_path, f"database:\n  rollback: {value}\n")
    assert p.path == "database.rollback"
    assert p.message.startswith("must be a list")


def test_commands_keep_order_and_shell_text(tmp_path: Path) -> None:
    text = (
        "database:\n  migrate:\n"
        "    - npx knex migrate:latest\n"
        "    - 'psql -c \"select 1\" && echo done # not a comment'\n"
        "    - >-\n      alembic upgrade\n      head\n"
    )
    cfg = load(tmp_path, text)
    assert [t.value for t in cfg.database.migrate] == [
        "npx knex migrate:latest",
        'psql -c "select 1" && echo done # not a comment',
        "alembic upgrade head",
    ]
    assert [t.path for t in cfg.database.migrate] == [f"database.migrate[{i}]" for i in range(3)]
    assert [t.line for t in cfg.database.migrate] == [3, 4, 5]


def test_anchors_and_aliases_work_in_ordinary_use(tmp_path: Path) -> None:
    cfg = load(tmp_path, "database:\n  migrate: &cmds\n    - a\n    - b\n  rollback: *cmds\n")
    assert [t.value for t in cfg.database.rollback] == ["a", "b"]


# ---------------------------------------------------------------------------- scalars


@pytest.mark.parametrize("port", ["5432", '"5432"', "'6543'", "1", "65535"])
def test_port_number_or_numeric_string(tmp_path: Path, port: str) -> None:
    cfg = load(tmp_path, f"database:\n  port: {port}\n")
    assert cfg.database.port is not None
    assert cfg.database.port.value == port.strip("'\"")


@pytest.mark.parametrize("port", ["abc", '"54a2"', "0", "70000", "true", "54.5", '""', "[5432]"])
def test_bad_port(tmp_path: Path, port: str) -> None:
    p = one(tmp_path, f"database:\n  port: {port}\n")
    assert p.path == "database.port"
    assert p.message == "must be a port number from 1 to 65535"
    assert (p.line, p.column) == (2, 9)


def test_runtime_ports_checked_too(tmp_path: Path) -> None:
    found = by_path(problems(tmp_path, "runtimeConfig:\n  port: http\n  admin_port: -1\n"))
    assert set(found) == {"runtimeConfig.port", "runtimeConfig.admin_port"}


@pytest.mark.parametrize(
    ("value", "kind"),
    [("8000", "a number"), ("true", "a boolean"), ("~", "null"), ("[a]", "a list"), ("{a: b}", "a mapping")],
)
def test_env_values_must_be_strings_with_quote_hint(tmp_path: Path, value: str, kind: str) -> None:
    p = one(tmp_path, f"env:\n  GOOD: fine\n  PORT: {value}\n")
    assert p.path == "env.PORT"
    assert p.message == f"must be a string, not {kind}"
    assert p.hint is not None and "quote the value" in p.hint
    assert (p.line, p.column) == (3, 9)


def test_env_must_be_a_mapping(tmp_path: Path) -> None:
    p = one(tmp_path, "env:\n  - A=1\n")
    assert p.path == "env"
    assert p.message == "must be a mapping, not a list"


def test_env_keeps_order_and_values(tmp_path: Path) -> None:
    cfg = load(tmp_path, 'env:\n  B: "2"\n  A: "1"\n  EMPTY: ""\n')
    assert list(env_values(cfg).items()) == [("B", "2"), ("A", "1"), ("EMPTY", "")]


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("name: 123\n", "name", "must be a string, not a number"),
        ('name: ""\n', "name", "must not be empty"),
        ("database: [a]\n", "database", "must be a mapping, not a list"),
        ("database:\n", "database", "must be a mapping, not null"),
        ("database:\n  ssl: yes please\n", "database.ssl", "must be true or false, not a string"),
        ("database:\n  connectionTimeoutMillis: soon\n", "database.connectionTimeoutMillis", "must be an integer"),
        ("telemetry: [a]\n", "telemetry", "must be a mapping or empty, not a list"),
        ("name: 2024-01-01\n", "name", "must be a string"),
    ],
)
def test_type_errors(tmp_path: Path, text: str, path: str, message: str) -> None:
    p = one(tmp_path, text)
    assert p.path == path
    assert p.message.startswith(message), p.message


def test_every_problem_reported_at_once_in_file_line_col_path_message_form(tmp_path: Path) -> None:
    text = (
        "name: my-app\n"  # 1
        "databse: {}\n"  # 2
        "database:\n"  # 3
        "  migrate: alembic upgrade head\n"  # 4
        "  rollback:\n"  # 5
        '    - ""\n'  # 6
        "  port: nope\n"  # 7
        "env:\n"  # 8
        "  PORT: 8000\n"  # 9
        "language: cobol\n"  # 10
    )
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        config.load(path, {})
    found = info.value.problems
    where = {p.path: (p.line, p.column) for p in found}
    assert where == {
        "databse": (2, 1),
        "database.migrate": (4, 12),
        "database.rollback[0]": (6, 7),
        "database.port": (7, 9),
        "env.PORT": (9, 9),
        "language": (10, 11),
    }
    for p in found:
        m = RENDERED.match(p.render().splitlines()[0])
        assert m is not None, p.render()
        assert m["file"] == str(path)
        assert (int(m["line"]), int(m["col"])) == (p.line, p.column)
        assert m["path"] == p.path
        assert m["msg"] == p.message
    message = str(info.value)
    assert message.endswith(f"{len(found)} problems in the config")
    for p in found:
        assert p.render() in message
    # deprecation warnings travel with the error
    assert [w.path for w in info.value.warnings] == ["database.port"]


def test_hint_is_rendered_on_its_own_line(tmp_path: Path) -> None:
    p = one(tmp_path, "databse: {}\n")
    assert p.render() == f"{tmp_path / FILE}:1:1: databse: unknown key\n    hint: did you mean 'database'?"


# ---------------------------------------------------------------------------- substitution


def test_var_substituted_in_every_string_value(tmp_path: Path) -> None:
    text = (
        "name: ${APP}\n"
        "database_url: postgresql://u:${PW}@${HOST}:5432/db\n"
        "database:\n"
        "  app_db_name: ${APP_DB}\n"
        "  migrate:\n"
        "    - echo ${APP} && alembic upgrade head\n"
        "env:\n"
        "  TOKEN: ${PW}\n"
    )
    env = {"APP": "my-app", "PW": "s3cret", "HOST": "db.example.com", "APP_DB": "my_app"}
    cfg = load(tmp_path, text, env)
    assert cfg.name is not None and cfg.name.value == "my-app" and cfg.name.raw == "${APP}"
    assert cfg.database_url is not None
    assert cfg.database_url.value == "postgresql://u:s3cret@db.example.com:5432/db"
    assert cfg.database_url.raw == "postgresql://u:${PW}@${HOST}:5432/db"
    assert cfg.database.app_db_name is not None and cfg.database.app_db_name.value == "my_app"
    assert cfg.database.migrate[0].value == "echo my-app && alembic upgrade head"
    assert cfg.database.migrate[0].raw == "echo ${APP} && alembic upgrade head"
    assert env_values(cfg) == {"TOKEN": "s3cret"}
    assert cfg.warnings == ()


@pytest.mark.parametrize(
    ("env", "expected"),
    [({}, "fallback"), ({"V": ""}, "fallback"), ({"V": "given"}, "given")],
)
def test_default_syntax(tmp_path: Path, env: dict[str, str], expected: str) -> None:
    cfg = load(tmp_path, "name: ${V:-fallback}\n", env)
    assert cfg.name is not None and cfg.name.value == expected
    assert cfg.name.missing == ()
    assert cfg.warnings == ()


def test_default_may_be_empty_and_contain_colons(tmp_path: Path) -> None:
    cfg = load(tmp_path, 'name: "${A:-}x"\ndatabase_url: ${U:-postgresql://postgres:dbos@localhost:5432}\n')
    assert cfg.name is not None and cfg.name.value == "x"
    assert cfg.database_url is not None and cfg.database_url.value == "postgresql://postgres:dbos@localhost:5432"


def test_set_but_empty_variable_is_not_missing(tmp_path: Path) -> None:
    cfg = load(tmp_path, 'env:\n  A: "${EMPTY}"\n', {"EMPTY": ""})
    assert env_values(cfg) == {"A": ""}
    assert cfg.warnings == ()


def test_substitution_is_not_recursive(tmp_path: Path) -> None:
    cfg = load(tmp_path, "name: ${OUTER}\n", {"OUTER": "${INNER}", "INNER": "leak"})
    assert cfg.name is not None and cfg.name.value == "${INNER}"


@pytest.mark.parametrize("text", ["name: ${not a var}\n", "name: ${1X}\n", "name: $HOME\n", "name: ${}\n"])
def test_non_variable_braces_are_left_as_written(tmp_path: Path, text: str) -> None:
    cfg = load(tmp_path, text, {"HOME": "/root", "X": "x"})
    assert cfg.name is not None
    assert cfg.name.value == text[len("name: ") : -1]


def test_docker_secret_read_from_secrets_dir(tmp_path: Path) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "db_password").write_text("pa:ss #word\n", encoding="utf-8")
    text = "database:\n  password: ${DOCKER_SECRET:db_password}\n"
    cfg = load(tmp_path, text, {"DBOS_MIGRATE_SECRETS_DIR": str(secrets)})
    assert cfg.database.password is not None
    assert cfg.database.password.value == "pa:ss #word"
    assert cfg.database.password.raw == "${DOCKER_SECRET:db_password}"


def test_missing_docker_secret_is_a_warning_naming_it(tmp_path: Path) -> None:
    text = "name: a\nenv:\n  KEY: ${DOCKER_SECRET:nope}\n"
    cfg = load(tmp_path, text, {"DBOS_MIGRATE_SECRETS_DIR": str(tmp_path)})
    assert [(w.path, w.line, w.column) for w in cfg.warnings] == [("env.KEY", 3, 8)]
    assert "${DOCKER_SECRET:nope}" in cfg.warnings[0].message


def test_docker_secret_name_cannot_escape_the_directory(tmp_path: Path) -> None:
    (tmp_path / "outside").write_text("leak", encoding="utf-8")
    inner = tmp_path / "secrets"
    inner.mkdir()
    cfg = load(tmp_path, "name: ${DOCKER_SECRET:../outside}\n", {"DBOS_MIGRATE_SECRETS_DIR": str(inner)})
    assert cfg.name is not None and "leak" not in cfg.name.value


def test_docker_secret_substitution_exactly(tmp_path: Path) -> None:
    """config.substitute on DOCKER_SECRET: the file's text with only its line ending removed
    (trailing blanks and letters are the secret's own); a missing file expands to nothing and
    is named; a name that could leave the directory is left as written, whole."""
    (tmp_path / "token").write_bytes(b"pa ss X  \r\n")
    assert config.substitute("<${DOCKER_SECRET:token}>", {}, str(tmp_path)) == ("<pa ss X  >", ())
    (tmp_path / "key").write_bytes(b"XsecretX\n")
    assert config.substitute("${DOCKER_SECRET:key}", {}, str(tmp_path)) == ("XsecretX", ())
    assert config.substitute("<${DOCKER_SECRET:nope}>", {}, str(tmp_path)) == ("<>", ("DOCKER_SECRET:nope",))
    for text in ("${DOCKER_SECRET:../token}", "${DOCKER_SECRET:}", "${DOCKER_SECRET:a/b}"):
        assert config.substitute(text, {}, str(tmp_path)) == (text, ())


def test_only_docker_secret_values_that_were_read_are_kept_for_scrubbing(tmp_path: Path) -> None:
    """Config.secrets (scrubbed from all output) holds each value read through DOCKER_SECRET,
    and nothing else: not a variable's default, not a secret that could not be read."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text("s3cret-token\n", encoding="utf-8")
    text = "name: ${APP:-fallback}\nenv:\n  TOKEN: ${DOCKER_SECRET:token}\n  OTHER: ${DOCKER_SECRET:nope}\n"
    cfg = load(tmp_path, text, {"DBOS_MIGRATE_SECRETS_DIR": str(secrets)})
    assert cfg.name is not None and cfg.name.value == "fallback"
    assert cfg.secrets == ("s3cret-token",)


# Values that would change the document if substituted into the raw text.
HOSTILE_VALUES = [
    "a: b",
    "x # not a comment",
    "line1\nline2: injected",
    "{a: b}",
    "[1, 2, 3]",
    "&anchor *alias !tag | > %",
    "- item",
    "'quoted\" \\",
    "\n\ndatabase:\n  migrate: [rm -rf /]\n",
    "${OTHER}",
    "   leading and trailing   ",
    "\t\ttabs",
    "---",
    "...",
    "?",
]


@pytest.mark.parametrize("value", HOSTILE_VALUES)
def test_substituted_values_never_change_the_structure(tmp_path: Path, value: str) -> None:
    text = "name: ${V}\ndatabase:\n  migrate:\n    - echo ${V}\nenv:\n  A: ${V}\n  B: plain\n"
    cfg = load(tmp_path, text, {"V": value, "OTHER": "other"})
    assert cfg.name is not None and cfg.name.value == value
    assert [t.value for t in cfg.database.migrate] == [f"echo {value}"]
    assert cfg.database.rollback == ()
    assert list(env_values(cfg).items()) == [("A", value), ("B", "plain")]


def test_unset_variable_is_only_a_warning_with_its_line(tmp_path: Path) -> None:
    text = "name: a\ndatabase:\n  migrate:\n    - echo ${NOT_SET_1} ${ALSO_NOT_SET}\n"
    cfg = load(tmp_path, text)
    assert len(cfg.warnings) == 1
    w = cfg.warnings[0]
    assert (w.path, w.line, w.column) == ("database.migrate[0]", 4, 7)
    assert w.message == "${NOT_SET_1}, ${ALSO_NOT_SET} is not set (read as empty)"
    item = cfg.database.migrate[0]
    assert item.missing == ("NOT_SET_1", "ALSO_NOT_SET")
    assert item.value == "echo  "


def test_unset_variable_in_a_checked_field_is_not_a_schema_error(tmp_path: Path) -> None:
    cfg = load(tmp_path, "database:\n  port: ${PORT}\n  app_db_name: ${DB}\n")
    paths = [w.path for w in cfg.warnings if "not set" in w.message]
    assert paths == ["database.port", "database.app_db_name"]


def test_require_raises_config_error_naming_the_variable(tmp_path: Path) -> None:
    cfg = load(tmp_path, "name: a\ndatabase_url: ${DBOS_DATABASE_URL}\n")
    assert cfg.database_url is not None
    with pytest.raises(ConfigError) as info:
        cfg.database_url.require(cfg.file, "the target database")
    (p,) = info.value.problems
    assert (p.line, p.column, p.path) == (2, 15, "database_url")
    assert "${DBOS_DATABASE_URL} is not set" in p.message
    assert "the target database" in p.message
    assert p.hint is not None and "${VAR:-default}" in p.hint
    assert info.value.exit_code == 2


def test_require_returns_the_value_when_set(tmp_path: Path) -> None:
    cfg = load(tmp_path, "database_url: ${U}\n", {"U": "postgresql://h/db"})
    assert cfg.database_url is not None
    assert cfg.database_url.require(cfg.file, "x") == "postgresql://h/db"


SECRET = "Hunter2-T0p$ecret!"


@pytest.mark.parametrize(
    "text",
    [
        "database:\n  port: ${S}\n",
        "database:\n  migrate: ${S}\n",
        "database:\n  ssl: ${S}\n",
        "database:\n  app_db_client: ${S}\n",
        "language: ${S}\n",
        "runtimeConfig:\n  admin_port: ${S}\n",
        "database:\n  rollback:\n    - ${S}\n    - ''\n",
        "databse: ${S}\n",
        "name: ${S}\ndatabase: ${S}\n",
    ],
)
def test_substituted_secret_never_in_messages(tmp_path: Path, text: str) -> None:
    env = {"S": SECRET}
    with pytest.raises(ConfigError) as info:
        load(tmp_path, text, env)
    exc = info.value
    assert exc.problems
    assert SECRET not in str(exc)
    assert SECRET not in repr(exc.problems)
    for p in [*exc.problems, *exc.warnings]:
        assert SECRET not in p.message
        assert SECRET not in (p.hint or "")
        assert SECRET not in p.render()
        assert SECRET not in str(to_json(p))


def test_docker_secret_never_in_messages(tmp_path: Path) -> None:
    secrets = tmp_path / "s"
    secrets.mkdir()
    (secrets / "pw").write_text(SECRET + "\n", encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load(tmp_path, "database:\n  port: ${DOCKER_SECRET:pw}\n", {"DBOS_MIGRATE_SECRETS_DIR": str(secrets)})
    assert SECRET not in str(info.value)
    assert "port" in str(info.value)


def test_secret_in_a_valid_config_not_in_warnings(tmp_path: Path) -> None:
    cfg = load(tmp_path, "database:\n  password: ${S}\n  hostname: ${S}\n", {"S": SECRET})
    assert cfg.warnings
    for w in cfg.warnings:
        assert SECRET not in w.render()


# ---------------------------------------------------------------------------- app database name


@pytest.mark.parametrize(
    ("name", "derived"),
    [
        ("my-app", "my_app"),
        ("My App", "my_app"),
        ("Hello World-2", "hello_world_2"),
        ("1app", "_1app"),
        ("9-Lives", "_9_lives"),
        ("already_ok", "already_ok"),
        ("DBOS-Starter", "dbos_starter"),
    ],
)
def test_derive_app_db_name(name: str, derived: str) -> None:
    assert derive_app_db_name(name) == derived


@pytest.mark.parametrize("name", ["a", "_", "my_app", "_1app", "a" * 63, "abc_123"])
def test_valid_app_db_names(name: str) -> None:
    assert check_app_db_name(name, "database.app_db_name") == name


@pytest.mark.parametrize("name", ["my-app", "MyApp", "1app", "my app", "app$", "", "ünï", "a.b", "a;drop"])
def test_invalid_app_db_name_names_source_and_suggests_app_db_name(name: str) -> None:
    with pytest.raises(UsageError) as info:
        check_app_db_name(name, "name 'X' (derived)")
    assert "name 'X' (derived)" in info.value.message
    assert "^[a-z_][a-z0-9_]*$" in info.value.message
    assert info.value.hint is not None and "database.app_db_name" in info.value.hint
    assert info.value.exit_code == 2


def test_app_db_name_63_byte_limit() -> None:
    assert check_app_db_name("a" * 63, "x") == "a" * 63
    with pytest.raises(UsageError) as info:
        check_app_db_name("a" * 64, "--app-db-name")
    assert "64 bytes" in info.value.message
    assert "--app-db-name" in info.value.message
    assert "truncates" in info.value.message
    assert info.value.hint is not None and "database.app_db_name" in info.value.hint


def test_app_db_name_limit_counts_bytes_not_characters() -> None:
    name = "é" * 32  # 32 characters, 64 bytes
    with pytest.raises(UsageError) as info:
        check_app_db_name(name, "database.app_db_name")
    assert "64 bytes" in info.value.message


@pytest.mark.parametrize(
    ("name", "message"),
    [
        (
            "a" * 64,
            "app database name from SRC is 64 bytes long; PostgreSQL truncates names past 63 bytes, "
            "so two apps could collide",
        ),
        ("My-App", "app database name 'My-App' from SRC is not valid: it must match ^[a-z_][a-z0-9_]*$"),
        (
            "template1",
            "app database name 'template1' from SRC is a database every PostgreSQL instance has, not an app's own",
        ),
        (
            "dbos_rehearse_x",
            "app database name 'dbos_rehearse_x' from SRC starts with 'dbos_rehearse_', which is "
            "kept for the rehearsal's scratch databases (dropped after each rehearsal)",
        ),
    ],
    ids=["too-long", "invalid", "reserved", "scratch-prefix"],
)
def test_each_app_db_name_refusal_says_why_and_how_to_fix_it(name: str, message: str) -> None:
    with pytest.raises(UsageError) as info:
        check_app_db_name(name, "SRC")
    assert info.value.message == message
    assert info.value.hint == "set database.app_db_name to a name of lowercase letters, digits and underscores"


# ---------------------------------------------------------------------------- files


def test_non_utf8_file_is_a_located_config_error(tmp_path: Path) -> None:
    p = one_bytes(tmp_path, b"name: ok\nenv:\n  A: caf\xe9\n")
    assert p.message == "the file is not valid UTF-8"
    assert (p.line, p.column) == (3, 9)


def one_bytes(tmp_path: Path, raw: bytes) -> Problem:
    found = problems(tmp_path, raw)
    assert len(found) == 1
    return found[0]


def test_utf8_bom_is_accepted(tmp_path: Path) -> None:
    cfg = load(tmp_path, "\ufeffname: bom\n".encode())
    assert cfg.name is not None and cfg.name.value == "bom"


def test_missing_file_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        config.load(tmp_path / "nope.yaml", {})
    assert not isinstance(info.value, ConfigError)
    assert "no such config file" in info.value.message
    assert str(tmp_path / "nope.yaml") in info.value.message
    assert info.value.hint is not None and "-c" in info.value.hint
    assert info.value.exit_code == 2


def test_directory_is_a_usage_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        config.load(tmp_path, {})
    assert "is a directory" in info.value.message


def test_default_path_is_dbos_config_yaml_in_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write(tmp_path, "name: here\n")
    monkeypatch.chdir(tmp_path)
    cfg = config.load(None, {})
    assert cfg.name is not None and cfg.name.value == "here"
    assert cfg.directory == tmp_path


def test_oversized_file_rejected(tmp_path: Path) -> None:
    text = "name: a\n" + "# padding\n" * (config.MAX_CONFIG_BYTES // 10 + 1)
    p = one(tmp_path, text)
    assert "larger than" in p.message


def test_alias_bomb_is_a_clean_error_and_fast(tmp_path: Path) -> None:
    lines = ['a: &a ["x","x","x","x","x","x","x","x","x"]']
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{cur}: &{cur} [" + ",".join([f"*{prev}"] * 9) + "]")
    start = time.monotonic()
    p = one(tmp_path, "\n".join(lines) + "\n")
    assert time.monotonic() - start < 10
    assert "alias bomb" in p.message


@pytest.mark.parametrize(
    "text",
    [
        "a: " + "[" * 5000 + "]" * 5000 + "\n",
        "a: " + "{x: " * 3000 + "1" + "}" * 3000 + "\n",
        "a:\n" + "".join(" " * (i + 1) + f"k{i}:\n" for i in range(200)),
        "database:\n  migrate: " + "[" * 80 + "]" * 80 + "\n",
    ],
)
def test_deep_nesting_is_a_clean_error(tmp_path: Path, text: str) -> None:
    found = problems(tmp_path, text)
    assert any("nesting" in p.message or "depth" in p.message for p in found), [p.render() for p in found]


@pytest.mark.parametrize("text", ["a: &a [*a]\n", "a: &a {b: *a}\n", "name: *undefined\n"])
def test_recursive_and_undefined_aliases_are_clean_errors(tmp_path: Path, text: str) -> None:
    found = problems(tmp_path, text)
    assert any("alias" in p.message for p in found), [p.render() for p in found]


@pytest.mark.parametrize(
    "text",
    [
        "name: !!python/object:os.system x\n",
        "name: !!python/name:os.system ''\n",
        "database:\n  migrate: !!python/object/apply:os.system ['touch {marker}']\n",
        "database: !!python/object:collections.OrderedDict {{migrate: [a]}}\n",
        "database:\n  migrate:\n    - !!python/object/new:os.system ['touch {marker}']\n",
        "name: !Ref AWS::StackName\n",
        "env: !!python/object/apply:os.getcwd []\n",
    ],
)
def test_non_safe_tags_are_rejected_cleanly(tmp_path: Path, text: str) -> None:
    marker = tmp_path / "pwned"
    p = one(tmp_path, text.format(marker=marker))
    assert "tag" in p.message, p.message
    assert not marker.exists()


def test_a_key_must_be_a_plain_string(tmp_path: Path) -> None:
    found = problems(tmp_path, "1: x\n? [a]\n: y\n")
    assert [p.message for p in found] == [
        "a key must be a string",
        "a key must be a plain string, not a list or mapping",
    ]


def test_multiple_documents_rejected(tmp_path: Path) -> None:
    p = one(tmp_path, "name: a\n---\nname: b\n")
    assert "single document" in p.message
    assert p.line == 2


# ---------------------------------------------------------------------------- values are frozen


def test_config_values_are_frozen(tmp_path: Path) -> None:
    cfg = load(tmp_path, "name: a\ndatabase:\n  migrate: [x]\n")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name = None  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.database.migrate = ()  # type: ignore[misc]
    assert cfg.name is not None
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.name.value = "b"  # type: ignore[misc]
    assert isinstance(cfg.database.migrate, tuple)
    assert isinstance(cfg.env, tuple)
    assert isinstance(cfg.warnings, tuple)


def test_env_map_is_a_copy(tmp_path: Path) -> None:
    cfg = load(tmp_path, 'env:\n  A: "1"\n')
    m = env_values(cfg)
    m["A"] = "2"
    assert env_values(cfg) == {"A": "1"}


def test_from_text_without_a_file(tmp_path: Path) -> None:
    cfg = config.from_text("name: a\n", tmp_path / "virtual.yaml", {}, display="virtual.yaml")
    assert cfg.path == tmp_path / "virtual.yaml"
    with pytest.raises(ConfigError) as info:
        config.from_text("databse: {}\n", tmp_path / "virtual.yaml", {}, display="virtual.yaml")
    assert info.value.problems[0].file == "virtual.yaml"


def test_display_name_is_used_consistently(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Problems found later (Text.require) name the file the way the user gave it."""
    write(tmp_path, "database_url: ${NOPE}\n")
    monkeypatch.chdir(tmp_path)
    cfg = config.load(FILE, {})
    assert cfg.file == FILE
    assert cfg.database_url is not None
    with pytest.raises(ConfigError) as info:
        cfg.database_url.require(cfg.file, "x")
    assert info.value.problems[0].render().startswith(f"{FILE}:1:15: database_url: ")


def test_text_type_fields() -> None:
    t = Text("v", "${X}", "name", 3, 4, ("X",))
    with pytest.raises(ConfigError):
        t.require("f.yaml", "x")
    assert Text("v", "v", "name", 1, 1).require("f.yaml", "x") == "v"


def test_schema_is_valid_json_schema_and_loads_from_package() -> None:
    from jsonschema import Draft202012Validator

    sch = config.schema()
    Draft202012Validator.check_schema(sch)
    props = sch["properties"]
    for key in (
        "name",
        "language",
        "database_url",
        "system_database_url",
        "system_database_schema_name",
        "database",
        "runtimeConfig",
        "env",
        "telemetry",
        "http",
        "application",
        "version",
    ):
        assert key in props
    db = props["database"]["properties"]
    for key in (
        "app_db_name",
        "migrate",
        "rollback",
        "hostname",
        "port",
        "username",
        "password",
        "connectionTimeoutMillis",
        "ssl",
        "ssl_ca",
        "sys_db_name",
        "local_suffix",
        "app_db_client",
    ):
        assert key in db
    rt = props["runtimeConfig"]["properties"]
    assert set(rt) == {"start", "setup", "entrypoints", "port", "admin_port", "runAdminServer"}


def test_loader_does_not_read_process_environment_when_given_a_mapping(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ONLY_IN_PROCESS", "from-process")
    cfg = load(tmp_path, "name: ${ONLY_IN_PROCESS:-default}\n", {})
    assert cfg.name is not None and cfg.name.value == "default"
    cfg2 = config.load(write(tmp_path, "name: ${ONLY_IN_PROCESS}\n"))
    assert cfg2.name is not None and cfg2.name.value == os.environ["ONLY_IN_PROCESS"]


def test_standard_collection_tags_still_accepted(tmp_path: Path) -> None:
    cfg = load(tmp_path, "name: a\napplication:\n  flags: !!set {x, y}\n  order: !!omap [a: 1]\n")
    assert cfg.name is not None
