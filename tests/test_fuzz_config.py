"""Property tests: whatever the input, the loader and the URL parser fail only in the ways
the CLI knows how to report (ConfigError / UsageError), and never leak a secret."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
import yaml
from helpers import examples
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from dbos_migrate.errors import ConfigError, UsageError
from dbos_migrate.settings import config
from dbos_migrate.settings.config import Config
from dbos_migrate.settings.conninfo import MASK, split
from dbos_migrate.settings.target import PgUrl, parse_url, resolve

FILE = Path("/nonexistent/dbos-config.yaml")
ENV: dict[str, str] = {}
FAST = settings(max_examples=examples(300), deadline=None, suppress_health_check=[HealthCheck.too_slow])

TOP_KEYS = [
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
]
DB_KEYS = [
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
]
RT_KEYS = ["start", "setup", "entrypoints", "port", "admin_port", "runAdminServer"]
ALL_KEYS = TOP_KEYS + DB_KEYS + RT_KEYS + ["databse", "migrations", "logs", "logLevel"]

YAMLISH = st.lists(
    st.sampled_from([*"abcxyz019 _-:#&*!|>'\"%@`,[]{}?\n\t$\\/.=~", "${", "}", "- ", ": ", "\n  "]),
    max_size=120,
).map("".join)


def env_values(c: Config) -> dict[str, str]:
    """The env: block as read at load time (against the given environment)."""
    return {k: t.value for k, t in c.env}


def check_load(text: str, env: dict[str, str] | None = None) -> Config | None:
    """The loaded config, or None after checking the ConfigError names located problems. The
    loader fails on text only with a ConfigError: any other exception (a bare UsageError
    included) fails the test."""
    try:
        return config.from_text(text, FILE, {**ENV, **(env or {})})
    except ConfigError as exc:
        assert exc.problems, "a ConfigError always names at least one problem"
        for p in exc.problems:
            assert p.line >= 1 and p.column >= 1
            assert p.message
            p.render()
        return None


def commands_are_text(cfg: Config) -> bool:
    """What a loaded config promises the verbs: its command lists are tuples of non-blank strings."""
    commands = (*cfg.database.migrate, *cfg.database.rollback)
    return isinstance(cfg.database.migrate, tuple) and all(
        isinstance(t.value, str) and t.value.strip() for t in commands
    )


@FAST
@given(st.text(max_size=300))
def test_arbitrary_text(text: str) -> None:
    cfg = check_load(text)
    assert cfg is None or commands_are_text(cfg)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "name: a\nname: b\n",
        "a: &a [*a]\n",
        "- [",
        "? [a]\n: b\n",
        "<<: *x\n",
        "database: !!python/name:os.system\n",
    ],
)
def test_known_bad_texts_are_config_errors(text: str) -> None:
    assert check_load(text) is None


@FAST
@given(YAMLISH)
def test_yaml_shaped_text(text: str) -> None:
    cfg = check_load(text)
    assert cfg is None or commands_are_text(cfg)


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=30),
    st.sampled_from(["", " ", "5432", "postgresql://u:p@h/db", "${X}", "${DOCKER_SECRET:x}", "python"]),
)
keys = st.one_of(st.sampled_from(ALL_KEYS), st.text(max_size=12))
structures = st.recursive(
    scalars,
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=5),
    ),
    max_leaves=25,
)
documents = st.dictionaries(keys, structures, max_size=6)


@FAST
@given(documents, st.booleans())
def test_arbitrary_structures(doc: dict[str, Any], flow: bool) -> None:
    text = yaml.safe_dump(doc, default_flow_style=flow, allow_unicode=True)
    cfg = check_load(text, {"X": "value"})
    if cfg is not None:
        assert isinstance(cfg.database.migrate, tuple)
        for t in (*cfg.database.migrate, *cfg.database.rollback):
            assert isinstance(t.value, str) and t.value.strip()


# PyYAML's emitter does not round-trip the Unicode line breaks NEL, LS and PS: not ours to test.
plain_text = st.text(alphabet=st.characters(codec="utf-8", exclude_characters="\x85\u2028\u2029"), max_size=40)
good_commands = st.lists(plain_text.filter(lambda s: s.strip() and "${" not in s), min_size=1, max_size=4)


@FAST
@given(good_commands, good_commands, st.dictionaries(plain_text.filter(bool), plain_text))
def test_valid_structures_round_trip(migrate: list[str], rollback: list[str], env: dict[str, str]) -> None:
    assume(all("${" not in v for v in env.values()))
    doc = {"name": "fuzz-app", "database": {"migrate": migrate, "rollback": rollback}, "env": env}
    cfg = config.from_text(yaml.safe_dump(doc, allow_unicode=True), FILE, ENV)
    assert [t.value for t in cfg.database.migrate] == migrate
    assert [t.value for t in cfg.database.rollback] == rollback
    assert env_values(cfg) == env


TEMPLATE = """\
name: ${V}
database_url: postgresql://user:${V}@db.example.com:5432/postgres
database:
  app_db_name: fuzz_app
  password: ${V}
  migrate:
    - echo "${V}"
    - ${V:-default}
  rollback:
    - "${V} ${V}"
env:
  ONE: ${V}
  TWO: prefix-${V}-suffix
  THREE: plain
"""


@FAST
@given(st.text(min_size=1, max_size=80))
@example("a: b\nc: d")
@example("# comment")
@example("\n- item\n")
@example("{x: [1, 2]}")
@example("&a *a !!python/object:os.system | >")
@example("${V}")
@example("'\"")
def test_substitution_never_changes_the_structure(value: str) -> None:
    assume(value.strip())  # a blank value makes `- ${V}` a blank command: rightly an error
    cfg = config.from_text(TEMPLATE, FILE, {**ENV, "V": value})
    assert cfg.name is not None and cfg.name.value == value
    assert cfg.database_url is not None
    assert cfg.database_url.value == f"postgresql://user:{value}@db.example.com:5432/postgres"
    assert cfg.database.app_db_name is not None and cfg.database.app_db_name.value == "fuzz_app"
    assert cfg.database.password is not None and cfg.database.password.value == value
    assert [t.value for t in cfg.database.migrate] == [f'echo "{value}"', value]
    assert [t.value for t in cfg.database.rollback] == [f"{value} {value}"]
    assert list(env_values(cfg).items()) == [("ONE", value), ("TWO", f"prefix-{value}-suffix"), ("THREE", "plain")]
    assert cfg.warnings == (tuple(w for w in cfg.warnings if w.message.startswith("deprecated"))), (
        "no variable is reported unset"
    )


@FAST
@given(st.text(min_size=1, max_size=40))
def test_secret_values_never_in_errors(secret: str) -> None:
    value = "S3cr" + secret + "Xq"
    text = "database:\n  port: ${V}\n  ssl: ${V}\n  migrate: ${V}\nlanguage: ${V}\nruntimeConfig:\n  port: ${V}\n"
    try:
        config.from_text(text, FILE, {**ENV, "V": value})
    except ConfigError as exc:
        assert value not in str(exc)
        for p in [*exc.problems, *exc.warnings]:
            assert value not in p.render()
    else:  # pragma: no cover - the template is always invalid
        raise AssertionError("expected a ConfigError")


# ---------------------------------------------------------------------------- URLs

SCHEMES = st.sampled_from(["postgresql", "postgres", "postgresql+psycopg", "POSTGRES", "mysql", "http", ""])
URLISH = st.lists(st.sampled_from([*"abz09:/@?#&=%[],. +-_~!$'\"", "%2F", "%40", "::1"]), max_size=40).map("".join)


def check_url(text: str, password: str | None = None) -> PgUrl | None:
    """The parsed URL, or None after checking the UsageError shows no `password`."""
    try:
        url = parse_url(text, what="--db-url")
    except UsageError as exc:
        if password:
            assert password not in exc.message
            assert password not in (exc.hint or "")
        return None
    assert isinstance(url, PgUrl)
    return url


def shown_password(url: PgUrl) -> str | None:
    """What the masked URL shows where the password is written (None: no password written)."""
    masked = url.masked()
    span = split(masked).password
    return None if span is None else masked[span[0] : span[1]]


def masks(url: PgUrl) -> bool:
    """The URL as shown keeps what was written except the password, shown as the mask."""
    return shown_password(url) in (None, MASK) and shown_password(url.with_database("fuzz_app")) in (None, MASK)


@FAST
@given(st.text(max_size=120))
def test_any_string_as_url(text: str) -> None:
    url = check_url(text)
    assert url is None or (url.text == text.strip() and masks(url))


@FAST
@given(SCHEMES, URLISH)
def test_url_shaped_strings(scheme: str, rest: str) -> None:
    url = check_url(f"{scheme}://{rest}")
    assert url is None or (url.scheme.lower().startswith("postgres") and masks(url))


host_parts = st.sampled_from(
    ["db.example.com", "db.example.com:5432", "[::1]:5432", "10.0.0.1", "h1:5432,h2:5433", "", ":5432"]
)
tails = st.sampled_from(["", "/postgres", "/app_db", "/db?sslmode=require", "?host=/var/run/postgresql", "/"])
password_text = st.text(  # PostgreSQL passwords cannot hold NUL (libpq refuses %00)
    alphabet=st.characters(codec="utf-8", exclude_categories=["Cs"], exclude_characters="\x00"), min_size=1, max_size=30
)


@FAST
@given(SCHEMES, password_text, host_parts, tails)
def test_password_never_in_url_errors(scheme: str, raw: str, host: str, tail: str) -> None:
    password = "PW9" + raw
    for pw in (password, quote(password, safe="")):
        url = check_url(f"{scheme}://user:{pw}@{host}{tail}", password)
        assert url is None or (masks(url) and pw not in url.masked() and password not in url.masked())


@FAST
@given(password_text, host_parts, tails)
def test_percent_encoded_password_always_parsed_exactly(raw: str, host: str, tail: str) -> None:
    password = "PW9" + raw
    url = check_url(f"postgresql://user:{quote(password, safe='')}@{host}{tail}", password)
    assert url is not None
    assert url.password == password
    assert password not in url.masked()


unencoded = st.text(alphabet=st.sampled_from(list("abcXYZ019@:/#&=+!$-_.~ ")), min_size=1, max_size=24)


@FAST
@given(
    unencoded,
    st.sampled_from(["db.example.com", "db.example.com:5432", "[::1]:5432"]),
    st.sampled_from(["/postgres", "/app", ""]),
)
@example("p@ss/w:rd", "db.example.com:5432", "/postgres")
@example("a@b/c#d", "db.example.com", "/app")
@example("x@h/db#a", "db.example.com:5432", "/postgres")
def test_unencoded_password_parsed_or_not_leaked(raw: str, host: str, tail: str) -> None:
    """Operators paste passwords that were never percent-encoded. libpq reads those without
    '@', '/', '%' or a space exactly; the others are refused with the encoding hint, never misread
    (another tool would read them differently: libpq and SQLAlchemy end the userinfo at the
    first '@', browsers at the last). In no case does any output show the password."""
    password = "PW9" + raw
    url = check_url(f"postgresql://user:{password}@{host}{tail}", password)
    if any(c in password for c in "@/% "):
        assert url is None
        return
    assert url is not None
    assert url.password == password
    assert password not in url.masked()


@FAST
@given(SCHEMES, password_text, host_parts, tails, st.sampled_from([None, "fuzz_app"]))
def test_resolve_any_db_url(scheme: str, raw: str, host: str, tail: str, app: str | None) -> None:
    password = "PW9" + raw
    for pw in (password, quote(password, safe="")):
        try:
            t = resolve(None, db_url=f"{scheme}://user:{pw}@{host}{tail}", app_db_name=app, environ={})
        except UsageError as exc:
            assert password not in exc.message
            assert password not in (exc.hint or "")
            continue
        assert password not in t.instance.masked()
        assert password not in t.app_url.masked()
        assert password not in t.system.url_text(mask=True)
