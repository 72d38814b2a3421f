"""Config and message fidelity to each DBOS generation (docs/dbos-compatibility.md, "Config
rules per generation"): app name rules, legacy-field advice, what a dry run says, and a
first run whose commands changed nothing."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from helpers import write_config
from inmemory import InMemoryContext

from dbos_migrate import verbs
from dbos_migrate.events import Event, Notice


def context() -> InMemoryContext:
    return InMemoryContext({"PATH": os.environ["PATH"]})


def messages(result: verbs.Validation) -> tuple[list[str], list[str]]:
    return [p.message for p in result.errors], [p.message for p in result.warnings]


@pytest.mark.parametrize(
    ("name", "pin", "ok", "said"),
    [
        ("rh", None, False, "3 to 256 characters"),  # DBOS 3.4 refuses it at launch
        ("rh", "dbos==2.31.1", False, "3 to 30 characters"),
        ("Shop", None, False, "only lowercase letters, digits, - and _"),
        ("a" * 40, "dbos>=3.4", True, None),
        ("a" * 40, "dbos==2.31.1", False, "3 to 30 characters"),
        ("a" * 40, None, True, "0.x-2.x refuse names over 30"),  # a warning: the line is unknown
        ("a" * 257, None, False, "3 to 256 characters"),
        ("shop-app_1", None, True, None),
    ],
)
def test_validate_applies_the_app_name_rules_of_the_python_generation(
    tmp_path: Path, name: str, pin: str | None, ok: bool, said: str | None
) -> None:
    cfg = write_config(tmp_path, name=name, app_db_name="shop", migrate=["true"], extra="language: python\n")
    if pin:
        (tmp_path / "requirements.txt").write_text(f"psycopg\n{pin}\n")
    result = verbs.validate(str(cfg), cloud=False, environ={})
    errors, warnings = messages(result)
    assert result.ok is ok, errors
    if said:
        assert any(said in m for m in errors + warnings), (errors, warnings)
    else:
        assert not any("app name" in m for m in errors + warnings)


def test_without_language_or_pin_the_python_name_rule_only_warns(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, name="rh", app_db_name="shop", migrate=["true"])
    result = verbs.validate(str(cfg), cloud=False, environ={})
    assert result.ok and any("set `language: python`" in w.message for w in result.warnings)


def test_a_typescript_app_name_has_no_python_rule(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, name="rh", app_db_name="shop", migrate=["true"], extra="language: typescript\n")
    assert verbs.validate(str(cfg), cloud=False, environ={}).ok


LEGACY = "language: typescript\ndatabase:\n  hostname: localhost\n  port: 5432\n  sys_db_name: shop_sys\n"


def _ts_app(directory: Path, sdk: str | None) -> Path:
    directory.mkdir(parents=True)
    if sdk is not None:
        pkg = directory / "node_modules" / "@dbos-inc" / "dbos-sdk"
        pkg.mkdir(parents=True)
        (pkg / "package.json").write_text(json.dumps({"name": "@dbos-inc/dbos-sdk", "version": sdk}))
    (directory / "dbos-config.yaml").write_text("name: shop\n" + LEGACY)
    return directory / "dbos-config.yaml"


@pytest.mark.parametrize(
    ("sdk", "expected"),
    [
        ("1.30.13", []),  # the legacy fields are 1.x's only way: nothing to advise
        ("2.10.24", ["database.hostname", "database.port"]),  # database_url from 2.x, system_database_url from 3.x
        ("4.27.6", ["database.hostname", "database.port", "database.sys_db_name"]),
    ],
)
def test_legacy_field_advice_follows_the_typescript_sdk(tmp_path: Path, sdk: str, expected: list[str]) -> None:
    result = verbs.validate(str(_ts_app(tmp_path / "app", sdk)), cloud=False, environ={})
    assert result.ok
    assert [w.path for w in result.warnings if "deprecated" in w.message] == expected


def test_legacy_field_advice_names_the_generations_when_the_sdk_is_unknown(tmp_path: Path) -> None:
    result = verbs.validate(str(_ts_app(tmp_path / "app", None)), cloud=False, environ={})
    by_path = {w.path: w.message for w in result.warnings}
    assert "from @dbos-inc/dbos-sdk 2.x on; 1.x has no database_url" in by_path["database.hostname"]
    assert "from @dbos-inc/dbos-sdk 3.x on; 1.x-2.x has no system_database_url" in by_path["database.sys_db_name"]


def test_generation_is_read_from_the_app_without_running_anything(tmp_path: Path) -> None:
    from dbos_migrate.settings.generations import Generation, detect

    (tmp_path / "package.json").write_text(json.dumps({"dependencies": {"@dbos-inc/dbos-sdk": "^1.30.0"}}))
    assert detect(tmp_path, None) == Generation("typescript", 1, "package.json dependencies")
    py = tmp_path / "py"
    py.mkdir()
    (py / "pyproject.toml").write_text('[project]\ndependencies = ["dbos>=3.4.0", "psycopg"]\n')
    assert detect(py, "python").major == 3


def test_up_warns_once_per_warning_in_a_run(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"], extra="language: python\nversion: '1.0'\n")
    events: list[Event] = []
    report = verbs.up(context(), verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip"), events.append)
    assert report.ok, report.error
    texts = [e.text for e in events if isinstance(e, Notice) and e.level == "warning"]
    assert len(texts) == len(set(texts)) and any("version" in t for t in texts)


def test_a_dry_run_behind_the_gate_says_what_it_would_do(tmp_path: Path, pg_url: str, app_db: str) -> None:
    from dbos_migrate.verbs.rehearsal import gated_up

    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    assert verbs.up(context(), verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip"), lambda e: None).ok
    events: list[Event] = []
    options = verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip", dry_run=True)
    report = gated_up(context(), options, events.append)
    assert report.ok, report.error
    texts = [e.text for e in events if isinstance(e, Notice)]
    assert not any("running the migrations" in t for t in texts)
    assert any("would run the migrations" in t for t in texts)


@pytest.mark.parametrize("commands", [["echo 'auth failed' >&2; exit 0"], ["true", "echo done"]])
def test_a_first_run_that_changed_nothing_is_warned_about(
    tmp_path: Path, pg_url: str, app_db: str, commands: list[str]
) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=commands)
    events: list[Event] = []
    report = verbs.up(context(), verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip"), events.append)
    assert report.ok and report.schema_unchanged
    assert any(isinstance(e, Notice) and e.level == "warning" and "changed nothing" in e.text for e in events)
    # Once there is history, an up with nothing new to do is normal: no warning.
    again: list[Event] = []
    assert not verbs.up(
        context(), verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip"), again.append
    ).schema_unchanged
    assert not any(isinstance(e, Notice) and "changed nothing" in e.text for e in again)


def test_a_first_run_that_creates_a_table_is_not_warned_about(tmp_path: Path, pg_url: str, app_db: str) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["psql -v ON_ERROR_STOP=1 -qc 'CREATE TABLE t(id int)'"])
    events: list[Event] = []
    report = verbs.up(context(), verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip"), events.append)
    assert report.ok and not report.schema_unchanged, report.error
    assert not any(isinstance(e, Notice) and "changed nothing" in e.text for e in events)


def test_datasource_auto_prepares_only_an_app_that_has_a_datasource(tmp_path: Path) -> None:
    """`--datasource auto` looks for SQLAlchemyDatasource in the app's own code, not in its
    virtual environment, its dependencies or a symlink (docs/dbos-compatibility.md)."""
    from dbos_migrate.engine.appdb import uses_datasource

    root = tmp_path / "app-root"
    (root / "app").mkdir(parents=True)
    (root / "app" / "main.py").write_text("from dbos import DBOS\n")
    for hidden in (".venv/lib/site-packages/dbos", "node_modules/x"):
        (root / hidden).mkdir(parents=True)
        (root / hidden / "ds.py").write_text("class SQLAlchemyDatasource: ...\n")
    outside = tmp_path / "outside.py"
    outside.write_text("from dbos import SQLAlchemyDatasource\n")
    (root / "app" / "linked.py").symlink_to(outside)
    assert not uses_datasource(root)
    (root / "app" / "zz_db.py").write_text(
        "from dbos import SQLAlchemyDatasource\nds = SQLAlchemyDatasource.create(url)\n"
    )
    assert uses_datasource(root)
    assert not uses_datasource(root, max_files=2)  # bounded: files are read in name order
