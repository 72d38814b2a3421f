"""How a typed result looks as JSON: the records inside the documents of report/json.py.

The records (model.py, errors.py, rehearse/) are plain dataclasses that know nothing of
JSON. A record becomes an object with one key per field, in the order of its fields, each
value rendered the same way (a datetime as ISO 8601, a tuple as a list). Where the published
contract (schemas/output.schema.json, docs/behaviour.md "Output") says otherwise, the
record's Shape below lists its keys in their order: each is the attribute (or property) of
that name unless the shape says how to compute it (a renamed key, a rounded value, a nested
object, a figure derived from other fields); a field the shape does not list is left out
(what the contract does not show, such as a problem's `whole_file` or the schema and table
of a loss). The shapes are keyed by the class's module and name, so rendering imports
no room: a rehearsal's records are loaded only when a rehearsal ran.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields, is_dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dbos_migrate.model import CommandResult, LastRun
    from dbos_migrate.rehearse.result import Rehearsal
    from dbos_migrate.rehearse.rollback import RollbackCheck
    from dbos_migrate.rehearse.rules import Ruled
    from dbos_migrate.rehearse.workflows import VersionCount, WorkflowReport


class Shape:
    """The keys of a record's JSON object, in order (`keys`, separated by spaces): each is the
    attribute (or property) of that name unless `computed` says how to compute it."""

    def __init__(self, keys: str, **computed: Callable[[Any], object]) -> None:
        self.keys = keys.split()
        self.computed = computed
        unknown = computed.keys() - set(self.keys)
        if unknown:
            raise ValueError(f"computed keys not in the shape: {sorted(unknown)}")

    def render(self, record: object) -> dict[str, Any]:
        how = self.computed
        return {key: to_json(how[key](record) if key in how else getattr(record, key)) for key in self.keys}


def to_json(value: object) -> Any:
    """`value` as JSON values: records by their shape (or their fields), lists, dicts and
    scalars as they are. Anything else is left for json.dumps (report/json.py's `default=str`)."""
    if value is None or isinstance(value, (str, int, float)):
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, (list, tuple)):
        return [to_json(item) for item in value]
    if isinstance(value, dict):
        return {key: to_json(item) for key, item in value.items()}
    if is_dataclass(value) and not isinstance(value, type):
        shape = SHAPES.get(f"{type(value).__module__}.{type(value).__qualname__}")
        if shape is None:
            return {f.name: to_json(getattr(value, f.name)) for f in fields(value) if not f.name.startswith("_")}
        return shape.render(value)
    return value


# ---------------------------------------------------------------------------- what differs from the fields


def _rounded(c: CommandResult) -> float:
    return round(c.duration_s, 3)


def _failed_command(r: LastRun) -> dict[str, object] | None:
    if r.failed_command is None:
        return None
    return {"index": r.failed_index, "command": r.failed_command, "exit_code": r.exit_code}


def _failed_rollback(r: RollbackCheck) -> dict[str, object] | None:
    if r.failed_command is None:
        return None
    return {"command": r.failed_command, "exit_code": r.exit_code, "end": r.failure}


def _names(v: VersionCount) -> list[dict[str, object]]:
    return [{"name": name, "count": count} for name, count in v.names]


def _statuses_counted(_: WorkflowReport) -> list[str]:
    from dbos_migrate.rehearse.workflows import UNFINISHED

    return list(UNFINISHED)


def _data_checks(r: Rehearsal) -> dict[str, object] | None:
    """`rehearsal.data_checks`: how the checks ran, with the findings' count by severity (the
    findings themselves are rendered with their changes: report/rehearsal.py)."""
    checks = r.data_checks
    if checks is None:
        return None
    from dbos_migrate.rehearse.datachecks import summary

    return {
        "enabled": checks.enabled,
        "skipped": checks.skipped,
        "database": checks.database,
        "timeout_s": checks.settings.timeout_s,
        "sample_bytes": checks.settings.sample_bytes,
        "large_table_bytes": checks.settings.large_bytes,
        "role": checks.settings.role,
        "checks": checks.checks,
        "elapsed_ms": checks.elapsed_ms,
        "summary": summary(r.findings),
    }


def _rule_name(r: Ruled) -> str:
    return r.spec.name


def _rule_hint(r: Ruled) -> str:
    return r.spec.hint


SHAPES: dict[str, Shape] = {
    # whole_file only changes where the text output places the problem
    "dbos_migrate.errors.Problem": Shape("file line column path message hint"),
    "dbos_migrate.model.CommandResult": Shape(
        "index command exit_code signal status duration_s started_at finished_at ended_descendants",
        duration_s=_rounded,
        ended_descendants=lambda c: c.ended,
    ),
    "dbos_migrate.model.HistoryRow": Shape(
        "run_id direction command_index command started_at finished_at exit_code status tool_version host "
        "os_user instance note"
    ),
    "dbos_migrate.model.Resolution": Shape(
        "config app_name app_database app_database_source target target_source connection production "
        "production_reason system_database_url system_database_source warnings",
        config=lambda r: r.config_path,
        connection=lambda r: r.connection_detail,
        system_database_url=lambda r: r.system_database,
    ),
    "dbos_migrate.model.LastRun": Shape(
        "run_id direction outcome at failed_command next_command next_reason", failed_command=_failed_command
    ),
    # a rehearsal's records (docs/rehearsal.md); its changes go in the document's changes[]
    "dbos_migrate.rehearse.result.Rehearsal": Shape(
        "scratch_database instance copy_method version_tables copy_warnings leftovers_removed warnings commands "
        "summary created dropped data_checks workflows verdict rollback destroys credentials",
        summary=lambda r: r.counts(),
        data_checks=_data_checks,
    ),
    "dbos_migrate.rehearse.rules.Change": Shape(
        "rule name severity object table detail hint", name=_rule_name, hint=_rule_hint
    ),
    "dbos_migrate.rehearse.datachecks.Finding": Shape(
        "rule name severity check status object table detail hint examined_rows estimated_rows violating_rows "
        "sampled sample_percent table_bytes estimated_seconds elapsed_ms reason",
        name=_rule_name,
        hint=_rule_hint,
    ),
    "dbos_migrate.rehearse.workflows.WorkflowReport": Shape(
        "status reason database schema generation schema_version statuses_counted this_version unfinished "
        "unfinished_other_versions versions missing_columns",
        statuses_counted=_statuses_counted,
        unfinished_other_versions=lambda w: sum(v.count for v in w.others()),
    ),
    "dbos_migrate.rehearse.workflows.VersionCount": Shape("version count statuses oldest_age_s names", names=_names),
    "dbos_migrate.rehearse.rollback.RollbackCheck": Shape(
        "ran restores differences failed commands elapsed_ms", failed=_failed_rollback
    ),
    # the rows and why they could not be counted; schema, table and column only locate them
    "dbos_migrate.rehearse.rollback.Loss": Shape("object kind rows unknown"),
}
