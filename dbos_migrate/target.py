"""Which PostgreSQL instance and which app database: pure resolution, no I/O.

Everything here is a function of the config, the command-line options and an
environment mapping, so it is tested without a database. URLs are parsed by hand
rather than with urllib because operators paste passwords that were never
percent-encoded, and libpq-style `?host=/socket/dir` must survive.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from urllib.parse import quote, unquote

from dbos_migrate.config import RESERVED_DATABASES, Config, check_app_db_name, derive_app_db_name
from dbos_migrate.errors import UsageError

SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2", "postgresql+asyncpg")
MAINTENANCE_DATABASES = RESERVED_DATABASES
MASK = "***"
_HOSTSPEC = r"(?:\[[^\]/?#@]*\]|[^/?#@\[\]:,]*)(?::[0-9]*)?"
_HOSTPORT = re.compile(rf"({_HOSTSPEC}(?:,{_HOSTSPEC})*)()([/?#].*)?\Z", re.S)
_ONE_HOST = re.compile(r"(\[[^\]]*\]|[^:]*)(?::([0-9]*))?\Z")
SECRET_PARAMS = ("password", "sslpassword")


@dataclass(frozen=True)
class PgUrl:
    """A parsed PostgreSQL URL. Host may be a comma list, an IPv6 literal or a socket dir."""

    scheme: str = "postgresql"
    user: str | None = None
    password: str | None = None
    host: str | None = None
    port: str | None = None
    database: str | None = None
    params: tuple[tuple[str, str], ...] = ()

    def param(self, name: str) -> str | None:
        for key, value in self.params:
            if key == name:
                return value
        return None

    def with_database(self, database: str) -> PgUrl:
        """This URL pointed at another database (a `?dbname=` parameter would override the path)."""
        return replace(self, database=database, params=tuple(p for p in self.params if p[0] != "dbname"))

    @property
    def socket_dir(self) -> str | None:
        """The unix socket directory, when the host is one (libpq: a host starting with /)."""
        host = self.host or self.param("host")
        if host and host.startswith("/"):
            return host
        return None

    @property
    def effective_host(self) -> str | None:
        return self.host or self.param("host")

    def render(self, *, mask: bool = True, scheme: str = "postgresql") -> str:
        """A libpq-compatible URL. With mask, the password (and secret params) show as ***."""
        out = f"{scheme}://"
        if self.user is not None or self.password is not None:
            out += quote(self.user or "", safe="")
            if self.password is not None:
                out += ":" + (MASK if mask else quote(self.password, safe=""))
            out += "@"
        hosts = (self.host or "").split(",")
        ports = (self.port or "").split(",")
        if len(ports) < len(hosts):
            ports = ports + [ports[-1] if len(ports) == 1 else ""] * (len(hosts) - len(ports))
        specs = []
        for host, port in zip(hosts, ports, strict=False):
            spec = f"[{host}]" if ":" in host else quote(host, safe="")
            specs.append(spec + (f":{port}" if port else ""))
        if any(specs):
            out += ",".join(specs)
        if self.database is not None:
            out += "/" + quote(self.database, safe="")
        if self.params:
            pairs = []
            for key, value in self.params:
                shown = MASK if (mask and key in SECRET_PARAMS) else value
                pairs.append(f"{quote(key, safe='')}={quote(shown, safe='/*')}")
            out += "?" + "&".join(pairs)
        return out

    def masked(self) -> str:
        return self.render(mask=True)

    def connect_kwargs(self) -> dict[str, str]:
        """Keyword arguments for psycopg.connect: no URL re-encoding, no password in a string."""
        kwargs: dict[str, str] = dict(self.params)
        if self.host:
            kwargs["host"] = self.host
        if self.port:
            kwargs["port"] = self.port
        if self.user is not None:
            kwargs["user"] = self.user
        if self.password is not None:
            kwargs["password"] = self.password
        if self.database is not None:
            kwargs["dbname"] = self.database
        return kwargs


def parse_url(text: str, *, what: str = "database URL") -> PgUrl:
    """Parse a postgres URL; raise UsageError with no secret in the message when it is not one."""
    text = text.strip()
    scheme, sep, rest = text.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        shown = scheme if sep and len(scheme) < 40 and "@" not in scheme else None
        raise UsageError(
            f"the {what} is not a PostgreSQL URL" + (f" (scheme {shown!r})" if shown else ""),
            "use postgresql://user:password@host:port/database",
        )
    userinfo, hostpart = _split_userinfo(rest)
    user = password = None
    if userinfo is not None:
        u, colon, p = userinfo.partition(":")
        user = unquote(u) if u else None
        password = unquote(p) if colon else None
    match = _HOSTPORT.match(hostpart)
    if not match:
        raise UsageError(
            f"the {what} has an invalid host part", "percent-encode special characters in the password"
        )
    tail = match.group(3) or ""
    hosts: list[str] = []
    ports: list[str] = []
    for spec in match.group(1).split(","):
        one = _ONE_HOST.match(spec)
        if not one:
            raise UsageError(f"the {what} has an invalid host part")
        hosts.append(unquote(one.group(1).strip("[]")))
        ports.append(one.group(2) or "")
        if ports[-1] and not 0 < int(ports[-1]) < 65536:
            raise UsageError(f"the {what} has an invalid port", "ports are 1-65535")
    host = ",".join(hosts) if any(hosts) else None
    port = ",".join(ports) if any(ports) else None
    tail = tail.split("#", 1)[0]
    path, _, query = tail.partition("?")
    database = unquote(path[1:]) if path.startswith("/") and len(path) > 1 else None
    params: list[tuple[str, str]] = []
    for pair in query.split("&") if query else []:
        if not pair:
            continue
        key, eq, value = pair.partition("=")
        if not eq or not key:
            raise UsageError(
                f"the {what} has an invalid query parameter", "write parameters as ?key=value&key=value"
            )
        params.append((unquote(key), unquote(value)))
    return PgUrl(scheme.lower(), user, password, host, port, database, tuple(params))


def _split_userinfo(rest: str) -> tuple[str | None, str]:
    """Find where the userinfo ends, tolerating unencoded `@ : / ? #` in passwords.

    The standard reading (userinfo ends at the last '@' before the first '/', '?' or
    '#') wins when what follows is plausible: no '@' or '#' in the path, a query of
    key=value pairs. Otherwise the first '@' followed by a plausible host part does,
    then the first followed by any valid host part. Percent-encoding removes all doubt.
    """
    netloc_end = min([p for p in (rest.find(c) for c in "/?#") if p != -1], default=len(rest))
    netloc = rest[:netloc_end]
    if "@" not in rest:
        return None, rest
    standard = netloc.rfind("@")
    if standard != -1 and _plausible(rest[standard + 1 :]):
        return rest[:standard], rest[standard + 1 :]
    if standard == -1 and _plausible(rest):
        return None, rest
    # The standard reading leaves an '@' in the database name or a fragment: the password
    # holds an unencoded '@' with '/', '?' or '#' after it. The first '@' that leaves a
    # plausible rest ends it, so no piece of the password is read as host or database.
    ats = [i for i, ch in enumerate(rest) if ch == "@"]
    for i in ats:
        if _plausible(rest[i + 1 :]):
            return rest[:i], rest[i + 1 :]
    if standard != -1:
        return rest[:standard], rest[standard + 1 :]
    for i in ats:
        if _HOSTPORT.match(rest[i + 1 :]):
            return rest[:i], rest[i + 1 :]
    return None, rest


def _plausible(hostpart: str) -> bool:
    """A host part whose path has no '@' or '#' and whose query is key=value pairs."""
    match = _HOSTPORT.match(hostpart)
    if not match:
        return False
    path, _, query = (match.group(3) or "").partition("?")
    if "@" in path or "#" in path:
        return False
    query = query.split("#", 1)[0]
    return all("=" in kv for kv in query.split("&") if kv)


# ---------------------------------------------------------------------------- resolution


@dataclass(frozen=True)
class Target:
    """The resolved instance, app database and system database, with where each came from."""

    instance: PgUrl
    source: str
    app_database: str
    app_database_source: str
    system_url: PgUrl | str  # a str for a non-PostgreSQL system database (sqlite:///...)
    production: bool
    production_reason: str
    secrets: tuple[str, ...] = field(default=())

    @property
    def app_url(self) -> PgUrl:
        return self.instance.with_database(self.app_database)

    @property
    def connect_timeout(self) -> int | None:
        """The URL's connect_timeout in seconds, when it gives a usable one."""
        value = self.instance.param("connect_timeout")
        return int(value) if value and value.isascii() and value.isdigit() else None


def default_url(environ: Mapping[str, str]) -> str:
    user = quote(environ.get("PGUSER") or "postgres", safe="")
    password = quote(environ.get("PGPASSWORD") or "dbos", safe="")
    host = environ.get("PGHOST") or "localhost"
    port = environ.get("PGPORT") or "5432"
    if host.startswith("/"):
        return f"postgresql://{user}:{password}@:{port}?host={quote(host, safe='/')}"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"  # an IPv6 literal, as libpq accepts it in PGHOST
    return f"postgresql://{user}:{password}@{host}:{port}"


def _legacy_url(config: Config, environ: Mapping[str, str]) -> PgUrl:
    db = config.database
    file = config.file

    def pick(env_name: str, field_value: object, label: str) -> str | None:
        if environ.get(env_name):
            return environ[env_name]
        if field_value is None:
            return None
        from dbos_migrate.config import Text

        if isinstance(field_value, Text):
            return field_value.require(file, f"the database connection ({label})")
        return str(field_value)

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
            "the database port is not a port number (1-65535)",
            "set database.port or DBOS_DBPORT to a number",
        )
    return PgUrl("postgresql", user, password, host, port, None, tuple(params))


def resolve_instance(
    config: Config | None, db_url: str | None, environ: Mapping[str, str]
) -> tuple[PgUrl, str]:
    """SPEC §3: the first source present wins. Returns the URL and a name for its source."""
    if db_url:
        return parse_url(db_url, what="--db-url"), "--db-url"
    cloud = environ.get("DBOS__CLOUD", "").lower() == "true"
    if cloud and environ.get("DBOS_DATABASE_URL"):
        return parse_url(
            environ["DBOS_DATABASE_URL"], what="DBOS_DATABASE_URL"
        ), "DBOS_DATABASE_URL (DBOS__CLOUD)"
    if config is not None and config.database_url is not None:
        url = config.database_url.require(config.file, "the target database (database_url)")
        return parse_url(
            url, what="database_url in the config"
        ), f"database_url ({config.file}:{config.database_url.line})"
    legacy_env = any(environ.get(k) for k in ("DBOS_DBHOST", "DBOS_DBPORT", "DBOS_DBUSER", "DBOS_DBPASSWORD"))
    if config is not None and (config.database.has_legacy_connection or legacy_env):
        return _legacy_url(config, environ), "database.hostname/port/username/password (legacy fields)"
    if environ.get("DBOS_DATABASE_URL"):
        return parse_url(environ["DBOS_DATABASE_URL"], what="DBOS_DATABASE_URL"), "DBOS_DATABASE_URL"
    return parse_url(
        default_url(environ), what="default URL"
    ), "default (PGUSER/PGPASSWORD/PGHOST/PGPORT or postgres:dbos@localhost:5432)"


def resolve_app_database(config: Config | None, cli_name: str | None, instance: PgUrl) -> tuple[str, str]:
    """SPEC §2 precedence for the app database name; validated, with its source named."""
    if cli_name is not None:
        return check_app_db_name(cli_name, "--app-db-name"), "--app-db-name"
    if config is not None and config.database.app_db_name is not None:
        name = config.database.app_db_name.require(config.file, "the app database name")
        return check_app_db_name(name, "database.app_db_name"), "database.app_db_name"
    if instance.database and instance.database not in MAINTENANCE_DATABASES:
        return check_app_db_name(instance.database, "the database in the URL"), "the database in the URL"
    if config is not None and config.name is not None and (config.name.value or config.name.missing):
        app = config.name.require(config.file, "the app database name (derived from name)")
        derived = derive_app_db_name(app)
        return check_app_db_name(derived, f"name {app!r} (derived)"), f"derived from name {app!r}"
    raise UsageError(
        "no app database name: none given and none can be derived",
        "set database.app_db_name or name in the config, or pass --app-db-name",
    )


def is_production(url: PgUrl, environ: Mapping[str, str], forced: bool) -> tuple[bool, str]:
    """Production unless the host is local: localhost, a loopback literal, or a socket dir."""
    if forced:
        return True, "--production"
    if environ.get("DBOS__CLOUD", "").lower() == "true":
        return True, "DBOS__CLOUD=true"
    hosts = (url.effective_host or "localhost").split(",")
    for host in hosts:
        if not _is_local(host.strip()):
            return True, f"host {host.strip()!r} is not local"
    return False, "local host"


def _is_local(host: str) -> bool:
    if host == "" or host.startswith("/") or host.startswith("@"):
        return True
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def resolve(
    config: Config | None,
    *,
    db_url: str | None = None,
    app_db_name: str | None = None,
    production: bool = False,
    environ: Mapping[str, str],
) -> Target:
    """Resolve everything a verb needs to know about where it will act."""
    instance, source = resolve_instance(config, db_url, environ)
    app_db, app_source = resolve_app_database(config, app_db_name, instance)
    system_url = resolve_system_url(config, instance, app_db)
    prod, reason = is_production(instance, environ, production)
    secrets = tuple(
        s
        for url in (instance, system_url)
        if isinstance(url, PgUrl)
        for s in (url.password, *(url.param(name) for name in SECRET_PARAMS))
        if s
    )
    return Target(
        instance=instance,
        source=source,
        app_database=app_db,
        app_database_source=app_source,
        system_url=system_url,
        production=prod,
        production_reason=reason,
        secrets=secrets,
    )


def resolve_system_url(config: Config | None, instance: PgUrl, app_db: str) -> PgUrl | str:
    """SPEC §3: system_database_url, else the app URL with sys_db_name or `<app_db>_dbos_sys`.

    DBOS 2.x+ also accepts a SQLite system database (`sqlite:///dbos.sqlite`): such a URL
    is only handed to the commands, so it is passed through as written.
    """
    if (
        config is not None
        and config.system_database_url is not None
        and not config.system_database_url.missing
    ):
        text = config.system_database_url.value
        if text.partition("://")[0].lower() not in SCHEMES:
            return text
        return parse_url(text, what="system_database_url")
    if (
        config is not None
        and config.database.sys_db_name is not None
        and not config.database.sys_db_name.missing
    ):
        return instance.with_database(config.database.sys_db_name.value)
    return instance.with_database(f"{app_db}_dbos_sys")


def command_env(target: Target, base: Mapping[str, str], config_env: Mapping[str, str]) -> dict[str, str]:
    """SPEC §7: the process env, then the config's env:, then the connection, which always wins.

    A PG* variable the URL leaves unset (say PGSSLMODE) stays as the process has it: libpq
    applied that same value to dbos-migrate's own connection, so the commands reach the
    server exactly the way dbos-migrate did.
    """
    env = dict(base)
    env.update(config_env)
    app = target.app_url
    env["DBOS_DATABASE_URL"] = app.render(mask=False)
    system = target.system_url
    env["DBOS_SYSTEM_DATABASE_URL"] = system.render(mask=False) if isinstance(system, PgUrl) else system
    if app.effective_host:
        env["PGHOST"] = app.effective_host
    if app.port:
        env["PGPORT"] = app.port
    if app.user:
        env["PGUSER"] = app.user
    password = app.password if app.password is not None else app.param("password")
    if password is not None:
        env["PGPASSWORD"] = password
    env["PGDATABASE"] = app.database or ""
    for param, var in (
        ("sslmode", "PGSSLMODE"),
        ("sslrootcert", "PGSSLROOTCERT"),
        ("sslcert", "PGSSLCERT"),
        ("sslkey", "PGSSLKEY"),
        ("connect_timeout", "PGCONNECT_TIMEOUT"),
    ):
        value = app.param(param)
        if value is not None:
            env[var] = value
    return env
