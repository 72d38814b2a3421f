"""The live part of a rehearsal: after the diff, ask the real databases (read-only) what the
scratch copy could not tell: the app database's rows (data checks) and the system
database's unfinished workflows (workflow checks). docs/rehearsal.md has the details.

Every connection here is read from only, through readonly.bounded; everything read is
scrubbed of secrets before it is kept.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import TYPE_CHECKING

import psycopg

from dbos_migrate.engine import database as db
from dbos_migrate.errors import DatabaseError
from dbos_migrate.rehearse import datachecks, readonly, workflows
from dbos_migrate.rehearse.catalog import Snapshot
from dbos_migrate.rehearse.dataplan import Check, Details, Planner, read_details
from dbos_migrate.settings.target import Target

if TYPE_CHECKING:
    from dbos_migrate.engine.frame import Run
    from dbos_migrate.engine.options import RehearseOptions
    from dbos_migrate.rehearse.result import Rehearsal


def settings(run: Run[RehearseOptions]) -> datachecks.Settings:
    return datachecks.Settings.from_env(run.ctx.environ, run.options.data_check_timeout)


def plan_checks(
    run: Run[RehearseOptions],
    scratch_target: Target,
    before: Snapshot,
    after: Snapshot,
    rehearsal: Rehearsal,
    limits: datachecks.Settings,
) -> list[Check]:
    """The data checks the changes need, planned while the scratch database still exists."""
    report = datachecks.DataChecks(run.options.data_checks, database=run.target.app_database, settings=limits)
    rehearsal.data_checks = report
    if not run.options.data_checks:
        report.skipped = "--no-data-checks"
        return []
    planner = Planner(rehearsal.changes, before, after)
    index_oids, constraint_oids = planner.needed()
    details = Details()
    if index_oids or constraint_oids:
        conn = db.connect(
            scratch_target.app,
            run.scrub,
            app_name=db.application_name("rehearse"),
            where="reading the scratch database",
        )
        with db.closing(conn):
            try:
                details = read_details(conn, index_oids, constraint_oids)
            except psycopg.Error as exc:
                raise db.classify(exc, run.scrub, where="reading the scratch database's catalogs") from None
    checks = planner.plan(details)
    if not checks:
        report.skipped = "no change needs one"
    return checks


def run_checks(run: Run[RehearseOptions], rehearsal: Rehearsal, checks: list[Check]) -> None:
    """Run the planned checks on the real app database; a connection failure makes them unknown."""
    report = rehearsal.data_checks
    if report is None or not checks:
        return
    start = time.monotonic()
    try:
        conn = db.connect(
            run.target.app,
            run.scrub,
            app_name=db.application_name("rehearse data checks"),
            where="connecting to the app database for the data checks",
            read_only=True,
        )
    except DatabaseError as exc:
        rehearsal.findings = [datachecks.unknown_finding(c, exc.message, None) for c in checks]
    else:
        with db.closing(conn):
            try:  # never as the deploy role: as a role that can only read (docs/rehearsal.md)
                role, why = datachecks.reader_role(conn)
            except psycopg.Error as exc:
                role, why = None, readonly.reason(exc, run.scrub, report.settings.timeout_s)
            report.settings = replace(report.settings, role=role, no_role=why)
            rehearsal.findings = datachecks.run_checks(conn, checks, report.settings, run.scrub)
    for finding in rehearsal.findings:  # names and messages read from the database
        finding.detail = run.scrub.text(finding.detail)
    report.checks = len(checks)
    report.elapsed_ms = int((time.monotonic() - start) * 1000)


def read_workflows(run: Run[RehearseOptions], rehearsal: Rehearsal) -> None:
    """The unfinished workflows of the app's system database, or `unknown` and why."""
    system = run.target.system
    schema = run.config.system_schema or "dbos"
    environ = run.ctx.environ
    timeout = run.options.data_check_timeout
    if system.endpoint is None:
        rehearsal.workflows = workflows.unknown(
            f"the system database {run.scrub.text(system.url_text(mask=True))} is not PostgreSQL (SQLite?): "
            "it cannot be read from here",
            None,
            schema,
            environ,
        )
        return
    shown = system.endpoint.masked()
    try:
        conn = db.connect(
            system.endpoint,
            run.scrub,
            app_name=db.application_name("rehearse workflows"),
            where="connecting to the system database",
            read_only=True,
        )
    except db.DatabaseMissing:
        rehearsal.workflows = workflows.unknown(
            f"the system database {system.name} does not exist", shown, schema, environ
        )
        return
    except DatabaseError as exc:
        rehearsal.workflows = workflows.unknown(exc.message, shown, schema, environ)
        return
    report = workflows.unknown("", shown, schema, environ)
    with db.closing(conn):
        workflows.inspect(conn, report, timeout, run.scrub)
    rehearsal.workflows = report
