"""The app's DBOS system database: created if missing, its schema brought up to date by the
app's own DBOS toolchain, and the runtime role granted what the app needs there.

The schema must match the app's DBOS version, so `up` never writes it itself: it runs the
toolchain the app would use (docs/dbos-compatibility.md):
- Python (`dbos` 1.x+ on the commands' PATH): `dbos migrate -s URL [--schema S] [-r ROLE]`,
  in an empty temporary directory so that it finds no config and runs no user command;
- TypeScript (`@dbos-inc/dbos-sdk` 4.x+ in the app's node_modules): `dbos schema URL [-r ROLE]`;
  1.x-3.x: the SDK's own `migrate` function without the user's commands (tsprovision.py);
- `dbosctl sysdb migrate [-r ROLE]` when that is what is installed.
No password is ever on these command lines: the URL goes without it and PGPASSWORD (or,
for dbosctl, DBOS_SYSTEM_DATABASE_URL) carries it in the environment.

With no toolchain, the database is only created, and the runtime role gets what the app
needs to create the schema itself at its first launch.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

from dbos_migrate.errors import DatabaseError
from dbos_migrate.events import Notice
from dbos_migrate.model import SystemDatabase as SystemReport
from dbos_migrate.settings.target import Endpoint, Target, pg_vars

if TYPE_CHECKING:
    from dbos_migrate.engine.frame import Run
    from dbos_migrate.engine.options import CommandOptions, UpOptions
    from dbos_migrate.engine.runner import Interrupts
    from dbos_migrate.engine.scrub import Scrubber

DEFAULT_SCHEMA = "dbos"
#: Oldest releases whose CLI migrates a given system database URL (older ones need the app's
#: config and also run its commands, so they cannot be used here).
MIN_PYTHON = (1, 0)
MIN_TYPESCRIPT = (3, 0)


@dataclass(frozen=True)
class Toolchain:
    """A DBOS tool that can bring the system schema up to date, and how to run it."""

    name: str  # e.g. "dbos 3.4.0 (Python)"
    argv: tuple[str, ...]  # no secret in it
    env: Mapping[str, str]
    cwd: str | None  # None: an empty temporary directory

    @property
    def shown(self) -> str:
        return shlex.join(self.argv)


# ---------------------------------------------------------------------------- finding the toolchain


def _version_tuple(text: str | None) -> tuple[int, ...] | None:
    match = re.match(r"\s*(\d+)(?:\.(\d+))?", text or "")
    return (int(match[1]), int(match[2] or 0)) if match else None


def _which(name: str, env: Mapping[str, str], cwd: Path) -> str | None:
    """Like the shell finds a command: the PATH the commands get, relative entries from `cwd`."""
    entries = [str(cwd / p) if p and not os.path.isabs(p) else p for p in env.get("PATH", os.defpath).split(os.pathsep)]
    return shutil.which(name, path=os.pathsep.join(entries))


def _python_dbos_version(script: str, env: Mapping[str, str]) -> str | None:
    """The `dbos` package version, asked of the interpreter the script runs with."""
    try:
        with open(script, "rb") as fh:
            first = fh.readline(300).decode("utf-8", "replace")
    except OSError:
        return None
    interp = first[2:].strip().split()[0] if first.startswith("#!") else ""
    probe = "import importlib.metadata as m; print(m.version('dbos'))"
    argv = [interp, "-c", probe] if "python" in os.path.basename(interp) else [script, "version"]
    try:
        out = subprocess.run(argv, env=dict(env), capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.SubprocessError):
        return None
    match = re.search(r"(\d+\.\d+(?:\.\d+)?\S*)", out.stdout)
    return match.group(1) if out.returncode == 0 and match else None


def _node_sdk(directory: Path) -> tuple[str, str] | None:
    """(bin/dbos, SDK version) of @dbos-inc/dbos-sdk installed for the app, looked up the way
    node resolves packages: node_modules here, then in each parent directory."""
    import json

    for base in (directory, *directory.parents):
        package = base / "node_modules" / "@dbos-inc" / "dbos-sdk" / "package.json"
        binary = base / "node_modules" / ".bin" / "dbos"
        if package.is_file() and binary.exists():
            try:
                version = json.loads(package.read_text(encoding="utf-8")).get("version")
            except (OSError, ValueError):
                version = None
            return str(binary), str(version or "unknown")
    return None


def find_toolchain(run: Run[UpOptions], endpoint: Endpoint, schema: str | None) -> tuple[Toolchain | None, str]:
    """The app's own DBOS tool for its system schema, chosen by `language` and what is
    installed; else None and the reason, for the warning."""
    from dbos_migrate.engine import tsprovision

    cfg = run.config
    role = run.options.app_role
    env = toolchain_env(run.command_env(), endpoint)
    language = cfg.language or ("typescript" if (cfg.directory / "package.json").is_file() else "python")
    url = endpoint.url.without_secrets().libpq_text()
    tried: list[str] = []
    if language in ("node", "typescript"):
        found = _node_sdk(cfg.directory)
        if found is not None:
            binary, version = found
            major = (_version_tuple(version) or (0,))[0]
            if major in tsprovision.LINES:  # their `dbos migrate` also runs the user's commands
                node = _which("node", run.command_env(), cfg.directory)
                env_for = partial(toolchain_env, run.command_env())
                legacy, reason = tsprovision.toolchain(run, endpoint, found, node, env_for)
                if legacy is not None:
                    return Toolchain(legacy[0], legacy[1], legacy[2], None), ""
                tried.append(reason)
            elif (_version_tuple(version) or (0,)) >= MIN_TYPESCRIPT:
                argv = [binary, "schema", url, *(["-r", role] if role else [])]
                if schema and (_version_tuple(version) or (0,)) >= (4, 0):
                    argv += ["--schema", schema]
                return Toolchain(f"@dbos-inc/dbos-sdk {version} (TypeScript)", tuple(argv), env, str(cfg.directory)), ""
            else:
                tried.append(f"@dbos-inc/dbos-sdk {version} is not a release line dbos-migrate knows")
        else:
            tried.append("no @dbos-inc/dbos-sdk in node_modules")
    else:
        script = _which("dbos", env, cfg.directory)
        if script is not None:
            py_version = _python_dbos_version(script, env)
            if py_version is not None and (_version_tuple(py_version) or (0,)) >= MIN_PYTHON:
                argv = [script, "migrate", "-s", url, *(["-r", role] if role else [])]
                if schema and (_version_tuple(py_version) or (0,)) >= (2, 0):
                    argv += ["--schema", schema]
                return Toolchain(f"dbos {py_version} (Python)", tuple(argv), env, None), ""
            tried.append(
                f"`dbos` {py_version or '(version unknown)'} at {script} cannot migrate a given system database"
            )
        else:
            tried.append("no `dbos` on the commands' PATH")
    ctl = _which("dbosctl", env, cfg.directory)
    if ctl is not None:
        argv = [
            ctl,
            "sysdb",
            "migrate",
            *(["-r", role] if role else []),
            *(["--schema", schema] if schema else []),
        ]
        ctl_env = {**env, "DBOS_SYSTEM_DATABASE_URL": endpoint.url.libpq_text()}
        return Toolchain("dbosctl", tuple(argv), ctl_env, str(cfg.directory)), ""
    tried.append("no `dbosctl`")
    return None, "; ".join(tried)


def toolchain_env(base: Mapping[str, str], endpoint: Endpoint) -> dict[str, str]:
    """The commands' environment, with the PG* values pointed at the system database: the
    toolchain reads its password (and anything the URL leaves out) from there."""
    env = {k: v for k, v in base.items() if not k.startswith("PG")}
    env.update(pg_vars(endpoint.eff, endpoint.url.database or ""))
    return env


# ---------------------------------------------------------------------------- looking, read-only


def inspect(target: Target, scrub: Scrubber, app_name: str, schema: str | None) -> SystemReport:
    """What `status` and `plan` show of the system database: whether it exists and its DBOS
    schema version. Read-only; a failure to look is reported in `action`, never raised."""
    from dbos_migrate.engine import database as db

    system = target.system
    report = SystemReport(url=system.url_text(mask=True), kind="postgresql", source=system.source)
    if system.endpoint is None:
        report.kind, report.action = "other", "left to the app"
        return report
    try:
        conn = db.connect(
            system.endpoint, scrub, app_name=app_name, where="looking at the system database", read_only=True
        )
    except db.DatabaseMissing:
        report.exists = False
        return report
    except DatabaseError as exc:
        report.action = f"unknown: {exc.message}"
        return report
    with db.closing(conn):
        report.exists = True
        try:
            report.schema_version = db.system_schema_version(conn, schema or DEFAULT_SCHEMA)
        except DatabaseError as exc:
            report.action = f"unknown: {exc.message}"
    return report


# ---------------------------------------------------------------------------- provisioning


def check_server_first(run: Run[UpOptions]) -> None:
    """The system database's server, when it is another, gets the checks of the app's (a
    standby, a missing --app-role) before the app database is created (docs/behaviour.md)."""
    from dbos_migrate.engine.ensure import check_other_server

    endpoint = run.target.system.endpoint
    if endpoint is not None and run.options.system_db != "skip":
        check_other_server(run, endpoint, kind="system", verb="up")


def provision(
    run: Run[UpOptions], interrupts: Interrupts, adjust: Callable[[Toolchain], Toolchain] | None = None
) -> Toolchain | None:
    """Create the system database if missing and bring its schema up to date (see module doc).
    `adjust` may extend the toolchain's command (appdb.with_app_database). Returns the toolchain
    that ran, if one did (the app database's provisioning uses it)."""
    from dbos_migrate.engine import database as db
    from dbos_migrate.engine.ensure import ensure_database
    from dbos_migrate.engine.grants import grant_system_database

    system = run.target.system
    report = SystemReport(url=system.url_text(mask=True), kind="postgresql", source=system.source)
    run.report.system_database = report
    if system.endpoint is None:
        report.kind, report.action = "other", "left to the app"
        run.emit(Notice(f"system database {report.url} is not PostgreSQL: left to the app"))
        return None
    if run.options.system_db == "skip":
        report.action = "skipped (--system-db skip)"
        return None
    endpoint = system.endpoint
    deadline = run.ctx.clock() + run.options.lock_timeout
    ensured = ensure_database(run, endpoint, kind="system", verb="up", deadline=deadline)
    report.exists, report.created, conn = ensured.existed, ensured.created, ensured.conn
    with db.closing(conn):
        schema = run.config.system_schema or DEFAULT_SCHEMA
        toolchain, why = (
            (None, "--system-db create")
            if run.options.system_db == "create"
            else find_toolchain(run, endpoint, run.config.system_schema)
        )
        if toolchain is not None:
            toolchain = adjust(toolchain) if adjust is not None else toolchain
            run_toolchain(run, toolchain, interrupts)
            report.toolchain, report.action = toolchain.name, "migrated"
            if run.options.app_role:
                grant_system_database(conn, endpoint.url.database or "", run.options.app_role, None, run.scrub)
        else:
            report.action = "created" if report.created else "exists"
            if run.options.app_role:
                grant_system_database(conn, endpoint.url.database or "", run.options.app_role, schema, run.scrub)
        report.schema_version = db.system_schema_version(conn, schema)
    # Said once, at info level (docs/behaviour.md, step 5): with no toolchain the app makes or
    # updates its DBOS tables itself at its first launch, which is how DBOS apps always work.
    left_to_app = (
        ""
        if toolchain is not None
        else (
            f"; the app {'creates' if report.schema_version is None else 'updates'} its DBOS tables at its "
            f"first launch (not done now: {why})"
        )
    )
    run.emit(
        Notice(
            f"system database {endpoint.url.database}: {report.action}"
            + (f" by {report.toolchain}" if report.toolchain else "")
            + f", DBOS schema version {report.schema_version or 'none yet'}"
            + left_to_app
        )
    )
    return toolchain


def run_toolchain(
    run: Run[CommandOptions],
    toolchain: Toolchain,
    interrupts: Interrupts,
    *,
    step: str = "system schema",
    shown: str | None = None,
    ok_codes: tuple[int, ...] = (0,),
) -> int | None:
    """Run the toolchain like a migration command, with a command's events and exit codes
    (frame.run_command_with_events), as the one command of `step`; in an empty temporary
    directory when it must find no config. Returns its exit code (one of `ok_codes`)."""
    from dbos_migrate.engine.frame import run_command_with_events

    shown = run.scrub.text(shown or f"{toolchain.shown}   # {toolchain.name}")
    workdir = toolchain.cwd or tempfile.mkdtemp(prefix="dbos-migrate-sysdb-")
    hint = (
        "see its output above; --system-db create only creates the database and leaves the schema to the app"
        if step == "system schema"
        else "see its output above; --datasource skip leaves the app database's DBOS tables to the app"
    )
    try:
        result = run_command_with_events(
            run,
            1,
            1,
            toolchain.shown,
            shown,
            interrupts,
            env=toolchain.env,
            cwd=workdir,
            step=step,
            ok_codes=ok_codes,
            failure_hint=hint,
        )
    finally:
        if toolchain.cwd is None:
            shutil.rmtree(workdir, ignore_errors=True)
    return result.exit_code


def print_toolchain_migrations(run: Run[UpOptions], toolchain: Toolchain, value: str, schema: str) -> str | None:
    """The SQL of the system schema's migrations as the toolchain prints it itself
    (`dbos migrate --print-migrations all|N --schema S`, Python 2.x and later), connecting to
    nothing; None when this toolchain cannot print them."""
    if not toolchain.name.endswith("(Python)"):
        return None
    argv = [toolchain.argv[0], "migrate", "--print-migrations", value, "--schema", schema]
    workdir = tempfile.mkdtemp(prefix="dbos-migrate-sysdb-")
    try:
        out = subprocess.run(
            argv,
            cwd=workdir,
            env=dict(toolchain.env),
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    if out.returncode != 0:
        detail = (out.stderr.strip().splitlines() or ["no output"])[-1]
        run.emit(Notice(f"{toolchain.name} cannot print its migrations: {run.scrub.text(detail)}", "warning"))
        return None
    return run.scrub.text(out.stdout)
