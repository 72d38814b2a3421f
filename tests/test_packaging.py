"""The installed package carries its schemas (force-included into the wheel)."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import pytest

import dbos_migrate

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(
    Path(dbos_migrate.__file__).resolve().parent == REPO / "dbos_migrate",
    reason="an editable install reads the schemas from the source tree",
)
def test_wheel_contains_the_schemas() -> None:
    pkg = resources.files("dbos_migrate") / "schemas"
    for name in ("dbos-config.schema.json", "output.schema.json"):
        shipped = json.loads((pkg / name).read_text("utf-8"))
        assert shipped == json.loads((REPO / "schemas" / name).read_text("utf-8"))


def test_schema_is_loaded_and_is_the_source() -> None:
    from dbos_migrate.settings.config import schema

    assert schema() == json.loads((REPO / "schemas" / "dbos-config.schema.json").read_text("utf-8"))
