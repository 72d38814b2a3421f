"""One way to ensure a database and one way to run a command (engine/ensure.py, frame.py's
run_command_with_events): the app database and the DBOS system database get the same
--wait, the same checks and exit codes before anything is created, the same events; the
system schema's toolchain runs like any command, with its events (docs/architecture.md).

The verbs and the CLI run in-process against real PostgreSQL; a second server is a
throwaway cluster, and a fake `dbos` on PATH stands in for the app's DBOS toolchain."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import jsonschema
import pytest
from helpers import db_exists, one_json, query, write_config
from inmemory import InMemoryContext
from pgharness import REPO_ROOT, ClusterFactory, invoke, start_standby

from dbos_migrate import verbs
from dbos_migrate.errors import CommandFailed, DatabaseError
from dbos_migrate.events import CommandFinished, CommandStarted, DatabaseReady, Event, WaitingForServer
from dbos_migrate.localpg import free_port

FAKE_DBOS = """#!/bin/sh
case "$1" in version) echo "dbos 3.4.0"; exit 0;; esac
echo "fake dbos: migrating the system schema"
exit {code}
"""


def fake_dbos(directory: Path, code: int = 0) -> dict[str, str]:
    """An environment whose PATH finds a `dbos` 3.4.0 that exits `code` when asked to migrate."""
    bindir = directory / "bin"
    bindir.mkdir(parents=True, exist_ok=True)
    script = bindir / "dbos"
    script.write_text(FAKE_DBOS.format(code=code))
    script.chmod(0o755)
    return {"PATH": f"{bindir}{os.pathsep}/usr/bin{os.pathsep}/bin"}


@pytest.fixture
def role(pg_url: str, app_db: str) -> Iterator[str]:
    """A role on the app's server only; the test's databases are dropped before it is."""
    name = f"rt_{uuid.uuid4().hex[:10]}"
    query(pg_url, f'CREATE ROLE "{name}" NOLOGIN')
    yield name
    for db in (app_db, f"{app_db}_dbos_sys"):
        query(pg_url, f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
    query(pg_url, f'DROP ROLE IF EXISTS "{name}"')


@pytest.mark.parametrize("system_database", ["missing", "existing"])
def test_a_missing_app_role_is_exit_2_on_the_app_server_and_on_the_system_database_server(
    tmp_path: Path, pg_url: str, app_db: str, role: str, own_cluster: ClusterFactory, system_database: str
) -> None:
    """The once-divergent case: a missing --app-role was exit 2 on the app's server but exit 3
    (or no check at all, for an existing system database) on the system database's own."""
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    missing_here = invoke("up", "-c", str(cfg), "-D", pg_url, "--app-role", f"{role}_not", "--system-db", "create")
    assert missing_here.returncode == 2, missing_here.stderr
    assert "no such role" in missing_here.stderr and not db_exists(pg_url, app_db)

    other = own_cluster()
    sys_name = f"{app_db}_sys"
    if system_database == "existing":
        query(other.url(dbname="postgres"), f'CREATE DATABASE "{sys_name}"')
    result = invoke(
        "up",
        "-c",
        str(cfg),
        "-D",
        pg_url,
        "--app-role",
        role,
        "--system-db",
        "create",
        "--sys-db-url",
        other.url(dbname=sys_name),
    )
    assert result.returncode == 2, result.stdout + result.stderr
    assert f"--app-role {role!r}: no such role on the system database's server" in result.stderr
    assert db_exists(other.url(dbname="postgres"), sys_name) == (system_database == "existing")
    assert not db_exists(pg_url, app_db)  # checked before anything was created, on either server


def test_a_system_database_on_a_standby_is_refused_before_anything(
    tmp_path: Path, pg_url: str, app_db: str, own_cluster: ClusterFactory, reachable_tmp: Path
) -> None:
    """A standby is exit 3 on either server: an existing system database on a read-only standby
    was not refused (no check when it existed), and is now before the app database is created."""
    primary = own_cluster(extra_hba=["host replication all 127.0.0.1/32 scram-sha-256"])
    sys_name = f"{app_db}_sys"
    query(primary.url(dbname="postgres"), f'CREATE DATABASE "{sys_name}"')
    standby = start_standby(primary, reachable_tmp)
    try:
        cfg = write_config(tmp_path, app_db_name=app_db, migrate=[f"touch {tmp_path / 'ran'}"])
        result = invoke(
            "up", "-c", str(cfg), "-D", pg_url, "--system-db", "create", "--sys-db-url", standby.url(dbname=sys_name)
        )
        assert result.returncode == 3, result.stdout + result.stderr
        assert "read-only standby" in result.stderr and "the system database's server" in result.stderr
        assert not db_exists(pg_url, app_db) and not (tmp_path / "ran").exists()
    finally:
        standby.remove()


def test_both_databases_are_announced_by_the_same_event(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    options = verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="create")
    for created in (True, False):
        events: list[Event] = []
        report = verbs.up(InMemoryContext({"PATH": os.environ["PATH"]}), options, events.append)
        assert report.ok, report.error
        ready = [(e.name, e.created, getattr(e, "kind", None)) for e in events if isinstance(e, DatabaseReady)]
        assert ready == [(app_db, created, "app"), (f"{app_db}_dbos_sys", created, "system")]
    assert db_exists(pg_url, f"{app_db}_dbos_sys")


def test_the_system_database_server_is_waited_for_like_the_app_server(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """--wait covers every server a run connects to: a system database on a server that does
    not answer is retried (WaitingForServer), then exit 3."""
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    closed = f"postgresql://postgres@127.0.0.1:{free_port()}/{app_db}_sys"
    options = verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="create", sys_db_url=closed, wait=1.0)
    events: list[Event] = []
    report = verbs.up(InMemoryContext({"PATH": os.environ["PATH"]}), options, events.append)
    assert isinstance(report.error, DatabaseError) and report.error.exit_code == 3
    assert any(isinstance(e, WaitingForServer) for e in events)


def test_the_system_schema_toolchain_runs_as_a_command_with_its_events(
    tmp_path: Path, pg_url: str, app_db: str
) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["echo migrating"])
    options = verbs.UpOptions(config=str(cfg), db_url=pg_url)
    events: list[Event] = []
    ctx = InMemoryContext(fake_dbos(tmp_path))
    report = verbs.up(ctx, options, events.append)
    assert report.ok, report.error
    commands = [e for e in events if isinstance(e, (CommandStarted, CommandFinished))]
    assert [(type(e), getattr(e, "step", None)) for e in commands] == [
        (CommandStarted, "system schema"),
        (CommandFinished, "system schema"),
        (CommandStarted, ""),
        (CommandFinished, ""),
    ]
    first = commands[0]
    assert (
        isinstance(first, CommandStarted) and "migrate -s" in first.command and "dbos 3.4.0 (Python)" in first.command
    )
    assert [c.command for c in report.commands] == ["echo migrating"]  # the toolchain is no history row

    text = invoke("up", "-c", str(cfg), "-D", pg_url, env=fake_dbos(tmp_path))
    assert text.returncode == 0, text.stderr
    assert "[system schema] " in text.stdout and "fake dbos: migrating the system schema" in text.stdout
    assert "[system schema] ok in " in text.stdout
    doc = invoke("up", "-c", str(cfg), "-D", pg_url, "-o", "json", env=fake_dbos(tmp_path))
    schema = json.loads((REPO_ROOT / "schemas" / "output.schema.json").read_text())
    jsonschema.validate(one_json(doc.stdout), schema)


def test_a_failing_toolchain_fails_like_a_command(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[f"touch {tmp_path / 'ran'}"])
    events: list[Event] = []
    report = verbs.up(
        InMemoryContext(fake_dbos(tmp_path, code=7)), verbs.UpOptions(config=str(cfg), db_url=pg_url), events.append
    )
    assert isinstance(report.error, CommandFailed) and report.error.exit_code == 1
    assert report.error.message.startswith("system schema command failed with exit code 7: ")
    finished = [e for e in events if isinstance(e, CommandFinished)]
    assert [(e.step, e.result.status, e.result.exit_code) for e in finished] == [("system schema", "failed", 7)]
    assert not (tmp_path / "ran").exists()


def test_status_and_history_keep_the_config_path_when_the_target_cannot_be_resolved(tmp_path: Path) -> None:
    """One resolution for every verb (frame.announce): the report names the config it read
    even when the target cannot be resolved, as `up`'s does."""
    cfg = write_config(tmp_path, app_db_name="t_never", migrate=["true"])
    where = {"config": str(cfg), "db_url": "mysql://nowhere/x"}
    reports = [
        verbs.status(InMemoryContext({}), verbs.StatusOptions(**where), lambda e: None),
        verbs.history(InMemoryContext({}), verbs.HistoryOptions(**where), lambda e: None),
        verbs.up(InMemoryContext({}), verbs.UpOptions(**where), lambda e: None),
    ]
    for report in reports:
        assert report.error is not None and report.where.config_path == str(cfg), report
