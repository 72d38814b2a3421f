"""Target resolution: which instance, app database and system database; production; the
environment commands get (docs/behaviour.md). Pure: a config, options and an environment
mapping in, a Target out. No database. URL parsing itself is tested in test_conninfo.py."""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path

import pytest

from dbos_migrate.errors import ConfigError, UsageError
from dbos_migrate.settings import config
from dbos_migrate.settings.config import Config
from dbos_migrate.settings.conninfo import effective
from dbos_migrate.settings.target import (
    Target,
    command_env,
    is_production,
    parse_url,
    resolve,
    resolve_instance,
)


def cfg(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> Config:
    return config.from_text(text, tmp_path / "dbos-config.yaml", dict(env or {}), "dbos-config.yaml")


def eff(url: str, env: Mapping[str, str] | None = None):  # type: ignore[no-untyped-def]
    return effective(parse_url(url), env or {})


def target(
    config_: Config | None,
    env: Mapping[str, str] | None = None,
    *,
    db_url: str | None = None,
    app_db_name: str | None = None,
    production: bool = False,
) -> Target:
    return resolve(config_, db_url=db_url, app_db_name=app_db_name, production=production, environ=env or {})


ALL_SOURCES = """\
name: my-app
database_url: postgresql://cfguser:cfgpw@config-host:5001/postgres
database:
  hostname: legacy-host
  port: 5002
  username: legacyuser
  password: legacypw
"""

CLOUD_ENV = {"DBOS__CLOUD": "true", "DBOS_DATABASE_URL": "postgresql://clouduser:cloudpw@cloud-host:5003/postgres"}


# ---------------------------------------------------------------------------- instance precedence


def test_db_url_beats_everything(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, ALL_SOURCES), CLOUD_ENV, db_url="postgresql://cli:clipw@cli-host:6000/postgres")
    assert t.source == "--db-url"
    assert (t.instance.host, t.instance.port, t.instance.user, t.instance.password) == (
        "cli-host",
        "6000",
        "cli",
        "clipw",
    )


def test_cloud_database_url_beats_the_config(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, ALL_SOURCES), CLOUD_ENV)
    assert t.source == "DBOS_DATABASE_URL (DBOS__CLOUD)"
    assert t.instance.host == "cloud-host"
    assert t.production is True
    assert t.production_reason == "DBOS__CLOUD=true"


@pytest.mark.parametrize("flag", ["true", "TRUE", "True"])
def test_cloud_flag_case_insensitive(tmp_path: Path, flag: str) -> None:
    env = {**CLOUD_ENV, "DBOS__CLOUD": flag}
    assert target(cfg(tmp_path, ALL_SOURCES), env).source == "DBOS_DATABASE_URL (DBOS__CLOUD)"


@pytest.mark.parametrize("flag", ["false", "1", "yes", ""])
def test_without_cloud_flag_config_url_beats_env_url(tmp_path: Path, flag: str) -> None:
    env = {**CLOUD_ENV, "DBOS__CLOUD": flag}
    t = target(cfg(tmp_path, ALL_SOURCES), env)
    assert t.source == "database_url (dbos-config.yaml:2)"
    assert t.instance.host == "config-host"
    assert t.instance.password == "cfgpw"


def test_cloud_flag_without_url_falls_through_to_config(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, ALL_SOURCES), {"DBOS__CLOUD": "true"})
    assert t.source.startswith("database_url")
    assert t.production is True  # DBOS__CLOUD still forces production


def test_config_database_url_beats_legacy_fields(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, ALL_SOURCES), {"DBOS_DBHOST": "env-host"})
    assert t.source.startswith("database_url")
    assert t.instance.host == "config-host"


LEGACY = """\
name: legacy-app
database:
  hostname: legacy-host
  port: 5002
  username: legacyuser
  password: ${PGPASSWORD}
  connectionTimeoutMillis: 3000
"""


def test_legacy_fields(tmp_path: Path) -> None:
    env = {"PGPASSWORD": "legacy-pw", "DBOS_DATABASE_URL": "postgresql://x:y@env-host/postgres"}
    t = target(cfg(tmp_path, LEGACY, env), env)
    assert t.source == "database.hostname/port/username/password (legacy fields)"
    assert (t.instance.host, t.instance.port, t.instance.user, t.instance.password) == (
        "legacy-host",
        "5002",
        "legacyuser",
        "legacy-pw",
    )
    assert t.instance.param("connect_timeout") == "3"
    assert t.app_database == "legacy_app"


def test_legacy_fields_overridden_by_dbos_db_env(tmp_path: Path) -> None:
    env = {
        "PGPASSWORD": "legacy-pw",
        "DBOS_DBHOST": "override-host",
        "DBOS_DBPORT": "6543",
        "DBOS_DBUSER": "override_user",
        "DBOS_DBPASSWORD": "override-pw",
    }
    t = target(cfg(tmp_path, LEGACY, env), env)
    assert t.source.endswith("(legacy fields)")
    assert (t.instance.host, t.instance.port, t.instance.user, t.instance.password) == (
        "override-host",
        "6543",
        "override_user",
        "override-pw",
    )


def test_legacy_partial_override(tmp_path: Path) -> None:
    env = {"PGPASSWORD": "legacy-pw", "DBOS_DBPASSWORD": "only-the-password"}
    t = target(cfg(tmp_path, LEGACY, env), env)
    assert (t.instance.host, t.instance.password) == ("legacy-host", "only-the-password")


def test_legacy_defaults_when_only_some_fields_given(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: a\ndatabase:\n  password: pw\n"))
    assert (t.instance.host, t.instance.port, t.instance.user, t.instance.password) == (
        "localhost",
        "5432",
        "postgres",
        "pw",
    )


@pytest.mark.parametrize(
    ("fields", "sslmode", "rootcert"),
    [
        ("  ssl: true\n", "require", None),
        ("  ssl: false\n", "disable", None),
        ("  ssl: true\n  ssl_ca: /certs/ca.pem\n", "verify-full", "/certs/ca.pem"),
        ("", None, None),
    ],
)
def test_legacy_ssl_fields(tmp_path: Path, fields: str, sslmode: str | None, rootcert: str | None) -> None:
    t = target(cfg(tmp_path, "name: a\ndatabase:\n  hostname: h\n" + fields))
    assert t.instance.param("sslmode") == sslmode
    assert t.instance.param("sslrootcert") == rootcert


@pytest.mark.parametrize(("millis", "seconds"), [(1, "1"), (999, "1"), (1000, "1"), (1001, "2"), (30000, "30")])
def test_legacy_connect_timeout_rounds_up_to_seconds(tmp_path: Path, millis: int, seconds: str) -> None:
    t = target(cfg(tmp_path, f"name: a\ndatabase:\n  hostname: h\n  connectionTimeoutMillis: {millis}\n"))
    assert t.instance.param("connect_timeout") == seconds


def test_legacy_connect_timeout_zero_is_not_a_one_second_timeout(tmp_path: Path) -> None:
    """node-pg's connectionTimeoutMillis: 0 means no timeout; it must not become connect_timeout=1."""
    t = target(cfg(tmp_path, "name: a\ndatabase:\n  hostname: h\n  connectionTimeoutMillis: 0\n"))
    assert t.instance.param("connect_timeout") != "1"


def test_legacy_unset_password_variable_is_an_error_when_used(tmp_path: Path) -> None:
    c = cfg(tmp_path, LEGACY)
    assert any("${PGPASSWORD}" in w.message for w in c.warnings)
    with pytest.raises(ConfigError) as info:
        target(c, {})
    (p,) = info.value.problems
    assert p.path == "database.password"
    assert "${PGPASSWORD} is not set" in p.message


@pytest.mark.parametrize("port", ["abc", "99999", "0", "²"])
def test_bad_dbos_dbport_is_a_usage_error(tmp_path: Path, port: str) -> None:
    with pytest.raises(UsageError):
        target(cfg(tmp_path, "name: a\n"), {"DBOS_DBPORT": port})


def test_dbos_db_env_alone_selects_legacy_source(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: a\n"), {"DBOS_DBHOST": "envhost", "DBOS_DATABASE_URL": "postgresql://h2/x"})
    assert t.source.endswith("(legacy fields)")
    assert t.instance.host == "envhost"


def test_dbos_database_url_without_cloud(tmp_path: Path) -> None:
    env = {"DBOS_DATABASE_URL": "postgresql://envuser:envpw@env-host:5004/postgres?sslmode=require"}
    t = target(cfg(tmp_path, "name: my-app\n"), env)
    assert t.source == "DBOS_DATABASE_URL"
    assert t.instance.host == "env-host"
    assert t.instance.param("sslmode") == "require"


def test_default_url_from_pg_env(tmp_path: Path) -> None:
    env = {"PGUSER": "pguser", "PGPASSWORD": "p@ss:w/rd", "PGHOST": "pg-host", "PGPORT": "5555"}
    t = target(cfg(tmp_path, "name: my-app\n"), env)
    assert (
        t.source
        == "the DBOS default postgres:dbos@localhost:5432, with PGUSER=pguser, PGHOST=pg-host, PGPORT=5555, PGPASSWORD"
    )
    assert (t.instance.user, t.instance.password, t.instance.host, t.instance.port) == (
        "pguser",
        "p@ss:w/rd",
        "pg-host",
        "5555",
    )


def test_default_url_without_env(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: my-app\n"), {})
    assert t.instance.url.text == "postgresql://postgres:dbos@localhost:5432"
    assert t.source == "the DBOS default postgres:dbos@localhost:5432"
    assert t.production is False


def test_default_url_with_socket_pghost(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: my-app\n"), {"PGHOST": "/var/run/postgresql"})
    assert t.instance.host == "/var/run/postgresql"
    assert t.production is False


@pytest.mark.parametrize("host", ["::1", "[::1]", "2001:db8::5"])
def test_default_url_with_ipv6_pghost(tmp_path: Path, host: str) -> None:
    t = target(cfg(tmp_path, "name: my-app\n"), {"PGHOST": host})
    assert t.instance.host == host.strip("[]")


def test_no_config_uses_default(tmp_path: Path) -> None:
    t = target(None, {"DBOS_DATABASE_URL": "postgresql://h/my_db"})
    assert t.source == "DBOS_DATABASE_URL"
    assert t.app_database == "my_db"


def test_unset_database_url_variable_is_an_error_when_chosen(tmp_path: Path) -> None:
    c = cfg(tmp_path, "name: a\ndatabase_url: ${DBOS_DATABASE_URL}\n")
    with pytest.raises(ConfigError) as info:
        target(c, {})
    assert "${DBOS_DATABASE_URL} is not set" in info.value.problems[0].message
    # ...but not when a higher source wins
    assert target(c, {}, db_url="postgresql://h/postgres").source == "--db-url"


def test_unset_database_url_variable_in_cloud(tmp_path: Path) -> None:
    c = cfg(tmp_path, "name: a\ndatabase_url: ${DBOS_DATABASE_URL}\n")
    assert target(c, CLOUD_ENV).source == "DBOS_DATABASE_URL (DBOS__CLOUD)"


def test_bad_url_in_config_names_the_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        target(cfg(tmp_path, "name: a\ndatabase_url: mysql://u:pw@h/db\n"))
    assert "dbos-config.yaml:2:15: database_url:" in info.value.message
    assert "pw" not in info.value.message.replace("PostgreSQL", "")


# ---------------------------------------------------------------------------- secrets


def test_secret_query_params_are_registered_as_secrets(tmp_path: Path) -> None:
    """A password given as ?password= must be scrubbed from command output like any other."""
    t = target(None, {}, db_url="postgresql://u@h/postgres?password=QueryS3cret&sslpassword=KeyS3cret", app_db_name="a")
    assert "QueryS3cret" in t.secrets
    assert "KeyS3cret" in t.secrets


def test_target_masked_everywhere(tmp_path: Path) -> None:
    t = target(None, {}, db_url="postgresql://u:S3cr3t!@db.example.com/postgres", app_db_name="app")
    assert "S3cr3t!" in t.secrets
    for shown in (t.instance.masked(), t.app_url.masked(), t.system.url_text(mask=True)):
        assert "S3cr3t" not in shown


# ---------------------------------------------------------------------------- app and system URLs


def test_app_url_is_instance_with_app_database(tmp_path: Path) -> None:
    t = target(
        cfg(tmp_path, "name: my-app\n"),
        {},
        db_url="postgresql://u:pw@h:5432/postgres?sslmode=require&application_name=x",
    )
    assert t.app_database == "my_app"
    assert t.app_url.text == "postgresql://u:pw@h:5432/my_app?sslmode=require&application_name=x"
    assert t.instance.url.database == "postgres"


def test_system_url_default_suffix(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: my-app\n"), {}, db_url="postgresql://u:pw@h/postgres?sslmode=require")
    assert t.system.url_text(mask=False) == "postgresql://u:pw@h/my_app_dbos_sys?sslmode=require"


def test_system_url_from_sys_db_name(tmp_path: Path) -> None:
    t = target(
        cfg(tmp_path, "name: my-app\ndatabase:\n  sys_db_name: custom_sys\n"), {}, db_url="postgresql://h/postgres"
    )
    assert t.system.name == "custom_sys"
    assert t.system.endpoint is not None and t.system.endpoint.host == "h"


def test_system_url_from_config(tmp_path: Path) -> None:
    text = "name: my-app\nsystem_database_url: postgresql://s:spw@sys-host/sysdb\ndatabase:\n  sys_db_name: ignored\n"
    t = target(cfg(tmp_path, text), {}, db_url="postgresql://h/postgres")
    assert t.system.url_text(mask=False) == "postgresql://s:spw@sys-host/sysdb"
    assert "spw" in t.secrets


def test_system_url_with_unset_variable_falls_back(tmp_path: Path) -> None:
    text = "name: my-app\nsystem_database_url: ${DBOS_SYSTEM_DATABASE_URL}\n"
    t = target(cfg(tmp_path, text), {}, db_url="postgresql://h/postgres")
    assert t.system.name == "my_app_dbos_sys"


def test_sys_db_name_with_unset_variable_falls_back(tmp_path: Path) -> None:
    text = "name: my-app\ndatabase:\n  sys_db_name: ${SYS_DB}\n"
    t = target(cfg(tmp_path, text), {}, db_url="postgresql://h/postgres")
    assert t.system.name == "my_app_dbos_sys"


# ---------------------------------------------------------------------------- app database precedence


def test_app_db_cli_beats_everything(tmp_path: Path) -> None:
    c = cfg(tmp_path, "name: my-app\ndatabase:\n  app_db_name: from_config\n")
    t = target(c, {}, db_url="postgresql://h/from_url", app_db_name="from_cli")
    assert (t.app_database, t.app_database_source) == ("from_cli", "--app-db-name")


def test_app_db_config_beats_url(tmp_path: Path) -> None:
    c = cfg(tmp_path, "name: my-app\ndatabase:\n  app_db_name: from_config\n")
    t = target(c, {}, db_url="postgresql://h/from_url")
    assert (t.app_database, t.app_database_source) == ("from_config", "database.app_db_name")


def test_app_db_url_beats_name(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: my-app\n"), {}, db_url="postgresql://h/from_url")
    assert (t.app_database, t.app_database_source) == ("from_url", "the database in the URL")
    assert t.app_url.database == "from_url"


@pytest.mark.parametrize("maintenance", ["postgres", "template0", "template1"])
def test_maintenance_database_in_url_is_not_the_app_database(tmp_path: Path, maintenance: str) -> None:
    t = target(cfg(tmp_path, "name: My-App\n"), {}, db_url=f"postgresql://h/{maintenance}")
    assert (t.app_database, t.app_database_source) == ("my_app", "derived from name 'My-App' (the config)")


def test_no_app_db_name_is_exit_2(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        target(cfg(tmp_path, "language: node\n"), {}, db_url="postgresql://h/postgres")
    assert info.value.exit_code == 2
    assert "no app database name" in info.value.message
    assert info.value.hint is not None and "app_db_name" in info.value.hint


def test_unset_variable_in_name_is_named_when_deriving(tmp_path: Path) -> None:
    c = cfg(tmp_path, "name: ${APP_NAME}\n")
    with pytest.raises(ConfigError) as info:
        target(c, {}, db_url="postgresql://h/postgres")
    assert "${APP_NAME} is not set" in info.value.problems[0].message


@pytest.mark.parametrize(
    ("kwargs", "text", "source"),
    [
        ({"app_db_name": "Bad-Name"}, "name: a\n", "--app-db-name"),
        ({}, "name: a\ndatabase:\n  app_db_name: bad-name\n", "database.app_db_name"),
        ({"db_url": "postgresql://h/Bad-Db"}, "name: a\n", "the database in the URL"),
        ({}, "name: 'my.app'\n", "name 'my.app' (the config)"),
        ({}, "name: " + "a" * 64 + "\n", "(the config)"),
    ],
)
def test_invalid_app_db_name_names_its_source(tmp_path: Path, kwargs: dict[str, str], text: str, source: str) -> None:
    kwargs.setdefault("db_url", "postgresql://h/postgres")
    with pytest.raises(UsageError) as info:
        target(cfg(tmp_path, text), {}, **kwargs)  # type: ignore[arg-type]
    assert source in info.value.message
    assert info.value.hint is not None and "database.app_db_name" in info.value.hint


# ---------------------------------------------------------------------------- production detection


@pytest.mark.parametrize(
    "host",
    ["localhost", "LOCALHOST", "127.0.0.1", "127.1.2.3", "[::1]", "%2Fvar%2Frun%2Fpostgresql", "%2Ftmp", ""],
)
def test_local_hosts_are_not_production(host: str) -> None:
    assert is_production(eff(f"postgresql://{host}:5432/db"), {}, False) == (False, "every host is local")


@pytest.mark.parametrize(
    "host",
    [
        "db.example.com",
        "10.0.0.5",
        "192.168.1.10",
        "0.0.0.0",
        "[2001:db8::1]",
        "localhost.example.com",
        "mylocalhost",
        "localhost.",
        "LOCALHOST.",
        "abc.cloud.dbos.dev",
        "127.0.0.1.nip.io",
    ],
)
def test_remote_hosts_are_production(host: str) -> None:
    prod, reason = is_production(eff(f"postgresql://{host}/db"), {}, False)
    assert prod is True
    assert host.strip("[]") in reason


def test_any_remote_host_in_a_list_is_production() -> None:
    assert is_production(eff("postgresql://localhost,db.example.com/db"), {}, False)[0] is True
    assert is_production(eff("postgresql://localhost,127.0.0.1/db"), {}, False)[0] is False


def test_forced_production() -> None:
    assert is_production(eff("postgresql://localhost/db"), {}, True) == (True, "--production")
    assert is_production(eff("postgresql://localhost/db"), {"DBOS__CLOUD": "true"}, False) == (True, "DBOS__CLOUD=true")


@pytest.mark.parametrize(
    ("db_url", "env", "named"),
    [
        ("postgresql://u:pw@localhost:6545/postgres?hostaddr=192.0.2.2", {}, "hostaddr '192.0.2.2' (from the URL)"),
        ("postgresql://u:pw@:6545/postgres", {"PGHOST": "192.0.2.2"}, "host '192.0.2.2' (from PGHOST)"),
        (
            "postgresql://u:pw@localhost:6545/postgres",
            {"PGHOSTADDR": "192.0.2.2"},
            "hostaddr '192.0.2.2' (from PGHOSTADDR)",
        ),
    ],
)
def test_the_guard_judges_every_effective_host_and_hostaddr(
    tmp_path: Path, db_url: str, env: dict[str, str], named: str
) -> None:
    """The hostile review's bypasses: localhost in the URL, a remote address in the query or PG*."""
    t = target(cfg(tmp_path, "name: a\n"), env, db_url=db_url)
    assert t.production is True
    assert named in t.production_reason


def test_resolve_reports_production(tmp_path: Path) -> None:
    c = cfg(tmp_path, "name: a\n")
    assert target(c, {}, db_url="postgresql://u:pw@db.example.com/postgres").production is True
    assert target(c, {}, db_url="postgresql://u:pw@127.0.0.1/postgres").production is False
    assert target(c, {}, db_url="postgresql://u:pw@127.0.0.1/postgres", production=True).production is True
    sock = target(c, {}, db_url="postgresql:///postgres?host=/var/run/postgresql")
    assert sock.production is False
    assert sock.production_reason == "every host is local"


# ---------------------------------------------------------------------------- command environment


def env_for(t: Target, base: Mapping[str, str], config_env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The commands' environment, with `config_env` as the config's env: block."""
    block = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in (config_env or {}).items())
    with tempfile.TemporaryDirectory() as d:
        c = config.from_text(f"name: my-app\nenv:\n{block}" if block else "name: my-app\n", Path(d) / "c.yaml", {})
    env, _ = command_env(t, base, c)
    return env


def test_command_env_connection_variables(tmp_path: Path) -> None:
    t = target(
        cfg(tmp_path, "name: my-app\n"),
        {},
        db_url="postgresql://user:p%40ss@db.example.com:6543/postgres?sslmode=verify-full&sslrootcert=/ca.pem&connect_timeout=7",
    )
    env = env_for(t, {"PATH": "/usr/bin", "HOME": "/home/x"})
    assert env["PATH"] == "/usr/bin" and env["HOME"] == "/home/x"
    assert env["PGHOST"] == "db.example.com"
    assert env["PGPORT"] == "6543"
    assert env["PGUSER"] == "user"
    assert env["PGPASSWORD"] == "p@ss"
    assert env["PGDATABASE"] == "my_app"
    assert env["PGSSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"] == "/ca.pem"
    assert env["PGCONNECT_TIMEOUT"] == "7"
    app = parse_url(env["DBOS_DATABASE_URL"])
    assert (app.user, app.password, app.param("host"), app.param("port"), app.database) == (
        "user",
        "p@ss",
        "db.example.com",
        "6543",
        "my_app",
    )
    assert parse_url(env["DBOS_SYSTEM_DATABASE_URL"]).database == "my_app_dbos_sys"


def test_command_env_order_process_then_config_then_connection(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: my-app\n"), {}, db_url="postgresql://u:pw@h/postgres")
    base = {"A": "process", "B": "process", "PGHOST": "stale", "DBOS_DATABASE_URL": "stale", "PGDATABASE": "stale"}
    config_env = {
        "B": "config",
        "C": "config",
        "PGHOST": "config",
        "PGPASSWORD": "config",
        "DBOS_SYSTEM_DATABASE_URL": "c",
    }
    env = env_for(t, base, config_env)
    assert env["A"] == "process"
    assert env["B"] == "config"
    assert env["C"] == "config"
    assert env["PGHOST"] == "h"
    assert env["PGPASSWORD"] == "pw"
    assert env["PGDATABASE"] == "my_app"
    assert parse_url(env["DBOS_DATABASE_URL"]).database == "my_app"
    assert parse_url(env["DBOS_SYSTEM_DATABASE_URL"]).database == "my_app_dbos_sys"


def test_command_env_does_not_mutate_inputs(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: my-app\n"), {}, db_url="postgresql://u:pw@h/postgres")
    base = {"PGHOST": "x"}
    config_env = {"PGUSER": "y"}
    env_for(t, base, config_env)
    assert base == {"PGHOST": "x"} and config_env == {"PGUSER": "y"}


def test_url_params_override_process_ssl_settings(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: a\n"), {}, db_url="postgresql://u:pw@h/postgres?sslmode=require")
    env = env_for(t, {"PGSSLMODE": "disable", "PGSSLROOTCERT": "/old.pem"})
    assert env["PGSSLMODE"] == "require"


def test_process_ssl_settings_kept_when_url_has_none(tmp_path: Path) -> None:
    """dbos-migrate's own libpq connection honours PGSSLMODE/PGSSLROOTCERT from its environment
    when the URL sets none; the commands must connect the same way, not silently downgrade
    verify-full to libpq's default 'prefer'."""
    t = target(cfg(tmp_path, "name: a\n"), {}, db_url="postgresql://u:pw@h/postgres")
    env = env_for(t, {"PGSSLMODE": "verify-full", "PGSSLROOTCERT": "/etc/ca.pem", "PGCONNECT_TIMEOUT": "9"})
    assert env["PGSSLMODE"] == "verify-full"
    assert env["PGSSLROOTCERT"] == "/etc/ca.pem"
    assert env["PGCONNECT_TIMEOUT"] == "9"


def test_password_from_environment_kept_when_url_has_none(tmp_path: Path) -> None:
    """`-D postgresql://u@host/postgres` with PGPASSWORD exported: dbos-migrate connects (libpq
    reads PGPASSWORD), so its commands must be able to connect too."""
    t = target(cfg(tmp_path, "name: a\n"), {}, db_url="postgresql://u@db.example.com/postgres")
    env = env_for(t, {"PGPASSWORD": "from-env"})
    assert env["PGPASSWORD"] == "from-env"
    assert env["PGUSER"] == "u"


def test_user_from_environment_kept_when_url_has_none(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: a\n"), {}, db_url="postgresql://db.example.com/postgres")
    env = env_for(t, {"PGUSER": "envuser"})
    assert env["PGUSER"] == "envuser"


def test_password_query_param_exported(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: a\n"), {}, db_url="postgresql://u@h/postgres?password=qpw")
    assert env_for(t, {"PGPASSWORD": "stale"})["PGPASSWORD"] == "qpw"


def test_command_env_socket_dir(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: a\n"), {}, db_url="postgresql://u@/postgres?host=/var/run/postgresql&port=5433")
    env = env_for(t, {})
    assert env["PGHOST"] == "/var/run/postgresql"


def test_command_env_port_and_host_from_environment_when_url_has_none(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: a\n"), {}, db_url="postgresql:///postgres")
    env = env_for(t, {"PGHOST": "/run/pg", "PGPORT": "5439"})
    assert env["PGHOST"] == "/run/pg"
    assert env["PGPORT"] == "5439"
    env = env_for(t, {})
    assert env.get("PGPORT", "5432") == "5432"


def test_target_is_frozen(tmp_path: Path) -> None:
    t = target(cfg(tmp_path, "name: a\n"), {})
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.app_database = "other"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.instance.password = "x"  # type: ignore[misc]


def test_resolve_instance_returns_source_names(tmp_path: Path) -> None:
    url, source = resolve_instance(None, None, {})
    assert source.startswith("the DBOS default")
    assert url.param("host") == "localhost"


def test_sqlite_system_database_is_passed_through(tmp_path: Path) -> None:
    """DBOS 2.x+ accepts a SQLite system database; it only reaches the commands, as written."""
    cfg_path = tmp_path / "dbos-config.yaml"
    cfg_path.write_text("name: app\nsystem_database_url: sqlite:///dbos_system.sqlite\n")
    cfg = config.load(cfg_path, {})
    tgt = resolve(cfg, db_url="postgresql://u:pw@localhost/postgres", environ={})
    assert tgt.system.other == "sqlite:///dbos_system.sqlite" and tgt.system.endpoint is None
    env, _ = command_env(tgt, {}, cfg)
    assert env["DBOS_SYSTEM_DATABASE_URL"] == "sqlite:///dbos_system.sqlite"


# ---------------------------------------------------------------------------- the URL as the user wrote it


@pytest.mark.parametrize(
    ("db_url", "expected"),
    [
        ("postgresql+psycopg://u:pw@h:5432/postgres", "postgresql+psycopg://u:pw@h:5432/my_app"),
        ("postgresql+asyncpg://u:pw@h/postgres?ssl=require", "postgresql+asyncpg://u:pw@h/my_app?ssl=require"),
        ("postgres://u:pass!word$1*~@h/postgres", "postgres://u:pass!word$1*~@h/my_app"),
        (
            "postgresql://u:p%21w%24@h1:5432,h2:5433/postgres?target_session_attrs=read-write&sslmode=require",
            "postgresql://u:p%21w%24@h1:5432,h2:5433/my_app?target_session_attrs=read-write&sslmode=require",
        ),
        ("postgresql://u:p%40ss@h/my_app?sslmode=require", "postgresql://u:p%40ss@h/my_app?sslmode=require"),
    ],
)
def test_commands_get_the_url_as_written_with_only_the_database_replaced(
    tmp_path: Path, db_url: str, expected: str
) -> None:
    t = target(cfg(tmp_path, "name: my-app\n"), {}, db_url=db_url)
    env = env_for(t, {})
    assert env["DBOS_DATABASE_URL"] == expected
    assert env["DBOS_SYSTEM_DATABASE_URL"] == expected.replace("/my_app", "/my_app_dbos_sys")


def test_system_database_url_precedence(tmp_path: Path) -> None:
    """system_database_url, then a DBOS_SYSTEM_DATABASE_URL the user set, then derived."""
    env = {"DBOS_SYSTEM_DATABASE_URL": "postgresql+psycopg://s:spw@env-host/env_sys"}
    derived = target(cfg(tmp_path, "name: my-app\n"), {}, db_url="postgresql://h/postgres")
    assert derived.system.name == "my_app_dbos_sys" and derived.system.source == "derived: my_app_dbos_sys"
    from_env = target(cfg(tmp_path, "name: my-app\n"), env, db_url="postgresql://h/postgres")
    assert from_env.system.source == "DBOS_SYSTEM_DATABASE_URL"
    assert env_for(from_env, env)["DBOS_SYSTEM_DATABASE_URL"] == env["DBOS_SYSTEM_DATABASE_URL"]
    assert "spw" in from_env.secrets
    text = "name: my-app\nsystem_database_url: postgresql://c@cfg-host/cfg_sys\n"
    from_cfg = target(cfg(tmp_path, text), env, db_url="postgresql://h/postgres")
    assert from_cfg.system.name == "cfg_sys"


@pytest.mark.parametrize("name", ["postgres", "template1", "dbos_rehearse_x_20250101000000_c0ffee"])
def test_reserved_and_scratch_names_are_refused_for_both_databases(tmp_path: Path, name: str) -> None:
    with pytest.raises(UsageError) as info:
        target(cfg(tmp_path, f"name: a\ndatabase:\n  app_db_name: {name}\n"), {}, db_url="postgresql://h/postgres")
    assert info.value.exit_code == 2 and name in info.value.message
    with pytest.raises(UsageError):
        target(cfg(tmp_path, f"name: app\ndatabase:\n  sys_db_name: {name}\n"), {}, db_url="postgresql://h/postgres")
    if name != "postgres":
        with pytest.raises(UsageError):
            target(cfg(tmp_path, f"name: {name}\n"), {}, db_url="postgresql://h/postgres")


def test_a_typescript_app_without_name_takes_it_from_package_json(tmp_path: Path) -> None:
    (tmp_path / "package.json").write_text('{"name": "Shop-API", "version": "1.0.0"}')
    c = cfg(tmp_path, "language: typescript\ndatabase:\n  migrate: [npx knex migrate:latest]\n")
    t = target(c, {}, db_url="postgresql://h/postgres")
    assert (t.app_database, t.app_database_source) == ("shop_api", "derived from name 'Shop-API' (package.json)")
    python = cfg(tmp_path, "language: python\n")
    with pytest.raises(UsageError):
        target(python, {}, db_url="postgresql://h/postgres")


# ---------------------------------------------------------------------------- the effective connection, one way


def test_pg_variables_come_from_the_effective_connection_query_included(tmp_path: Path) -> None:
    t = target(
        cfg(tmp_path, "name: a\n"),
        {"PGPORT": "5432", "PGHOST": "elsewhere"},
        db_url="postgresql://u@/postgres?host=/socket/dir&port=6543&hostaddr=127.0.0.7",
    )
    env = env_for(t, {"PGPORT": "5432", "PGHOST": "elsewhere"})
    assert (env["PGHOST"], env["PGPORT"], env["PGHOSTADDR"]) == ("/socket/dir", "6543", "127.0.0.7")
    assert "/socket/dir (address 127.0.0.7) port 6543" in t.instance.eff.describe()


def test_pgservice_is_expanded_for_commands(tmp_path: Path) -> None:
    services = tmp_path / "s.conf"
    services.write_text("[svc]\nhost=svc-host\nport=6001\n")
    env = {"PGSERVICE": "svc", "PGSERVICEFILE": str(services)}
    t = target(cfg(tmp_path, "name: a\n"), env, db_url="postgresql://u:pw@url-host/postgres")
    out = env_for(t, env)
    assert out["PGHOST"] == "url-host" and out["PGPORT"] == "6001"
    assert "PGSERVICE" not in out  # libpq would let the service beat PGHOST in the commands


def test_env_entries_resolve_against_the_run_target_and_unset_ones_are_left_out(tmp_path: Path) -> None:
    text = "name: my-app\nenv:\n  DATABASE_URL: ${DBOS_DATABASE_URL}\n  HOSTNAME_COPY: ${PGHOST}\n  TOKEN: ${NOT_SET_ANYWHERE}\n"
    c = cfg(tmp_path, text)
    real = target(c, {}, db_url="postgresql://u:pw@real-host/postgres")
    env, skipped = command_env(real, {"TOKEN": "from-process"}, c)
    assert env["DATABASE_URL"] == "postgresql://u:pw@real-host/my_app" and env["HOSTNAME_COPY"] == "real-host"
    assert env["TOKEN"] == "from-process"  # not overwritten with an empty string
    assert [p.path for p in skipped] == ["env.TOKEN"] and "${NOT_SET_ANYWHERE}" in skipped[0].message
    scratch = dataclasses.replace(real, app_database="dbos_rehearse_my_app_x")
    env, _ = command_env(scratch, {}, c)
    assert env["DATABASE_URL"].endswith("/dbos_rehearse_my_app_x") and "TOKEN" not in env


# ---------------------------------------------------------------------------- the `***` of `dbos-cloud db url`


CLOUD_URL = "postgresql://dbosadmin:***@db.example.com:5432/postgres"


def test_a_masked_cloud_password_is_not_a_password(tmp_path: Path) -> None:
    c = cfg(tmp_path, "name: shop\n")
    t = target(c, {}, db_url=CLOUD_URL)
    assert t.password_needed is True and t.instance.password is None
    filled = target(c, {"PGPASSWORD": "real-secret"}, db_url=CLOUD_URL)
    assert filled.password_needed is False and filled.instance.password == "real-secret"
    env = env_for(filled, {"PGPASSWORD": "real-secret"})
    assert env["PGPASSWORD"] == "real-secret"
    typed = t.with_password("typ/ed@pw")
    assert typed.app_url.text == "postgresql://dbosadmin:typ%2Fed%40pw@db.example.com:5432/shop"
    assert "typ/ed@pw" in typed.secrets and typed.app_url.masked().count("***") == 1


def test_supabase_style_cloud_user_names_parse(tmp_path: Path) -> None:
    t = target(
        cfg(tmp_path, "name: shop\n"),
        {"PGPASSWORD": "x"},
        db_url="postgresql://postgres.abcdefghijkl:***@aws-0.pooler.supabase.com:6543/postgres",
    )
    assert t.instance.user == "postgres.abcdefghijkl" and t.production is True
