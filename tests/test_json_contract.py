"""The JSON contract (docs/behaviour.md, "Output"; schemas/output.schema.json), in-process.

Every result type is built here with every optional field set, rendered by report/ and
validated against the shipped schema with every object closed (`unevaluatedProperties:
false` added here, not in the shipped file, which stays open to added keys): a renamed, stray
or missing key fails, not only a wrong type. A walk over the result types' fields finds every
record type, so a new record without a sample here fails too."""

from __future__ import annotations

import copy
import json
import typing
from dataclasses import fields, is_dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from dbos_migrate.errors import CommandFailed, ConfigError, Problem, UsageError
from dbos_migrate.model import (
    AppSchemaSkipped,
    CommandResult,
    CommandStep,
    ConnectionDetail,
    DatabaseStep,
    DroppedDatabase,
    DropReport,
    GrantStep,
    HistoryReport,
    HistoryRow,
    InitReport,
    LastRun,
    LockHolder,
    PlannedStep,
    Resolution,
    RunReport,
    SchemaStep,
    StatusReport,
    SystemDatabase,
    ToolchainStep,
    Validation,
)
from dbos_migrate.rehearse import result as rehearse_result
from dbos_migrate.rehearse.datachecks import DataChecks, Finding, Settings
from dbos_migrate.rehearse.result import Credentials, Rehearsal, Verdict
from dbos_migrate.rehearse.rollback import Difference, Loss, RollbackCheck
from dbos_migrate.rehearse.rules import Change
from dbos_migrate.rehearse.workflows import VersionCount, WorkflowReport
from dbos_migrate.report import json as report_json

SCHEMA = json.loads((Path(__file__).resolve().parent.parent / "schemas" / "output.schema.json").read_text())
T0 = datetime(2026, 12, 6, 5, 0, 0, tzinfo=timezone.utc)
T1 = T0 + timedelta(seconds=1.5)
MASKED = "postgresql://deploy:***@db.example.com:5432/postgres"


def closed(schema: dict[str, Any]) -> dict[str, Any]:
    """The schema with every object that declares properties closed to undeclared keys. Left
    open: what others extend through `allOf` (the extension closes it) and `usage` (an option
    error of a command also carries that command's keys). A step of `steps[]` is closed twice:
    by its kind (each `anyOf` part) and by the keys of the kinds it matches."""
    out = copy.deepcopy(schema)
    extended = {
        ref.rpartition("/")[2] for node in _nodes(out) for part in node.get("allOf", []) if (ref := part.get("$ref"))
    }

    def close(node: Any, path: tuple[str, ...]) -> None:
        if isinstance(node, list):
            for item in node:
                close(item, (*path, "[]"))
        if not isinstance(node, dict):
            return
        for key, value in node.items():
            close(value, (*path, key))
        extension = (path[-2:-1] == ("$defs",) and path[-1] in (*extended, "usage")) or path[-2:-1] == ("allOf",)
        if "properties" in node and "additionalProperties" not in node and not extension:
            node["unevaluatedProperties"] = False

    close(out, ())
    return out


def _nodes(node: Any) -> list[dict[str, Any]]:
    if isinstance(node, list):
        return [n for item in node for n in _nodes(item)]
    if isinstance(node, dict):
        return [node, *(n for value in node.values() for n in _nodes(value))]
    return []


STRICT = closed(SCHEMA)


def errors_of(doc: Any, kind: str) -> list[str]:
    """Problems of `doc` as a `kind` document of the closed schema, and as any document."""
    found = []
    for schema in ({"$ref": f"#/$defs/{kind}", "$defs": STRICT["$defs"]}, STRICT):
        found += [f"{list(e.absolute_path)}: {e.message}" for e in Draft202012Validator(schema).iter_errors(doc)]
    return sorted(found)


# ---------------------------------------------------------------------------- samples, every field set


def problem(path: str = "database.migrate") -> Problem:
    return Problem("dbos-config.yaml", 4, 3, path, "must be a list of commands", "write `- alembic upgrade head`")


def command(index: int = 1) -> CommandResult:
    if index % 2:
        return CommandResult(
            index, "alembic upgrade head", "interrupted", None, 15, 1.23456, T0, T1, ("sleep 600 (pid 4242)",)
        )
    return CommandResult(index, "python seed.py", "failed", 1, None, 0.5, T0, T1)


def resolution() -> Resolution:
    return Resolution(
        config_path="dbos-config.yaml",
        app_name="shop",
        app_database="shop",
        app_database_source="the config's name",
        target=MASKED,
        target_source="-D",
        production=True,
        production_reason="the host is not local",
        connection_detail=ConnectionDetail(
            ["db.example.com"],
            ["192.0.2.7"],
            "5432",
            "deploy",
            "require",
            {"host": "the URL", "port": "PGPORT"},
            "PGPASSWORD",
        ),
        system_database="postgresql://deploy:***@db.example.com:5432/shop_dbos_sys",
        system_database_source="derived from the app database",
        warnings=[problem("database.app_db_client")],
    )


def system_database() -> SystemDatabase:
    return SystemDatabase(
        "postgresql://deploy:***@db.example.com:5432/shop_dbos_sys",
        "postgresql",
        "derived",
        True,
        True,
        "23",
        "dbos 2.4.0",
        "migrated",
    )


def config_error() -> ConfigError:
    error = ConfigError([problem()], [problem("name")])
    error.hint = "see docs/configuration.md"
    return error


def rehearsal() -> Rehearsal:
    change = Change("BRK002", "public.orders.customer_id", "column dropped", "table public.orders", "public.orders")
    finding = Finding(
        0,
        "DATA002",
        "rows",
        "public.orders.customer_id",
        "public.orders",
        "violations",
        "3 rows hold a value",
        examined_rows=1000,
        estimated_rows=5000,
        violating_rows=3,
        sampled=True,
        sample_percent=20.0,
        table_bytes=8192,
        estimated_seconds=0.5,
        elapsed_ms=12,
        reason="sampled: the table is large",
    )
    versions = [VersionCount("v1", 2, {"PENDING": 2}, 3600.5, [("update_orders", 2)])]
    workflows = WorkflowReport(
        "found",
        "two unfinished",
        "shop_dbos_sys",
        "dbos",
        "dbos 2",
        23,
        "v2",
        versions,
        {("v1", "update_orders"): ["insert_orders"]},
        ["application_version"],
    )
    rollback = RollbackCheck(
        True,
        False,
        [Difference("public.orders.customer_id", "column", "missing", "not restored")],
        [command()],
        "alembic downgrade -1",
        1,
        "exit code 1",
        40,
    )
    loss = Loss("public.orders.note", "column", "public", "orders", "note", 12, "permission denied")
    return Rehearsal(
        "dbos_migrate_rehearse_shop_1",
        MASKED,
        "pg_dump",
        ["alembic_version"],
        ["a copy warning"],
        ["old_scratch"],
        ["a warning"],
        [command()],
        [change],
        True,
        True,
        [finding],
        DataChecks(True, "not skipped", "shop", Settings(5.0, 65536, 131072, "dbos_migrate_read", "no role"), 4, 30),
        workflows,
        Verdict(True, "refused: 1 breaking change", True, ["data", "strict"]),
        rollback,
        [loss],
        Credentials("temporary-role", "dbos_migrate_rehearse_shop_1", ["no superuser"]),
    )


def steps() -> list[PlannedStep]:
    """Every kind of --print-migrations step, and those whose toolchain or SQL may be null."""
    return [
        DatabaseStep("app_database", "shop", "create if missing"),
        DatabaseStep("system_database", "sqlite:///shop.db", "not PostgreSQL: left to the app"),
        ToolchainStep(
            "dbos 3.4.0 (Python)",
            "dbos migrate -s postgresql://deploy@db.example.com/shop_dbos_sys",
            "CREATE TABLE ...;\n",
        ),
        ToolchainStep("@dbos-inc/dbos-sdk 2.1.0 (TypeScript)", "node tsprovision.js", None),
        SchemaStep("system_schema", None, "none found (no `dbos` on the commands' PATH): the app creates the schema"),
        SchemaStep(
            "app_schema", "dbos 2.4.0 (Python)", "dbos.transaction_outputs, by the system schema's command above (-D)"
        ),
        AppSchemaSkipped("left to the app (--datasource skip)"),
        CommandStep(1, "alembic upgrade head"),
        GrantStep("app_rt", ("shop", "shop_dbos_sys"), "see --print-user-role -r app_rt"),
    ]


def run_report(verb: str = "plan") -> RunReport:
    error = CommandFailed("alembic upgrade head exited 1", "fix the migration") if verb != "up" else config_error()
    return RunReport(
        verb,
        resolution(),
        exists=True,
        created=True,
        dry_run=True,
        run_id="0f8e-run",
        commands=[command(1), command(2)],
        planned=["alembic upgrade head"],
        history_written=True,
        system_database=system_database(),
        rehearsal=rehearsal(),
        error=error,
        steps=steps(),
        user_role_sql="GRANT ...;",
        schema_unchanged=True,
    )


def history_row(note: str | None = "recorded late") -> HistoryRow:
    return HistoryRow(
        "0f8e-run", "up", 0, "alembic upgrade head", T0, T1, 1, "failed", MASKED, note, "0.3.0", "ci-7", "deploy"
    )


def status_report(verb: str = "status") -> StatusReport:
    return StatusReport(
        resolution(),
        True,
        "not reachable before",
        "15.4",
        1.25,
        True,
        True,
        LockHolder(4242, "dbos-migrate up", "192.0.2.9", T0, "deploy"),
        [history_row()],
        LastRun("0f8e-run", "up", "failed", T0, 0, "alembic upgrade head", 1, "dbos-migrate up -D ...", "it failed"),
        system_database(),
        config_error(),
        verb,
    )


def validation() -> Validation:
    parts = [Validation("a.yaml", [problem()], [problem("name")]), Validation("b.yaml", [], [problem("name")])]
    return Validation("a.yaml", [problem()], [problem("name"), problem("name")], config_error(), parts=parts)


def drop_report() -> DropReport:
    return DropReport(
        "drop",
        resolution(),
        error=config_error(),
        databases=[DroppedDatabase("shop", "app", True, True), DroppedDatabase("shop_dbos_sys", "system", None, False)],
        forced=True,
    )


def init_report() -> InitReport:
    return InitReport("dbos-config.yaml", "alembic", True, ["migrate"], "+migrate: ...", True, config_error())


def local_server() -> SimpleNamespace:
    return SimpleNamespace(
        port=5433,
        running=True,
        changed=True,
        backend="installed",
        version="16.2",
        masked_url="postgresql://postgres:***@localhost:5433",
        datadir=Path("/home/u/.dbos-migrate/pg"),
        log_file=Path("/home/u/.dbos-migrate/pg.log"),
        container="dbos-migrate-pg",
        moved_from=5432,
        foreign=False,
    )


def results() -> list[tuple[str, Any]]:
    """Every typed result a verb returns, as (schema kind, result)."""
    out: list[tuple[str, Any]] = [("run", run_report(verb)) for verb in ("up", "down", "plan")]
    out += [("status", status_report("status")), ("status", status_report("wait"))]
    out += [
        ("history", HistoryReport(resolution(), [history_row(), history_row(None)], "0f8e-run", True, config_error()))
    ]
    out += [("validate", validation()), ("validate", Validation("dbos-config.yaml", [problem()]))]
    out += [("drop", drop_report()), ("init", init_report())]
    # and the optional parts left empty
    bare = Rehearsal("dbos_migrate_rehearse_shop_2", MASKED, rollback=RollbackCheck(), workflows=WorkflowReport("none"))
    out += [
        ("run", RunReport("plan", rehearsal=bare)),
        ("status", StatusReport(last_run=LastRun("0f8e-run", "down", "succeeded", None))),
    ]
    return out


def documents() -> list[tuple[str, Any]]:
    """Every JSON document the program prints, as (schema kind, document)."""
    out = [(kind, report_json.document(result)) for kind, result in results()]
    usage = UsageError("Invalid value for '--wait': 'abc' is not a number", "see dbos-migrate up --help")
    for verb, kind in (
        ("up", "run"),
        ("migrate", "run"),
        ("rollback", "run"),
        ("plan", "run"),
        (None, "usage"),
        ("status", "status"),
        ("wait", "status"),
        ("history", "history"),
        ("validate", "validate"),
        ("drop", "drop"),
        ("init", "init"),
    ):
        out.append((kind, report_json.document(report_json.usage_result(verb, usage))))
    out.append(("url", report_json.url_document(MASKED, None)))
    out.append(("url", report_json.url_document(None, usage)))
    for action in ("start", "stop", "status"):
        out.append(("local_server", report_json.local_server_document(action, local_server(), None)))
    out.append(("local_server", report_json.local_server_document("start", None, config_error())))
    return out


# ---------------------------------------------------------------------------- the tests


@pytest.mark.parametrize(("kind", "doc"), documents(), ids=lambda v: v if isinstance(v, str) else "")
def test_every_document_matches_the_closed_schema(kind: str, doc: dict[str, Any]) -> None:
    text = json.dumps(doc, indent=2, default=str)
    assert errors_of(json.loads(text), kind) == []


def test_the_closed_schema_refuses_a_renamed_key() -> None:
    """The check itself: a key renamed at any depth is an error, not an extra key let through."""
    doc = json.loads(json.dumps(report_json.document(run_report()), default=str))
    doc["rehearsal"]["rollback"]["commands"][0]["ended"] = doc["rehearsal"]["rollback"]["commands"][0].pop(
        "ended_descendants"
    )
    assert any("'ended' was unexpected" in e for e in errors_of(doc, "run"))
    doc = json.loads(json.dumps(report_json.document(run_report()), default=str))
    doc["config_path"] = doc.pop("config")
    assert errors_of(doc, "run")
    for i, step in enumerate(json.loads(json.dumps(report_json.document(run_report()), default=str))["steps"]):
        doc = json.loads(json.dumps(report_json.document(run_report()), default=str))
        key = list(step)[-1]
        doc["steps"][i][f"{key}_renamed"] = doc["steps"][i].pop(key)
        assert errors_of(doc, "run"), f"steps[{i}].{key} renamed"


def _declared(node: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """The key paths the schema declares below `node` (`[]` for an array's items)."""
    if not isinstance(node, dict):
        return set()
    if "$ref" in node:
        node = {**SCHEMA["$defs"][node["$ref"].rpartition("/")[2]], **{k: v for k, v in node.items() if k != "$ref"}}
    out: set[tuple[str, ...]] = set()
    for key in ("allOf", "oneOf", "anyOf"):
        for part in node.get(key, []):
            out |= _declared(part, path)
    for name, sub in node.get("properties", {}).items():
        out |= {(*path, name)} | _declared(sub, (*path, name))
    if "items" in node:
        out |= _declared(node["items"], (*path, "[]"))
    return out


def _present(doc: Any, path: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    if isinstance(doc, dict):
        return {p for key, value in doc.items() for p in {(*path, key)} | _present(value, (*path, key))}
    if isinstance(doc, list):
        return {p for item in doc for p in _present(item, (*path, "[]"))}
    return set()


#: Declared keys a kind of document never shows, by the start of their path: a change's own
#: view of the workflows counts them without their names and statuses (those are in
#: rehearsal.workflows), and a usage error is never a config error with problems.
ABSENT = {
    "run": ("changes.[].workflows.versions.[].names", "changes.[].workflows.versions.[].statuses"),
    "usage": ("error.problems",),
    "url": ("error.problems",),
}


def test_the_samples_render_every_key_the_schema_declares() -> None:
    """The other half of a closed schema: a key dropped from the output (a Shape that forgets
    one) fails here, since the samples set every field."""
    present: dict[str, set[tuple[str, ...]]] = {}
    for kind, doc in documents():
        present.setdefault(kind, set()).update(_present(json.loads(json.dumps(doc, default=str))))
    missing = {
        kind: [
            path
            for p in sorted(_declared(SCHEMA["$defs"][kind]) - keys)
            if not (path := ".".join(p)).startswith(ABSENT.get(kind, ("-",)))
        ]
        for kind, keys in present.items()
    }
    assert not {kind: paths for kind, paths in missing.items() if paths}


def _records(value: Any, seen: dict[type, list[Any]]) -> None:
    if is_dataclass(value) and not isinstance(value, type):
        seen.setdefault(type(value), []).append(value)
        for f in fields(value):
            _records(getattr(value, f.name), seen)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _records(item, seen)
    elif isinstance(value, dict):
        for item in value.values():
            _records(item, seen)


def _record_types(root: type, found: set[type]) -> None:
    """Every dataclass a result type holds, through its fields' annotations."""
    if root in found or not is_dataclass(root):
        return
    found.add(root)
    names = {**vars(rehearse_result), "Loss": Loss, "RollbackCheck": RollbackCheck}  # its type-only imports
    for hint in typing.get_type_hints(root, localns=names).values():
        for arg in [hint, *_args(hint)]:
            if isinstance(arg, type):
                _record_types(arg, found)


def _args(hint: Any) -> list[Any]:
    return [a for arg in typing.get_args(hint) for a in [arg, *_args(arg)]]


#: Fields a document does not render, so a sample need not set them: drop's report is a
#: RunReport, but its document shows only where, the databases, `forced` and the error.
NOT_RENDERED = {
    DropReport: {
        "exists",
        "created",
        "dry_run",
        "run_id",
        "commands",
        "planned",
        "history_written",
        "system_database",
        "rehearsal",
        "steps",
        "user_role_sql",
        "schema_unchanged",
    }
}


def test_the_samples_set_every_field_of_every_record_type() -> None:
    """A field left at None or empty in every sample is a part of the contract this file
    never renders: each record type reachable from a verb's result needs a sample with it set."""
    types: set[type] = set()
    for root in (RunReport, DropReport, StatusReport, HistoryReport, Validation, InitReport, Rehearsal):
        _record_types(root, types)
    seen: dict[type, list[Any]] = {}
    for _, result in results():
        _records(result, seen)
    missing = sorted(t.__name__ for t in types if t not in seen)
    assert not missing, f"record types without a sample: {missing}"
    unset = []
    for kind, instances in seen.items():
        for f in fields(kind):
            if f.name.startswith("_") or f.name in NOT_RENDERED.get(kind, set()):
                continue
            if all(getattr(i, f.name) in (None, [], (), {}, "") for i in instances):
                unset.append(f"{kind.__name__}.{f.name}")
    assert not unset, f"fields no sample sets: {unset}"
