"""Connection strings, read by libpq's rules: the URL as written, and what libpq makes of it.

Two things are kept apart on purpose (docs/behaviour.md, "Which database instance"):

- `PgUrl` is the URL exactly as the user wrote it: scheme with its driver suffix, userinfo
  bytes, hosts, query. Commands receive it that way, with only the database path replaced,
  because their own drivers (SQLAlchemy, alembic, knex...) read it, not us.
- `Effective` is what libpq will really use for a connection: the URL's parameters as
  psycopg's `conninfo_to_dict` (libpq's own parser) reads them, then a service file's,
  then the `PG*` environment, then `.pgpass` for the password. Every decision (the
  production guard, the `PG*` variables commands get, the printed target, our own
  connections) uses this one result.

Where the URL text is split without libpq (to find the password for masking, the path to
replace), the split follows libpq's grammar in fe-connect.c, and a test cross-checks the
two on generated URLs. Nothing here connects to a server.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote, unquote

from dbos_migrate.errors import UsageError
from dbos_migrate.model import ConnectionDetail

MASK = "***"
#: Query parameters whose values are secrets: masked when shown, scrubbed everywhere.
SECRET_PARAMS = ("password", "sslpassword", "oauth_client_secret")
_SCHEME = re.compile(r"(?P<base>postgres(?:ql)?)(?P<driver>\+[A-Za-z0-9_]+)?\Z", re.I)
_HOSTNAME = re.compile(r"[A-Za-z0-9_.\-%]*\Z")
_ENCODE_HINT = (
    "percent-encode special characters in the password: @ is %40, / is %2F, % is %25, : is %3A "
    "(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1], safe=\"\"))' 'PASSWORD')"
)


# ---------------------------------------------------------------------------- the URL as written


@dataclass(frozen=True)
class Spans:
    """Where the parts of a URL stand in its text, by libpq's grammar (end offsets exclusive)."""

    scheme_end: int  # just after "://"
    userinfo: tuple[int, int] | None  # without the "@"
    password: tuple[int, int] | None  # after the ":" of the userinfo
    hosts: tuple[int, int]  # the host[:port][,host[:port]...] list
    path: tuple[int, int] | None  # "/dbname", slash included
    query: tuple[int, int] | None  # without the "?"


def split(text: str) -> Spans:
    """Locate userinfo, hosts, path and query the way libpq's URI parser does.

    libpq ends the userinfo at the first '@' that comes before any '/'; the host list at
    the first '/' or '?'; the path at the first '?'. '#' has no special meaning.
    """
    start = text.index("://") + 3
    i = start
    while i < len(text) and text[i] not in "@/":
        i += 1
    userinfo = password = None
    host_start = start
    if i < len(text) and text[i] == "@":
        userinfo = (start, i)
        colon = text.find(":", start, i)
        if colon != -1:
            password = (colon + 1, i)
        host_start = i + 1
    j = host_start
    in_brackets = False
    while j < len(text):
        ch = text[j]
        if ch == "[":
            in_brackets = True
        elif ch == "]":
            in_brackets = False
        elif ch in "/?" and not in_brackets:
            break
        j += 1
    path = query = None
    k = j
    if k < len(text) and text[k] == "/":
        q = text.find("?", k)
        end = q if q != -1 else len(text)
        path = (k, end)
        k = end
    if k < len(text) and text[k] == "?":
        query = (k + 1, len(text))
    return Spans(start, userinfo, password, (host_start, j), path, query)


@dataclass(frozen=True)
class PgUrl:
    """A PostgreSQL URL as written, with libpq's reading of it in `params`.

    `params` are libpq keywords (user, password, host, hostaddr, port, dbname, sslmode, ...)
    with percent-decoding applied, as `conninfo_to_dict` returns them. `extra` holds query
    parameters libpq does not know, allowed only with a `+driver` scheme (they belong to
    that driver, e.g. asyncpg's `ssl`), and ignored by our own connections.
    """

    text: str
    scheme: str
    params: tuple[tuple[str, str], ...]
    extra: tuple[tuple[str, str], ...] = ()

    def param(self, key: str) -> str | None:
        for k, v in self.params:
            if k == key:
                return v
        return None

    @property
    def user(self) -> str | None:
        return self.param("user")

    @property
    def password(self) -> str | None:
        return self.param("password")

    @property
    def database(self) -> str | None:
        return self.param("dbname")

    @property
    def spans(self) -> Spans:
        return split(self.text)

    def with_database(self, name: str) -> PgUrl:
        """The same URL pointed at `name`: only the path changes (or a `dbname=` in the query,
        which would override the path), and nothing else of what the user wrote."""
        if self.database == name:
            return self
        sp = self.spans
        text = self.text
        encoded = quote(name, safe="")
        if sp.query is not None and re.search(r"(^|&)dbname=", text[sp.query[0] : sp.query[1]]):
            q0, q1 = sp.query
            query = re.sub(r"(^|&)dbname=[^&]*", lambda m: f"{m.group(1)}dbname={encoded}", text[q0:q1])
            text = text[:q0] + query + text[q1:]
        elif sp.path is not None:
            text = text[: sp.path[0]] + "/" + encoded + text[sp.path[1] :]
        else:
            at = sp.hosts[1]
            text = text[:at] + "/" + encoded + text[at:]
        params = tuple((k, name if k == "dbname" else v) for k, v in self.params)
        if "dbname" not in dict(self.params):
            params += (("dbname", name),)
        return PgUrl(text, self.scheme, params, self.extra)

    def with_password(self, password: str) -> PgUrl:
        """The URL with this password in its userinfo (percent-encoded), replacing any there."""
        sp = self.spans
        encoded = quote(password, safe="")
        text = self.text
        if sp.query is not None and re.search(r"(^|&)password=", text[sp.query[0] : sp.query[1]]):
            q0, q1 = sp.query  # libpq lets a query password override the userinfo one
            query = re.sub(r"(^|&)password=[^&]*", lambda m: f"{m.group(1)}password={encoded}", text[q0:q1])
            text = text[:q0] + query + text[q1:]
        elif sp.password is not None:
            text = text[: sp.password[0]] + encoded + text[sp.password[1] :]
        elif sp.userinfo is not None:
            text = text[: sp.userinfo[1]] + ":" + encoded + text[sp.userinfo[1] :]
        else:
            user = quote(self.user or "", safe="")
            text = text[: sp.scheme_end] + f"{user}:{encoded}@" + text[sp.scheme_end :]
        params = (*((k, v) for k, v in self.params if k != "password"), ("password", password))
        return PgUrl(text, self.scheme, params, self.extra)

    def without_secrets(self) -> PgUrl:
        """The URL with no password in the userinfo or the query: safe on a command line."""
        sp = self.spans
        text = self.text
        if sp.query is not None:
            q0, q1 = sp.query
            kept = [kv for kv in text[q0:q1].split("&") if kv.partition("=")[0] not in SECRET_PARAMS]
            text = text[:q0] + "&".join(kept) + text[q1:] if kept else text[: q0 - 1] + text[q1:]
        if sp.password is not None:
            text = text[: sp.password[0] - 1] + text[sp.password[1] :]
        params = tuple((k, v) for k, v in self.params if k not in SECRET_PARAMS)
        return PgUrl(text, self.scheme, params, self.extra)

    def masked(self) -> str:
        """The URL as written, with the password and secret parameters shown as ***."""
        return masked_text(self.text)

    def libpq_text(self) -> str:
        """The URL as libpq accepts it: plain `postgresql://` scheme, driver-only parameters dropped."""
        sp = self.spans
        text = "postgresql://" + self.text[sp.scheme_end :]
        if self.extra and sp.query is not None:
            shift = len("postgresql://") - sp.scheme_end
            q0, q1 = sp.query[0] + shift, sp.query[1] + shift
            names = {k for k, _ in self.extra}
            kept = [kv for kv in text[q0:q1].split("&") if unquote(kv.partition("=")[0]) not in names]
            text = text[:q0] + "&".join(kept) if kept else text[: q0 - 1]
        return text

    def __repr__(self) -> str:
        return f"PgUrl({self.masked()!r})"


def libpq_keywords() -> frozenset[str]:
    """Every keyword the linked libpq knows (its PQconndefaults table)."""
    from psycopg import pq

    return frozenset(o.keyword.decode() for o in pq.Conninfo.get_defaults()) | {"dbname"}


def libpq_envvars() -> dict[str, str]:
    """keyword -> environment variable, from the linked libpq's own table (PGHOST, PGPORT, ...)."""
    from psycopg import pq

    return {o.keyword.decode(): o.envvar.decode() for o in pq.Conninfo.get_defaults() if o.envvar}


def parse_url(text: str, *, what: str = "database URL") -> PgUrl:
    """Parse a postgres URL with libpq; UsageError with a hint that fits the mistake, and no
    secret in the message, when it is not one."""
    from psycopg.conninfo import conninfo_to_dict

    text = text.strip()
    problem = url_problem(text, what=what)
    if problem is not None:
        raise problem
    scheme = text[: text.index("://")]
    driver = _SCHEME.match(scheme)
    assert driver is not None
    sp = split(text)
    known = libpq_keywords()
    extra: list[tuple[str, str]] = []
    if sp.query is not None:
        for kv in text[sp.query[0] : sp.query[1]].split("&"):
            key, _, value = kv.partition("=")
            if unquote(key) not in known:
                if not driver.group("driver"):
                    raise UsageError(
                        f"the {what} has a query parameter libpq does not know: {unquote(key)!r}",
                        "libpq takes sslmode, sslrootcert, connect_timeout, application_name, options, ...; "
                        "parameters of another driver need its scheme, e.g. postgresql+asyncpg://",
                    )
                extra.append((unquote(key), unquote(value)))
    url = PgUrl(text, scheme, (), tuple(extra))
    try:
        params = conninfo_to_dict(url.libpq_text())
    except Exception as exc:  # psycopg.ProgrammingError
        # libpq quotes the offending token, which may be a piece of the password: never shown.
        reason = re.sub(r'"[^"]*"?', "(...)", str(exc).strip().splitlines()[0] if str(exc).strip() else "")
        raise UsageError(
            f"the {what} is not a valid PostgreSQL URL ({reason or 'libpq refused it'})", _ENCODE_HINT
        ) from None
    return PgUrl(text, scheme, tuple((str(k), str(v)) for k, v in params.items()), tuple(extra))


def url_problem(text: str, *, what: str = "database URL") -> UsageError | None:
    """What is wrong with a URL, found without libpq (so `validate` stays light), or None.

    libpq reads some mistakes without complaint (`:54x2` as a port, a second '@' as part of
    the host); they are caught here, each with a hint that fits it.
    """
    scheme, sep, _ = text.partition("://")
    if not sep or not _SCHEME.match(scheme):
        shown = scheme if sep and len(scheme) < 40 and "@" not in scheme and ":" not in scheme else None
        return UsageError(
            f"the {what} is not a PostgreSQL URL" + (f" (scheme {shown!r})" if shown else ""),
            "use postgresql://user:password@host:port/database (postgres:// and postgresql+<driver>:// work too)",
        )
    sp = split(text)
    hosts = text[sp.hosts[0] : sp.hosts[1]]
    path = text[sp.path[0] : sp.path[1]] if sp.path else ""
    if "@" in hosts or "@" in path:
        return UsageError(f"the {what} has more than one '@', or an '@' after a '/'", _ENCODE_HINT)
    if re.search(r"%(?![0-9A-Fa-f]{2})", text):
        return UsageError(f"the {what} has a '%' that does not start a %XX escape", _ENCODE_HINT)
    if re.search(r"\s", text):
        return UsageError(
            f"the {what} contains a space or another blank",
            _ENCODE_HINT.replace("% is %25", "% is %25, a space is %20"),
        )
    for spec in hosts.split(","):
        host, port = _host_port(spec)
        if host is None:
            return UsageError(f"the {what} has an invalid host: unbalanced [ ] around an IPv6 address")
        if port is not None:
            if ":" in port:
                return UsageError(f"the {what} gives two ports ({port!r})", "write host:port once, e.g. localhost:5432")
            if not (port.isascii() and port.isdigit() and 0 < int(port) < 65536):
                return UsageError(
                    f"the {what} has a port that is not a number from 1 to 65535 ({_short(port)!r})",
                    "write host:port with a numeric port, e.g. localhost:5432; if this is part of the "
                    "password, " + _ENCODE_HINT.split(": ", 1)[0],
                )
        if host and not host.startswith("[") and not _HOSTNAME.match(host):
            return UsageError(f"the {what} has an invalid host name", _ENCODE_HINT)
    if sp.query is not None:
        for kv in text[sp.query[0] : sp.query[1]].split("&"):
            if kv and "=" not in kv:
                return UsageError(f"the {what} has a query parameter without a value", "write ?key=value&key=value")
    return None


def _host_port(spec: str) -> tuple[str | None, str | None]:
    if spec.startswith("["):
        close = spec.find("]")
        if close == -1:
            return None, None
        rest = spec[close + 1 :]
        return spec[: close + 1], (rest[1:] if rest.startswith(":") else None)
    host, colon, port = spec.partition(":")
    return host, (port if colon else None)


def _short(value: str) -> str:
    return value if len(value) <= 12 else value[:12] + "..."


def masked_text(text: str) -> str:
    """A URL's text with the password and secret parameters shown as ***. Pure: no parse by
    libpq, so the light modules (the local server's) can mask without loading the driver."""
    sp = split(text)
    if sp.query is not None:
        q0, q1 = sp.query
        pairs = []
        for kv in text[q0:q1].split("&"):
            key, eq, _ = kv.partition("=")
            pairs.append(f"{key}={MASK}" if eq and unquote(key) in SECRET_PARAMS else kv)
        text = text[:q0] + "&".join(pairs) + text[q1:]
    if sp.password is not None:
        text = text[: sp.password[0]] + MASK + text[sp.password[1] :]
    return text


def compose(
    user: str | None,
    password: str | None,
    host: str | None,
    port: str | int | None,
    params: Iterable[tuple[str, str]] = (),
    *,
    dbname: str | None = None,
) -> str:
    """The text of a URL we build ourselves, every part percent-encoded so that any password
    or name survives the trip. Pure (no libpq parse): `synthesized` returns it parsed."""
    auth = ""
    if user is not None or password is not None:
        auth = quote(user or "", safe="") + (":" + quote(password, safe="") if password is not None else "") + "@"
    hostpart = ""
    query: list[tuple[str, str]] = list(params)
    if host and host.startswith("/"):
        query.insert(0, ("host", host))
    elif host:
        hostpart = host if host.startswith("[") else f"[{host}]" if ":" in host else quote(host, safe="")
    if port:
        hostpart += f":{port}"
    text = f"postgresql://{auth}{hostpart}"
    if dbname:
        text += "/" + quote(dbname, safe="")
    if query:
        text += "?" + "&".join(f"{quote(k, safe='')}={quote(v, safe='/')}" for k, v in query)
    return text


def synthesized(
    user: str | None,
    password: str | None,
    host: str | None,
    port: str | None,
    params: Iterable[tuple[str, str]] = (),
) -> PgUrl:
    """A URL we build ourselves (the DBOS default, the legacy config fields), all parts encoded."""
    return parse_url(compose(user, password, host, port, params), what="database URL")


# ---------------------------------------------------------------------------- the effective connection


Reader = Callable[[str], "str | None"]


def read_file(path: str) -> str | None:
    """A regular file's text (at most 1 MB), or None when missing or unreadable."""
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            st = os.fstat(fh.fileno())
            if not stat.S_ISREG(st.st_mode) or st.st_size > 1_000_000:
                return None
            return fh.read()
    except OSError:
        return None


def private(path: str) -> bool:
    """libpq uses a password file only when nobody but its owner may read it."""
    try:
        return os.stat(path).st_mode & 0o077 == 0
    except OSError:
        return False


@dataclass(frozen=True)
class Effective:
    """The parameters libpq will use: the URL's, a service file's, then the PG* environment.

    `sources` says where each came from ("the URL", "PGHOST", "service db (~/.pg_service.conf)");
    `password` may also come from `.pgpass`. `service` is already expanded: connections and
    commands get the values, never the service name.
    """

    params: tuple[tuple[str, str], ...]
    sources: tuple[tuple[str, str], ...]
    password: str | None = None
    password_source: str | None = None
    secrets: tuple[str, ...] = field(default=())

    def get(self, key: str) -> str | None:
        return dict(self.params).get(key)

    def source(self, key: str) -> str | None:
        return dict(self.sources).get(key)

    @property
    def hosts(self) -> list[str]:
        """The host list; '' stands for libpq's default (its unix socket directory)."""
        return (self.get("host") or "").split(",")

    @property
    def hostaddrs(self) -> list[str]:
        value = self.get("hostaddr")
        return [h for h in value.split(",")] if value else []

    def connect_kwargs(self, dbname: str | None) -> dict[str, str]:
        """Keyword arguments for psycopg.connect: every effective value, the password included."""
        kwargs = {k: v for k, v in self.params if k not in ("service", "password")}
        if self.password is not None:
            kwargs["password"] = self.password
        if dbname is not None:
            kwargs["dbname"] = dbname
        return kwargs

    def describe(self) -> str:
        """Where connections really go, e.g. `192.0.2.2:6545 (host from PGHOST)`."""
        hosts = self.hosts
        addrs = self.hostaddrs
        ports = (self.get("port") or "5432").split(",")
        parts = []
        for i, host in enumerate(hosts):
            port = ports[i] if i < len(ports) else ports[-1]
            shown = host or "the default unix socket"
            if i < len(addrs) and addrs[i]:
                shown += f" (address {addrs[i]})"
            parts.append(f"{shown}:{port or '5432'}" if not host.startswith("/") else f"{shown} port {port or '5432'}")
        notes = [f"{k} from {s}" for k, s in self.sources if k in ("host", "hostaddr", "port") and s != "the URL"]
        return ", ".join(parts) + (f" ({'; '.join(notes)})" if notes else "")

    def detail(self) -> ConnectionDetail:
        """What may be shown of the connection: the parameters and their sources, never the
        password (only where it came from)."""
        return ConnectionDetail(
            hosts=self.hosts,
            hostaddrs=self.hostaddrs,
            port=self.get("port") or "5432",
            user=self.get("user"),
            sslmode=self.get("sslmode"),
            sources={k: s for k, s in self.sources if k not in SECRET_PARAMS},
            password_source=self.password_source,
        )


def effective(
    url: PgUrl,
    environ: Mapping[str, str],
    *,
    read: Reader = read_file,
    ignore_password: bool = False,
) -> Effective:
    """libpq's reading of `url` in this environment: URL, then service file, then PG* variables,
    then .pgpass for the password. `ignore_password` treats the URL's password as not given
    (the `***` that `dbos-cloud db url` prints)."""
    values: dict[str, str] = {k: v for k, v in url.params if not (ignore_password and k == "password")}
    sources = {k: "the URL" for k in values}
    service = values.get("service") or environ.get("PGSERVICE")
    if service:
        found, where = read_service(service, environ, read)
        for key, value in found.items():
            if key not in values:
                values[key], sources[key] = value, f"service {service} ({where})"
        values.pop("service", None)
    for key, var in libpq_envvars().items():
        if key not in values and var in environ and key not in ("service", "passfile"):
            values[key], sources[key] = environ[var], var
    password = values.pop("password", None)
    password_source = sources.pop("password", None)
    secrets = [s for s in (password, values.get("sslpassword")) if s]
    if password is None:
        password, password_source = _pgpass(values, environ, read)
    if password is not None:
        secrets.append(password)
    # Every password .pgpass holds for these hosts could reach output: scrub them all.
    secrets += _pgpass_all(values, environ, read)
    ordered = tuple(sorted(values.items()))
    return Effective(ordered, tuple(sorted(sources.items())), password, password_source, tuple(dict.fromkeys(secrets)))


def _home(environ: Mapping[str, str]) -> str:
    home = environ.get("HOME")
    if home:
        return home
    try:
        import pwd

        return pwd.getpwuid(os.getuid()).pw_dir
    except (ImportError, KeyError, OSError):
        return os.path.expanduser("~")


def service_files(environ: Mapping[str, str]) -> list[str]:
    """Where libpq looks for service definitions, in its order."""
    files = [environ.get("PGSERVICEFILE") or os.path.join(_home(environ), ".pg_service.conf")]
    sysconf = environ.get("PGSYSCONFDIR")
    files += [os.path.join(sysconf, "pg_service.conf")] if sysconf else list(SYSTEM_SERVICE_FILES)
    return files


#: Where distributions' libpq keeps the system-wide service file when PGSYSCONFDIR is unset.
SYSTEM_SERVICE_FILES = ("/etc/postgresql-common/pg_service.conf", "/etc/pg_service.conf")


def read_service(name: str, environ: Mapping[str, str], read: Reader = read_file) -> tuple[dict[str, str], str]:
    """The parameters of service `name` from the first file that defines it.

    A service that cannot be found is an error, as in libpq: connecting anyway could reach
    a host that no decision here (the production guard above all) has seen.
    """
    tried = service_files(environ)
    for path in tried:
        text = read(path)
        if text is None:
            continue
        section: str | None = None
        found: dict[str, str] | None = None
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            if line.startswith("[") and line.endswith("]"):
                if found is not None:
                    break
                section = line[1:-1].strip()
                if section == name:
                    found = {}
                continue
            if found is not None and section == name and "=" in line:
                key, _, value = line.partition("=")
                found[key.strip()] = value.strip()
        if found is not None:
            return found, path.replace(_home(environ), "~", 1)
    raise UsageError(
        f"service {name!r} (from the URL's service= or PGSERVICE) is not defined in {', '.join(tried)}",
        "define it in ~/.pg_service.conf (or PGSERVICEFILE), or give the host in the URL",
    )


def pgpass_file(values: Mapping[str, str], environ: Mapping[str, str]) -> str:
    return values.get("passfile") or environ.get("PGPASSFILE") or os.path.join(_home(environ), ".pgpass")


def _pgpass_lines(values: Mapping[str, str], environ: Mapping[str, str], read: Reader) -> list[list[str]]:
    text = read(pgpass_file(values, environ))
    if text is None:
        return []
    rows = []
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        fields: list[str] = []
        cur, esc = "", False
        for ch in line:
            if esc:
                cur, esc = cur + ch, False
            elif ch == "\\":
                esc = True
            elif ch == ":" and len(fields) < 4:
                fields.append(cur)
                cur = ""
            else:
                cur += ch
        fields.append(cur)
        if len(fields) == 5:
            rows.append(fields)
    return rows


def _targets(values: Mapping[str, str]) -> list[tuple[str, str]]:
    hosts = (values.get("host") or "").split(",")
    ports = (values.get("port") or "5432").split(",")
    out = []
    for i, host in enumerate(hosts):
        port = ports[i] if i < len(ports) else ports[-1]
        # libpq matches a socket connection against `localhost`
        out.append(("localhost" if not host or host.startswith("/") else host, port or "5432"))
    return out


def _default_user(environ: Mapping[str, str]) -> str:
    try:
        import getpass

        return getpass.getuser()
    except (KeyError, OSError, ImportError):
        return environ.get("USER", "")


def _pgpass(values: Mapping[str, str], environ: Mapping[str, str], read: Reader) -> tuple[str | None, str | None]:
    """The password libpq would read from .pgpass for the first host, as libpq matches it."""
    if read is read_file and not private(pgpass_file(values, environ)):
        return None, None
    rows = _pgpass_lines(values, environ, read)
    if not rows:
        return None, None
    user = values.get("user") or _default_user(environ)
    dbname = values.get("dbname") or user
    for host, port in _targets(values)[:1]:
        for h, p, d, u, pw in rows:
            if all(f in ("*", want) for f, want in ((h, host), (p, port), (d, dbname), (u, user))):
                return pw, ".pgpass"
    return None, None


def _pgpass_all(values: Mapping[str, str], environ: Mapping[str, str], read: Reader) -> list[str]:
    """Every .pgpass password that could apply to any host and database of this connection."""
    rows = _pgpass_lines(values, environ, read)
    user = values.get("user") or _default_user(environ)
    hosts = {h for h, _ in _targets(values)}
    return [pw for h, _, _, u, pw in rows if pw and h in ("*", *hosts) and u in ("*", user)]


def is_local_host(host: str) -> bool:
    """localhost, a loopback literal (127.0.0.0/8, ::1), or a unix socket directory."""
    import ipaddress

    if host == "" or host.startswith("/") or host.startswith("@"):
        return True
    # Only `localhost` itself: `localhost.` is an absolute DNS name that a resolver may send
    # to the network (docs/behaviour.md, "Production guard").
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]").split("%", 1)[0]).is_loopback
    except ValueError:
        return False


def nonlocal_endpoint(eff: Effective) -> str | None:
    """The first host or hostaddr that cannot be proven local, named with its source; None if
    every one is local. hostaddr, when given, is where libpq really connects."""
    for key, values in (("host", eff.hosts), ("hostaddr", eff.hostaddrs)):
        for value in values:
            if not is_local_host(value.strip()):
                return f"{key} {value.strip()!r} (from {eff.source(key) or 'the URL'})"
    return None
