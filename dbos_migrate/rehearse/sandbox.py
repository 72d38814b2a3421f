"""What a rehearsal's commands can reach: credentials for the scratch database only, and an
environment built from an allow-list (docs/rehearsal.md, "What the commands can reach").

On the target instance (the default) the commands log in as a temporary role made for the
rehearsal: random name of the scratch shape (so leftovers are found like leftover scratch
databases), random password (sent to the server as a SCRAM/MD5 verifier, never in clear),
NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT, member of no role, owner of the scratch
database and, object by object, of what the copy put in it. It is dropped after the scratch
database, whatever happens. With `--rehearse-url` the commands get that URL's credentials.
Either way the real target's URL, password and `DBOS_MIGRATE_*` never reach them.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, unquote

import psycopg
from psycopg import sql

from dbos_migrate.engine import database as db
from dbos_migrate.engine.scrub import Scrubber
from dbos_migrate.errors import MigrateError, Problem, UsageError, first_line
from dbos_migrate.events import Notice
from dbos_migrate.rehearse.result import Credentials
from dbos_migrate.rehearse.scratch import signals_held
from dbos_migrate.settings.config import Config
from dbos_migrate.settings.conninfo import Effective, parse_url
from dbos_migrate.settings.target import Endpoint, Target, command_env, connection_vars

if TYPE_CHECKING:
    from dbos_migrate.engine.frame import Run
    from dbos_migrate.engine.options import RehearseOptions

Conn = psycopg.Connection[Any]

#: The comment a rehearsal puts on its temporary role; only marked roles are ever dropped.
ROLE_MARK = "dbos-migrate rehearsal role: dropped when its rehearsal ends"
#: A leftover role's password stops working after this long, even if nobody drops it.
VALID_FOR = "1 day"
#: The process environment a rehearsal's commands inherit (the rest is left out).
ALLOWED = frozenset({"PATH", "HOME", "LANG", "LANGUAGE", "TERM", "TMPDIR", "USER", "LOGNAME", "SHELL", "TZ"})
#: Connection parameters of the deploy role's connection that the temporary role keeps:
#: where the server is and how to trust it; never the deploy role's client certificate,
#: password file, service or options.
_KEPT_PARAMS = frozenset(
    {
        "host",
        "hostaddr",
        "port",
        "sslmode",
        "sslrootcert",
        "sslcrl",
        "sslcrldir",
        "sslsni",
        "connect_timeout",
        "target_session_attrs",
        "load_balance_hosts",
        "keepalives",
        "keepalives_idle",
        "keepalives_interval",
        "keepalives_count",
        "tcp_user_timeout",
        "gssencmode",
        "channel_binding",
    }
)
_DROPPED_QUERY = frozenset(
    {
        "user",
        "password",
        "passfile",
        "service",
        "sslcert",
        "sslkey",
        "sslpassword",
        "options",
        "sslcertmode",
        "require_auth",
    }
)


def _denied(name: str) -> bool:
    """Variables that name or carry the real target: never looked up, never passed on."""
    upper = name.upper()
    return upper.startswith(("DBOS_MIGRATE_", "PG", "DBOS_DB")) or "DATABASE_URL" in upper or upper in ("DBOS__CLOUD",)


@dataclass
class Sandbox:
    """The credentials and environment of one rehearsal's commands."""

    mode: str  # temporary-role, rehearse-url, shared
    target: Target  # what the commands connect to (the scratch database)
    role: str | None = None  # the temporary role, when mode is temporary-role
    password: str | None = None
    created: bool = False
    limits: list[str] = field(default_factory=list)

    def credentials(self) -> Credentials:
        """What the rehearsal reports of these credentials: never the password."""
        return Credentials(self.mode, self.role, list(self.limits))


def prepare(scratch_target: Target, *, rehearse_url: bool, shared: bool) -> Sandbox:
    """Decide who the commands log in as; nothing is created yet (the environment is needed
    before anything starts, to check the commands' ${VAR} references)."""
    if rehearse_url:
        return Sandbox("rehearse-url", scratch_target)
    if shared:
        return Sandbox("shared", scratch_target)
    role = scratch_target.app_database  # roles and databases have separate names: the same one
    password = secrets.token_urlsafe(32)
    instance = as_role(scratch_target.instance, role, password)
    target = replace(
        scratch_target,
        instance=instance,
        system=replace(scratch_target.system, endpoint=instance.at(scratch_target.app_database)),
        secrets=(password,),
    )
    return Sandbox("temporary-role", target, role, password)


def as_role(endpoint: Endpoint, role: str, password: str) -> Endpoint:
    """The same server, reached as `role` with `password`: the URL keeps its scheme, hosts,
    path and driver parameters; the user, password and client credentials are replaced."""
    url = endpoint.url
    sp = url.spans
    text = url.text
    if sp.query is not None:
        q0, q1 = sp.query
        kept = [kv for kv in text[q0:q1].split("&") if unquote(kv.partition("=")[0]) not in _DROPPED_QUERY]
        text = text[:q0] + "&".join(kept) + text[q1:] if kept else text[: q0 - 1] + text[q1:]
    auth = quote(role, safe="") + ":" + quote(password, safe="")
    if sp.userinfo is not None:
        text = text[: sp.userinfo[0]] + auth + text[sp.userinfo[1] :]
    else:
        text = text[: sp.scheme_end] + auth + "@" + text[sp.scheme_end :]
    new_url = parse_url(text, what="the rehearsal's URL")
    params = (*((k, v) for k, v in endpoint.eff.params if k in _KEPT_PARAMS), ("user", role))
    sources = tuple((k, s) for k, s in endpoint.eff.sources if k in _KEPT_PARAMS)
    eff = Effective(params, sources, password, "the rehearsal's temporary role", (password,))
    return Endpoint(new_url, eff)


# ---------------------------------------------------------------------------- the environment


def environment(
    sandbox: Sandbox, environ: Mapping[str, str], config: Config | None, real: Scrubber, real_urls: list[str]
) -> tuple[dict[str, str], list[Problem], list[str]]:
    """The commands' environment: the allow-listed process variables, the config's `env:`
    (resolved against the scratch database), the scratch connection; nothing that carries
    the real target. Returns (environment, env: entries not exported, variables left out
    because their value carries the real password or URL)."""
    plain = Scrubber()

    def leaks(value: str) -> bool:
        return real.text(value) != plain.text(value) or any(u and u in value for u in real_urls)

    lookup = {k: v for k, v in environ.items() if not _denied(k) and not leaks(v)}
    full, skipped = command_env(sandbox.target, lookup, config)
    conn = connection_vars(sandbox.target)
    declared = {key for key, _ in config.env} if config is not None else set()
    env: dict[str, str] = {}
    dropped: list[str] = []
    for key, value in full.items():
        if key in conn:
            continue
        if key in declared or key in ALLOWED or key.startswith("LC_"):
            if leaks(value):
                dropped.append(key)
            else:
                env[key] = value
    env.update(conn)
    return env, skipped, dropped


# ---------------------------------------------------------------------------- the temporary role


def may_create_roles(conn: Conn) -> tuple[bool, bool, str]:
    """(superuser, may create roles, the role's name) of the connected role."""
    row = conn.execute(
        "SELECT r.rolsuper, r.rolsuper OR r.rolcreaterole, r.rolname::text FROM pg_catalog.pg_roles r "
        "WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER"
    ).fetchone()
    return (bool(row[0]), bool(row[1]), str(row[2])) if row else (False, False, "?")


def refusal(who: str) -> UsageError:
    return UsageError(
        f"the role {who} may not create roles, so the rehearsal cannot give its commands credentials that "
        "work on the scratch database only",
        "pass --rehearse-url with a throwaway instance (a CI service container), grant CREATEROLE, or pass "
        "--rehearse-shared-credentials if you trust the change (unsafe for untrusted changes: its commands "
        "then get this role's credentials)",
    )


def create_role(conn: Conn, sandbox: Sandbox, superuser: bool) -> None:
    """CREATE ROLE, marked; the deploy role becomes a member of it (not the other way round)
    so that it may hand it the scratch database. The password goes as a verifier."""
    assert sandbox.role is not None and sandbox.password is not None
    verifier = conn.pgconn.encrypt_password(sandbox.password.encode(), sandbox.role.encode())
    ident = sql.Identifier(sandbox.role)
    conn.execute(
        sql.SQL(
            "CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOINHERIT NOREPLICATION NOBYPASSRLS "
            "CONNECTION LIMIT 100 PASSWORD {} VALID UNTIL {}"
        ).format(ident, sql.Literal(verifier.decode()), sql.Literal(_valid_until(conn)))
    )
    sandbox.created = True
    conn.execute(sql.SQL("COMMENT ON ROLE {} IS {}").format(ident, sql.Literal(ROLE_MARK)))
    if not superuser:
        conn.execute(sql.SQL("GRANT {} TO CURRENT_USER").format(ident))


def _valid_until(conn: Conn) -> str:
    row = conn.execute(
        "SELECT (pg_catalog.now() OPERATOR(pg_catalog.+) %s::pg_catalog.interval)::pg_catalog.text",
        (VALID_FOR,),
    ).fetchone()
    return str(row[0]) if row else "infinity"


def give_database(conn: Conn, sandbox: Sandbox, database: str) -> None:
    assert sandbox.role is not None
    conn.execute(
        sql.SQL("ALTER DATABASE {} OWNER TO {}").format(sql.Identifier(database), sql.Identifier(sandbox.role))
    )


#: Every kind of object a schema copy creates, with the ALTER ... OWNER TO that hands it over.
_OWNED = """
WITH owned(cls, oid, owner, kw, ord) AS (
  SELECT 'pg_catalog.pg_namespace'::pg_catalog.regclass, n.oid, n.nspowner, 'SCHEMA', 0
    FROM pg_catalog.pg_namespace n
   WHERE (n.oid >= 16384 OR n.nspname = 'public') AND n.nspname !~ '^pg_(toast|temp_)'
  UNION ALL
  SELECT 'pg_catalog.pg_class'::pg_catalog.regclass, c.oid, c.relowner,
         CASE c.relkind WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW' WHEN 'f' THEN 'FOREIGN TABLE'
                        WHEN 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, 1
    FROM pg_catalog.pg_class c
   WHERE c.oid >= 16384 AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S')
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d  -- sequences of a column follow their table
                      WHERE d.classid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.objid = c.oid
                        AND d.refclassid = 'pg_catalog.pg_class'::pg_catalog.regclass AND d.deptype IN ('a', 'i'))
  UNION ALL
  SELECT 'pg_catalog.pg_proc'::pg_catalog.regclass, p.oid, p.proowner,
         CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, 2
    FROM pg_catalog.pg_proc p WHERE p.oid >= 16384
  UNION ALL
  SELECT 'pg_catalog.pg_type'::pg_catalog.regclass, t.oid, t.typowner,
         CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, 2
    FROM pg_catalog.pg_type t
   WHERE t.oid >= 16384 AND t.typtype <> 'm'
     AND (t.typrelid = 0 OR EXISTS (SELECT 1 FROM pg_catalog.pg_class c WHERE c.oid = t.typrelid AND c.relkind = 'c'))
     AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_type e WHERE e.typarray = t.oid)
  UNION ALL
  SELECT 'pg_catalog.pg_operator'::pg_catalog.regclass, o.oid, o.oprowner, 'OPERATOR', 3
    FROM pg_catalog.pg_operator o WHERE o.oid >= 16384
  UNION ALL
  SELECT 'pg_catalog.pg_opfamily'::pg_catalog.regclass, f.oid, f.opfowner, 'OPERATOR FAMILY', 3
    FROM pg_catalog.pg_opfamily f WHERE f.oid >= 16384
  UNION ALL
  SELECT 'pg_catalog.pg_opclass'::pg_catalog.regclass, k.oid, k.opcowner, 'OPERATOR CLASS', 3
    FROM pg_catalog.pg_opclass k WHERE k.oid >= 16384
  UNION ALL
  SELECT 'pg_catalog.pg_collation'::pg_catalog.regclass, l.oid, l.collowner, 'COLLATION', 3
    FROM pg_catalog.pg_collation l WHERE l.oid >= 16384
  UNION ALL
  SELECT 'pg_catalog.pg_conversion'::pg_catalog.regclass, v.oid, v.conowner, 'CONVERSION', 3
    FROM pg_catalog.pg_conversion v WHERE v.oid >= 16384
  UNION ALL
  SELECT 'pg_catalog.pg_ts_config'::pg_catalog.regclass, g.oid, g.cfgowner, 'TEXT SEARCH CONFIGURATION', 3
    FROM pg_catalog.pg_ts_config g WHERE g.oid >= 16384
  UNION ALL
  SELECT 'pg_catalog.pg_ts_dict'::pg_catalog.regclass, x.oid, x.dictowner, 'TEXT SEARCH DICTIONARY', 3
    FROM pg_catalog.pg_ts_dict x WHERE x.oid >= 16384
  UNION ALL
  SELECT 'pg_catalog.pg_statistic_ext'::pg_catalog.regclass, s.oid, s.stxowner, 'STATISTICS', 3
    FROM pg_catalog.pg_statistic_ext s WHERE s.oid >= 16384
  UNION ALL
  SELECT 'pg_catalog.pg_foreign_server'::pg_catalog.regclass, s.oid, s.srvowner, 'SERVER', 3
    FROM pg_catalog.pg_foreign_server s WHERE s.oid >= 16384
)
SELECT o.kw, (pg_catalog.pg_identify_object(o.cls, o.oid, 0)).identity,
       EXISTS (SELECT 1 FROM pg_catalog.pg_depend e
                WHERE e.classid = o.cls AND e.objid = o.oid AND e.deptype = 'e')
  FROM owned o
 WHERE o.owner OPERATOR(pg_catalog.<>) (SELECT r.oid FROM pg_catalog.pg_roles r WHERE r.rolname = %s)
 ORDER BY o.ord, 2
"""


def hand_over(conn: Conn, sandbox: Sandbox) -> list[str]:
    """ALTER ... OWNER TO the temporary role, object by object, in the scratch database only
    (never REASSIGN OWNED: it would also hand over every database the deploy role owns).
    Returns what could not be handed over, as limits of the rehearsal."""
    assert sandbox.role is not None
    role = sql.Identifier(sandbox.role)
    conn.execute("SET search_path = pg_catalog, pg_temp")
    # A NOINHERIT role does not get what pg_database_owner owns (the `public` schema of
    # PostgreSQL 15+): the schema is handed over like the rest, which needs CREATE on the
    # database for the new owner while the deploy role still owns the database.
    conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(conn.info.dbname), role))
    limits: list[str] = []
    in_extension: list[str] = []
    for kw, identity, member in conn.execute(_OWNED, (sandbox.role,)).fetchall():
        if member:
            in_extension.append(f"{kw.lower()} {identity}")
            continue
        try:
            conn.execute(sql.SQL("ALTER {} {} OWNER TO {}").format(sql.SQL(kw), sql.SQL(identity), role))
        except psycopg.Error as exc:
            limits.append(f"{kw.lower()} {identity} stays owned by the deploy role: {first_line(exc)}")
    extensions = [
        r[0]
        for r in conn.execute(
            "SELECT e.extname::text FROM pg_catalog.pg_extension e WHERE e.extname <> 'plpgsql' ORDER BY 1"
        ).fetchall()
    ]
    if extensions:
        limits.append(
            f"extension(s) {', '.join(extensions)} and their {len(in_extension)} object(s) stay owned "
            "by the deploy role: the commands cannot alter or drop them"
        )
    return limits


def drop_role(conn: Conn, role: str) -> None:
    """Sessions of the role ended, then DROP ROLE (the scratch database, all it owned, is gone)."""
    conn.execute(
        "SELECT pg_catalog.pg_terminate_backend(a.pid) FROM pg_catalog.pg_stat_activity a "
        "WHERE a.usename OPERATOR(pg_catalog.=) %s",
        (role,),
    )
    conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))


_SHAPE = re.compile(r"\Adbos_rehearse_[a-z0-9_]*_\d{14}_[0-9a-f]{6}\Z")


def remove_leftover_roles(conn: Conn, lock_class: int, lock_key: Any) -> tuple[list[str], list[str]]:
    """Drop temporary roles that killed rehearsals left behind: the exact scratch shape, the
    mark, no live rehearsal holding their lock, and no scratch database of the same name left."""
    dropped: list[str] = []
    problems: list[str] = []
    rows = conn.execute(
        """SELECT r.rolname::text FROM pg_catalog.pg_roles r
            WHERE pg_catalog.starts_with(r.rolname::text, 'dbos_rehearse_')
              AND pg_catalog.shobj_description(r.oid, 'pg_authid') IS NOT DISTINCT FROM %s
              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_database d WHERE d.datname = r.rolname)
            ORDER BY 1""",
        (ROLE_MARK,),
    ).fetchall()
    for (name,) in rows:
        if not _SHAPE.match(name):
            continue
        row = conn.execute(
            """SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_locks l WHERE l.locktype = 'advisory' AND l.granted
                               AND l.classid = %s::pg_catalog.oid AND l.objid = %s::pg_catalog.oid
                               AND l.objsubid = 2)""",
            (lock_class, lock_key(name)),
        ).fetchone()
        if row is None or row[0]:
            continue
        try:
            drop_role(conn, name)
            dropped.append(name)
        except psycopg.Error as exc:
            problems.append(f"could not drop leftover rehearsal role {name}: {first_line(exc)}")
    return dropped, problems


# ---------------------------------------------------------------------------- one rehearsal's steps


def setup_env(run: Run[RehearseOptions], sandbox: Sandbox, real: Scrubber, real_urls: list[str]) -> dict[str, str]:
    """The commands' environment, with a warning per env: entry or variable left out."""
    env, skipped, dropped = environment(sandbox, run.ctx.environ, run.config, real, real_urls)
    for problem in skipped:
        run.emit(Notice(problem.render(), "warning"))
    for key in dropped:
        run.emit(
            Notice(
                f"rehearsal: {key} is not passed to the commands: its value carries the real target's password or URL",
                "warning",
            )
        )
    return env


def create(run: Run[RehearseOptions], maint: Conn, sandbox: Sandbox) -> None:
    """Refuse when the deploy role may not create roles; else create the temporary role."""
    if sandbox.mode != "temporary-role":
        return
    try:
        superuser, allowed, who = may_create_roles(maint)
        if not allowed:
            raise refusal(who)
        create_role(maint, sandbox, superuser)
    except psycopg.Error as exc:
        raise db.classify(exc, run.scrub, where="creating the rehearsal's temporary role") from None
    if superuser:
        sandbox.limits.append(
            f"the commands run as the temporary role {sandbox.role}, not as the superuser {who}: superuser-only "
            "statements (untrusted extensions, SET ROLE, OWNER TO another role) fail in the rehearsal; such a "
            "failure is a limit of the rehearsal, not of the change"
        )


def own_database(run: Run[RehearseOptions], maint: Conn, sandbox: Sandbox, database: str) -> None:
    if sandbox.mode != "temporary-role":
        return
    try:
        give_database(maint, sandbox, database)
    except psycopg.Error as exc:
        raise db.classify(exc, run.scrub, where="handing the scratch database to the temporary role") from None


def after_copy(run: Run[RehearseOptions], maint: Conn, sandbox: Sandbox, scratch_target: Target) -> None:
    """Hand the copied objects, then the scratch database, to the temporary role (the copy
    runs as the deploy role, while it still owns the database); then make sure the
    temporary role can log in."""
    if sandbox.mode != "temporary-role":
        return
    app_name = db.application_name("rehearse")
    conn = db.connect(scratch_target.app, run.scrub, app_name=app_name, where="opening the scratch database")
    with db.closing(conn):
        try:
            sandbox.limits += [run.scrub.text(x) for x in hand_over(conn, sandbox)]
        except psycopg.Error as exc:
            raise db.classify(exc, run.scrub, where="handing the scratch objects to the temporary role") from None
    own_database(run, maint, sandbox, scratch_target.app_database)
    try:
        db.connect(
            sandbox.target.app, run.scrub, app_name=app_name, where="logging in as the rehearsal's temporary role"
        ).close()
    except MigrateError as exc:
        raise UsageError(
            f"the server does not let the rehearsal's temporary role log in ({exc.message})",
            "allow password logins for new roles in pg_hba.conf, pass --rehearse-url with a throwaway instance, "
            "or --rehearse-shared-credentials if you trust the change (unsafe for untrusted changes)",
        ) from None
    for limit in sandbox.limits:
        run.emit(Notice(f"rehearsal limit: {limit}", "warning"))


def drop(run: Run[RehearseOptions], maint: Conn, sandbox: Sandbox) -> None:
    """Drop the temporary role (after the scratch database). Never raises."""
    if not sandbox.created or sandbox.role is None:
        return
    with signals_held():  # a second Ctrl-C must not abandon the cleanup
        errors = _drop_attempts(run, maint, sandbox.role)
    if errors is None:
        sandbox.created = False
        return
    run.emit(
        Notice(
            f"rehearsal: could not drop temporary role {sandbox.role} ({'; '.join(errors)}); "
            "the next rehearsal removes it",
            "warning",
        )
    )


def _drop_attempts(run: Run[RehearseOptions], maint: Conn, role: str) -> list[str] | None:
    """Drop the role, through a fresh connection if ours broke: None, or why it could not."""
    errors: list[str] = []
    for attempt in range(2):
        conn = maint
        try:
            if attempt or maint.closed or maint.broken:
                from dbos_migrate.engine.frame import maintenance_connection

                conn = maintenance_connection(
                    run, db.application_name("rehearse"), purpose="to drop the temporary role"
                )
            try:
                drop_role(conn, role)
                return None
            finally:
                if conn is not maint:
                    conn.close()
        except (psycopg.Error, MigrateError) as exc:
            errors.append(run.scrub.text(first_line(exc)))
    return errors
