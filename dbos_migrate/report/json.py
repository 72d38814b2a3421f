"""One JSON document per command (schemas/output.schema.json), whatever the outcome.

The documents are written here; the records inside them take their shape from
report/jsonshape.py."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from dbos_migrate.context import TextWriter
from dbos_migrate.errors import MigrateError
from dbos_migrate.events import ConfigDiff, DropWarning, Event, Finished, GuardWarning, Result
from dbos_migrate.model import DropReport, HistoryReport, InitReport, RunReport, StatusReport, Validation
from dbos_migrate.report.jsonshape import to_json


def error_json(error: MigrateError | None) -> dict[str, Any] | None:
    if error is None:
        return None
    out: dict[str, Any] = {
        "code": error.code,
        "exit_code": error.exit_code,
        "message": error.message,
        "hint": error.hint,
    }
    problems = getattr(error, "problems", None)
    if problems:
        out["problems"] = to_json(problems)
    return out


def document(result: Result) -> dict[str, Any]:
    """The JSON document for any verb's result."""
    if isinstance(result, Validation):
        return {
            "ok": result.ok,
            "command": "validate",
            "valid": result.ok,
            "config": None if result.parts and len(result.parts) > 1 else result.config_path,
            "configs": [
                {
                    "path": part.config_path,
                    "ok": part.ok,
                    "errors": to_json(part.errors),
                    "warnings": to_json(part.warnings),
                }
                for part in (result.parts or [result])
            ],
            "errors": to_json(result.errors),
            "warnings": to_json(result.warnings),
            "error": error_json(result.error),
        }
    if isinstance(result, InitReport):
        return {
            "ok": result.ok,
            "command": "init",
            "config": result.config_path,
            "tool": result.tool,
            "existed": result.existed,
            "added": list(result.added),
            "diff": result.diff,
            "written": result.written,
            "error": error_json(result.error),
        }
    doc: dict[str, Any] = {"ok": result.ok, "command": result.verb, **to_json(result.where)}
    if isinstance(result, DropReport):
        doc.update(databases=to_json(result.databases), forced=result.forced)
    elif isinstance(result, RunReport):
        doc.update(
            exists=result.exists,
            created=result.created,
            dry_run=result.dry_run,
            run_id=result.run_id,
            commands=to_json(result.commands),
            planned_commands=list(result.planned),
            history_written=result.history_written,
            schema_unchanged=result.schema_unchanged,
        )
        if result.steps is not None:
            doc["steps"] = to_json(result.steps)
        if result.user_role_sql is not None:
            doc["user_role_sql"] = result.user_role_sql
        if result.rehearsal is not None:
            from dbos_migrate.report.rehearsal import change_json

            rehearsal = result.rehearsal
            doc["rehearsal"] = to_json(rehearsal)
            doc["changes"] = [change_json(rehearsal, i, c) for i, c in enumerate(rehearsal.changes)]
    elif isinstance(result, StatusReport):
        doc.update(
            exists=result.exists,
            reachable=result.reachable,
            unreachable_reason=result.unreachable_reason,
            server_version=result.server_version,
            latency_ms=result.latency_ms,
            standby=result.standby,
            lock_holder=to_json(result.lock_holder),
            recent_runs=to_json(result.recent_runs),
            last_run=to_json(result.last_run),
        )
    elif isinstance(result, HistoryReport):
        doc.update(exists=result.exists, run_id=result.run_id, runs=to_json(result.runs))
    system = getattr(result, "system_database", None)  # up, plan and status
    if system is not None:
        doc["system_database"] = to_json(system)
    doc["error"] = error_json(result.error)
    return doc


def usage_result(verb: str | None, error: MigrateError) -> Result:
    """The empty result of `verb` carrying a usage error: for a document when the arguments
    themselves could not be parsed."""
    result: Result
    if verb == "validate":
        result = Validation("dbos-config.yaml")
    elif verb in ("status", "wait"):
        result = StatusReport(verb=verb)
    elif verb == "history":
        result = HistoryReport()
    elif verb == "drop":
        result = DropReport("drop")
    elif verb == "init":
        result = InitReport("dbos-config.yaml")
    else:
        result = RunReport({"migrate": "up", "rollback": "down"}.get(verb or "", verb or "dbos-migrate"))
    result.error = error
    return result


def url_document(url: str | None, error: MigrateError | None) -> dict[str, Any]:
    """`url -o json`: the app database URL (masked unless --show-password)."""
    return {"ok": error is None, "command": "url", "url": url, "error": error_json(error)}


def _path(value: object) -> str | None:
    return None if value is None else str(value)


def local_server_document(action: str, server: Any, error: MigrateError | None) -> dict[str, Any]:
    """`postgres start|stop|status -o json`: what localpg found or did (a LocalServer, or
    None after an error). The URL is masked: the password is the public `dbos`, but a
    document is kept in logs."""
    doc: dict[str, Any] = {"ok": error is None, "command": f"postgres {action}"}
    if server is not None:
        doc.update(
            port=server.port,
            running=server.running,
            changed=server.changed,
            backend=server.backend,
            version=server.version,
            url=server.masked_url,
            data_dir=_path(server.datadir),
            log=_path(server.log_file),
            container=server.container,
            moved_from=server.moved_from,
            foreign=server.foreign,
        )
    doc["error"] = error_json(error)
    return doc


def print_json(doc: Mapping[str, Any], out: TextWriter) -> None:
    out.write(json.dumps(doc, indent=2, default=str) + "\n")
    out.flush()


class JsonReporter:
    """Prints exactly one JSON document when the verb finishes; the production warning, which
    a person must see before confirming, goes to `guard_err` as text."""

    def __init__(self, out: TextWriter, guard_err: TextWriter | None = None) -> None:
        self.out = out
        self.guard_err = guard_err

    def __call__(self, event: Event) -> None:
        if isinstance(event, Finished):
            print_json(document(event.result), self.out)
        elif isinstance(event, GuardWarning) and self.guard_err is not None:
            from dbos_migrate.report.style import Style
            from dbos_migrate.report.text import render_guard

            render_guard(event, self.guard_err, Style(False))
        elif isinstance(event, DropWarning) and self.guard_err is not None:
            from dbos_migrate.report.style import Style
            from dbos_migrate.report.text import render_drop_warning

            render_drop_warning(event, self.guard_err, Style(False))
        elif isinstance(event, ConfigDiff) and self.guard_err is not None:  # init asks about it
            from dbos_migrate.report.style import printable_text

            self.guard_err.write("".join(printable_text(line) + "\n" for line in event.diff.splitlines()))
            self.guard_err.flush()
