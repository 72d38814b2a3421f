"""Which PostgreSQL instance, app database and system database: resolution and masking.

A function of the config, the command-line options and an environment mapping (plus the
files libpq itself reads: service files and .pgpass), so it is tested without a database.
The precedence and every rule are those of docs/behaviour.md, "Which database instance".
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

from dbos_migrate.errors import ConfigError, Problem, UsageError
from dbos_migrate.settings.config import (
    RESERVED_DATABASES,
    SCRATCH_PREFIX,
    Config,
    Text,
    check_app_db_name,
    derive_app_db_name,
    substitute,
)
from dbos_migrate.settings.conninfo import (
    MASK,
    SECRET_PARAMS,
    Effective,
    PgUrl,
    effective,
    libpq_envvars,
    nonlocal_endpoint,
    parse_url,
    synthesized,
)

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["MASK", "SECRET_PARAMS", "Endpoint", "PgUrl", "SystemDatabase", "Target", "parse_url", "resolve"]

#: The password `dbos-cloud db url` prints unless asked for the real one (-S).
CLOUD_MASKED_PASSWORD = "***"


@dataclass(frozen=True)
class Endpoint:
    """A URL as written, and libpq's effective reading of it: what to show, where to connect."""

    url: PgUrl
    eff: Effective

    def kwargs(self, dbname: str | None = None) -> dict[str, str]:
        """psycopg.connect keywords for `dbname` (default: the URL's own database)."""
        return self.eff.connect_kwargs(dbname if dbname is not None else self.url.database)

    def at(self, dbname: str) -> Endpoint:
        return Endpoint(self.url.with_database(dbname), self.eff)

    def masked(self) -> str:
        return self.url.masked()

    def same_server(self, other: Endpoint) -> bool:
        """Whether both reach the same server as the same user, whatever the database: where one
        toolchain run can provision both (docs/dbos-compatibility.md, "App shapes")."""
        a, b = self.eff.detail(), other.eff.detail()
        return (a.hosts, a.hostaddrs, a.port, a.user) == (b.hosts, b.hostaddrs, b.port, b.user)

    # The effective values (libpq's reading: URL, service file, PG* environment, .pgpass).

    @property
    def host(self) -> str | None:
        return self.eff.get("host")

    @property
    def port(self) -> str | None:
        return self.eff.get("port")

    @property
    def user(self) -> str | None:
        return self.eff.get("user")

    @property
    def password(self) -> str | None:
        return self.eff.password

    def param(self, key: str) -> str | None:
        return self.eff.get(key)


@dataclass(frozen=True)
class SystemDatabase:
    """The app's DBOS system database: a PostgreSQL endpoint, or a URL left to the app (SQLite)."""

    source: str
    endpoint: Endpoint | None = None
    other: str | None = None  # a non-PostgreSQL URL (sqlite:///...), passed to commands as written

    @property
    def name(self) -> str | None:
        return self.endpoint.url.database if self.endpoint is not None else None

    def url_text(self, *, mask: bool) -> str:
        if self.endpoint is not None:
            return self.endpoint.masked() if mask else self.endpoint.url.text
        assert self.other is not None
        return self.other


@dataclass(frozen=True)
class Target:
    """The resolved instance, app database and system database, with where each came from."""

    instance: Endpoint
    source: str
    app_database: str
    app_database_source: str
    system: SystemDatabase
    production: bool
    production_reason: str
    password_needed: bool = False  # the URL's password was *** and none was found elsewhere
    secrets: tuple[str, ...] = field(default=())

    @property
    def app(self) -> Endpoint:
        return self.instance.at(self.app_database)

    @property
    def app_url(self) -> PgUrl:
        return self.app.url

    def with_password(self, password: str) -> Target:
        """The target once a person typed the password that `***` stood for."""
        eff = replace(
            self.instance.eff,
            password=password,
            password_source="typed at the prompt",
            secrets=(*self.instance.eff.secrets, password),
        )
        instance = Endpoint(self.instance.url.with_password(password), eff)
        system = self.system
        if system.endpoint is not None and system.endpoint.url.password == CLOUD_MASKED_PASSWORD:
            system = replace(system, endpoint=Endpoint(system.endpoint.url.with_password(password), eff))
        return replace(self, instance=instance, system=system, password_needed=False, secrets=(*self.secrets, password))


# ---------------------------------------------------------------------------- the instance


def default_url(environ: Mapping[str, str]) -> tuple[PgUrl, str]:
    """The DBOS default, `postgresql://{PGUSER|postgres}:{PGPASSWORD|dbos}@{PGHOST|localhost}:{PGPORT|5432}`,
    and a source that names the variables it used."""
    used = [f"{var}={environ[var]}" for var in ("PGUSER", "PGHOST", "PGPORT") if environ.get(var)]
    if environ.get("PGPASSWORD"):
        used.append("PGPASSWORD")
    url = synthesized(
        environ.get("PGUSER") or "postgres",
        environ.get("PGPASSWORD") or "dbos",
        environ.get("PGHOST") or "localhost",
        environ.get("PGPORT") or "5432",
    )
    source = "the DBOS default postgres:dbos@localhost:5432"
    return url, source + (f", with {', '.join(used)}" if used else "")


def _legacy_url(config: Config, environ: Mapping[str, str]) -> PgUrl:
    db = config.database
    file = config.file

    def pick(env_name: str, field_value: Text | None, label: str) -> str | None:
        if environ.get(env_name):
            return environ[env_name]
        if field_value is None:
            return None
        return field_value.require(file, f"the database connection ({label})")

    host = pick("DBOS_DBHOST", db.hostname, "database.hostname") or "localhost"
    port = pick("DBOS_DBPORT", db.port, "database.port") or "5432"
    user = pick("DBOS_DBUSER", db.username, "database.username") or "postgres"
    password = pick("DBOS_DBPASSWORD", db.password, "database.password")
    params: list[tuple[str, str]] = []
    if db.ssl is True:
        params.append(("sslmode", "verify-full" if db.ssl_ca else "require"))
    elif db.ssl is False:
        params.append(("sslmode", "disable"))
    if db.ssl_ca is not None:
        params.append(("sslrootcert", db.ssl_ca.require(file, "the database connection (database.ssl_ca)")))
    if db.connect_timeout_ms:  # node-pg's 0 means "no timeout", not a 1-second one: keep our default
        params.append(("connect_timeout", str(max(1, -(-db.connect_timeout_ms // 1000)))))
    if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
        raise UsageError(
            "the database port is not a port number (1-65535)", "set database.port or DBOS_DBPORT to a number"
        )
    return synthesized(user, password, host, port, params)


def resolve_instance(
    config: Config | None,
    db_url: str | None,
    environ: Mapping[str, str],
    local_server: Callable[[Mapping[str, str]], tuple[PgUrl, str] | None] | None = None,
) -> tuple[PgUrl, str]:
    """The first source present wins. Returns the URL and a name for its source."""
    if db_url:
        return parse_url(db_url, what="--db-url"), "--db-url"
    cloud = environ.get("DBOS__CLOUD", "").lower() == "true"
    if cloud and environ.get("DBOS_DATABASE_URL"):
        return parse_url(environ["DBOS_DATABASE_URL"], what="DBOS_DATABASE_URL"), "DBOS_DATABASE_URL (DBOS__CLOUD)"
    if config is not None and config.database_url is not None:
        url = config.database_url.require(config.file, "the target database (database_url)")
        where = f"database_url ({config.file}:{config.database_url.line})"
        return _located(config, config.database_url, lambda: parse_url(url, what="database_url")), where
    legacy_env = any(environ.get(k) for k in ("DBOS_DBHOST", "DBOS_DBPORT", "DBOS_DBUSER", "DBOS_DBPASSWORD"))
    if config is not None and (config.database.has_legacy_connection or legacy_env):
        return _legacy_url(config, environ), "database.hostname/port/username/password (legacy fields)"
    if environ.get("DBOS_DATABASE_URL"):
        return parse_url(environ["DBOS_DATABASE_URL"], what="DBOS_DATABASE_URL"), "DBOS_DATABASE_URL"
    if local_server is not None:
        found = local_server(environ)
        if found is not None:
            return found
    return default_url(environ)


def _located(config: Config, text: Text, parse: Callable[[], PgUrl]) -> PgUrl:
    """A URL from the config; a problem with it is reported at its place in the file."""
    try:
        return parse()
    except UsageError as exc:
        raise ConfigError([Problem(config.file, text.line, text.column, text.path, exc.message, exc.hint)]) from None


# ---------------------------------------------------------------------------- the databases


def resolve_app_database(config: Config | None, cli_name: str | None, instance: PgUrl) -> tuple[str, str]:
    """The app database name, first match wins; validated, with its source named."""
    if cli_name is not None:
        return check_app_db_name(cli_name, "--app-db-name"), "--app-db-name"
    if config is not None and config.database.app_db_name is not None:
        name = config.database.app_db_name.require(config.file, "the app database name")
        return check_app_db_name(name, "database.app_db_name"), "database.app_db_name"
    if instance.database and instance.database not in RESERVED_DATABASES:
        return check_app_db_name(instance.database, "the database in the URL"), "the database in the URL"
    app_name = app_name_of(config)
    if app_name is not None:
        name, source = app_name
        derived = derive_app_db_name(name)
        return check_app_db_name(derived, f"name {name!r} ({source})"), f"derived from name {name!r} ({source})"
    raise UsageError(
        "no app database name: none given and none can be derived",
        "set database.app_db_name or name in the config, or pass --app-db-name",
    )


def app_name_of(config: Config | None) -> tuple[str, str] | None:
    """The app's name and where it came from: `name`, else (TypeScript apps) package.json's."""
    if config is None:
        return None
    if config.name is not None and (config.name.value or config.name.missing):
        return config.name.require(config.file, "the app database name (derived from name)"), "the config"
    if config.package_name is not None:
        return config.package_name, "package.json"
    return None


def resolve_system(
    config: Config | None,
    instance: Endpoint,
    app_db: str,
    environ: Mapping[str, str],
    sys_db_url: str | None = None,
) -> SystemDatabase:
    """-s/--sys-db-url; else system_database_url; else $DBOS_SYSTEM_DATABASE_URL when set; else
    the app URL with database.sys_db_name or `<app_db>_dbos_sys`. A non-PostgreSQL URL (DBOS
    2.x+ takes SQLite) is only handed to the commands, as written."""
    text, source = None, None
    if sys_db_url:
        text, source = sys_db_url, "-s/--sys-db-url"
    elif config is not None and config.system_database_url is not None and not config.system_database_url.missing:
        text = config.system_database_url.value
        source = f"system_database_url ({config.file}:{config.system_database_url.line})"
    elif environ.get("DBOS_SYSTEM_DATABASE_URL"):
        text, source = environ["DBOS_SYSTEM_DATABASE_URL"], "DBOS_SYSTEM_DATABASE_URL"
    if text is not None and source is not None:
        if not text.strip().lower().startswith(("postgres://", "postgresql://", "postgres+", "postgresql+")):
            return SystemDatabase(source, other=text.strip())
        what = source.split(" ")[0]
        url = (
            _located(config, config.system_database_url, lambda: parse_url(text, what=what))
            if config is not None and config.system_database_url is not None and what == "system_database_url"
            else parse_url(text, what=what)
        )
        if not url.database:
            raise UsageError(f"{source} names no database", "write the system database name in its path")
        _check_system_name(url.database, source)
        return SystemDatabase(source, Endpoint(url, effective(url, environ, ignore_password=_cloud_masked(url))))
    if config is not None and config.database.sys_db_name is not None and not config.database.sys_db_name.missing:
        name = config.database.sys_db_name.value
        _check_system_name(name, "database.sys_db_name")
        return SystemDatabase("database.sys_db_name", instance.at(name))
    return SystemDatabase(f"derived: {app_db}_dbos_sys", instance.at(f"{app_db}_dbos_sys"))


def _check_system_name(name: str, source: str) -> None:
    if name in RESERVED_DATABASES or name.startswith(SCRATCH_PREFIX):
        raise UsageError(
            f"the system database {name!r} from {source} is not usable: "
            + ("every PostgreSQL instance has it" if name in RESERVED_DATABASES else "the rehearsal's scratch prefix"),
            "name the app's own system database, e.g. <app>_dbos_sys",
        )


# ---------------------------------------------------------------------------- production


def is_production(eff: Effective, environ: Mapping[str, str], forced: bool) -> tuple[bool, str]:
    """Production unless every effective host and hostaddr is local (localhost, loopback, socket)."""
    if forced:
        return True, "--production"
    if environ.get("DBOS__CLOUD", "").lower() == "true":
        return True, "DBOS__CLOUD=true"
    remote = nonlocal_endpoint(eff)
    if remote is not None:
        return True, f"{remote} is not local"
    return False, "every host is local"


def _cloud_masked(url: PgUrl) -> bool:
    return url.password == CLOUD_MASKED_PASSWORD


def resolve(
    config: Config | None,
    *,
    db_url: str | None = None,
    app_db_name: str | None = None,
    production: bool = False,
    environ: Mapping[str, str],
    local_server: Callable[[Mapping[str, str]], tuple[PgUrl, str] | None] | None = None,
    sys_db_url: str | None = None,
) -> Target:
    """Resolve everything a verb needs to know about where it will act."""
    url, source = resolve_instance(config, db_url, environ, local_server)
    masked_password = _cloud_masked(url)
    eff = effective(url, environ, ignore_password=masked_password)
    instance = Endpoint(url, eff)
    app_db, app_source = resolve_app_database(config, app_db_name, url)
    system = resolve_system(config, instance, app_db, environ, sys_db_url)
    prod, reason = is_production(eff, environ, production)
    secrets = [*eff.secrets]
    if system.endpoint is not None:
        secrets += system.endpoint.eff.secrets
    if config is not None:
        secrets += config.secrets
    return Target(
        instance=instance,
        source=source,
        app_database=app_db,
        app_database_source=app_source,
        system=system,
        production=prod,
        production_reason=reason,
        password_needed=masked_password and eff.password is None,
        secrets=tuple(dict.fromkeys(s for s in secrets if s)),
    )


# ---------------------------------------------------------------------------- what commands get


def pg_vars(eff: Effective, dbname: str) -> dict[str, str]:
    """PGHOST, PGHOSTADDR, PGPORT, PGUSER, PGPASSWORD, PGSSLMODE, ... for `dbname`: every
    effective parameter that libpq also reads from the environment."""
    out: dict[str, str] = {}
    envvars = libpq_envvars()
    for key, value in eff.params:
        var = envvars.get(key)
        if var and key not in ("service", "passfile", "dbname"):
            out[var] = value
    if eff.password is not None:
        out["PGPASSWORD"] = eff.password
    out["PGDATABASE"] = dbname
    return out


def url_for_commands(endpoint: Endpoint) -> str:
    """The URL as written, carrying the password our own connections use: the one `***`
    stood for, or the one found in PGPASSWORD, .pgpass or a service file (percent-encoded).
    A command that reads only the URL (SQLAlchemy, knex) authenticates as we do
    (docs/behaviour.md, "The environment each command gets")."""
    password = endpoint.password
    if password is None or endpoint.url.password == password:
        return endpoint.url.text
    return endpoint.url.with_password(password).text


def connection_vars(target: Target) -> dict[str, str]:
    """DBOS_DATABASE_URL, DBOS_SYSTEM_DATABASE_URL and PG* for the app database, from the
    effective connection (docs/behaviour.md, "The environment each command gets")."""
    system = target.system
    out = {
        "DBOS_DATABASE_URL": url_for_commands(target.app),
        "DBOS_SYSTEM_DATABASE_URL": (
            url_for_commands(system.endpoint) if system.endpoint is not None else system.url_text(mask=False)
        ),
    }
    out.update(pg_vars(target.instance.eff, target.app_database))
    return out


def command_env(target: Target, base: Mapping[str, str], config: Config | None) -> tuple[dict[str, str], list[Problem]]:
    """The process env, then the config's env: (resolved against this run's target), then the
    connection, which always wins. Returns the environment and one warning per env: entry left
    out because a variable it needs is unset."""
    conn = connection_vars(target)
    env = {k: v for k, v in base.items() if k != "PGSERVICE"}  # expanded into the PG* values already
    skipped: list[Problem] = []
    if config is not None:
        lookup = {**base, **conn}
        secrets_dir = base.get("DBOS_MIGRATE_SECRETS_DIR") or "/run/secrets"
        for key, text in config.env:
            value, missing = substitute(text.raw, lookup, secrets_dir)
            if missing:
                names = ", ".join("${" + m + "}" for m in missing)
                skipped.append(
                    Problem(config.file, text.line, text.column, text.path, f"not exported: {names} is not set")
                )
                continue
            env[key] = value
    env.update(conn)
    return env, skipped
