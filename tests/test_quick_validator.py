"""The jsonschema-free yes/no check (config._conforms) must agree with jsonschema itself."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from dbos_migrate.settings import config

SCHEMA = config.schema()
VALIDATOR = Draft202012Validator(SCHEMA)
CONFIGS = sorted((Path(__file__).parent / "configs").glob("*.yaml"))


def _keys(node: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for key, sub in node.get("properties", {}).items():
        out.append(key)
        if isinstance(sub, dict):
            out += _keys(sub)
    return out


KEYS = [*sorted(set(_keys(SCHEMA))), "extra", "databse", "x"]
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-5, max_value=70000),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.sampled_from(["", " ", "python", "node", "knex", "5432", "abc", "x" * 70, "0", "1.5"]),
    st.text(max_size=8),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(st.sampled_from(KEYS), inner, max_size=5)),
    max_leaves=25,
)
documents = st.dictionaries(st.sampled_from(KEYS), values, max_size=8)
# Mostly-valid documents with small defects, so both answers are exercised often.
near_valid = st.fixed_dictionaries(
    {},
    optional={
        "name": st.text(max_size=4),
        "language": st.sampled_from(["python", "node", "typescript", "ruby", ""]),
        "database_url": st.text(max_size=4),
        "database": st.fixed_dictionaries(
            {},
            optional={
                "migrate": st.lists(st.sampled_from(["alembic upgrade head", " ", "", "a"]), max_size=3),
                "rollback": st.one_of(st.lists(st.text(max_size=3), max_size=2), st.text(max_size=3)),
                "port": st.one_of(
                    st.integers(-1, 70000),
                    st.sampled_from(["5432", "54a", "123456", ""]),
                    st.booleans(),
                    st.floats(0, 70000),
                ),
                "app_db_name": st.text(max_size=3),
                "ssl": st.one_of(st.booleans(), st.none(), st.just("true")),
                "connectionTimeoutMillis": st.one_of(st.integers(-2, 5), st.floats(-1, 2)),
                "app_db_client": st.sampled_from(["knex", "prisma", "sequelize"]),
                "password": st.one_of(st.none(), st.text(max_size=3), st.integers()),
            },
        ),
        "env": st.dictionaries(
            st.text(max_size=3), st.one_of(st.text(max_size=3), st.integers(), st.none()), max_size=3
        ),
        "runtimeConfig": st.fixed_dictionaries(
            {},
            optional={
                "port": st.one_of(st.integers(-1, 70000), st.text(max_size=5)),
                "start": st.lists(st.text(max_size=3), max_size=2),
            },
        ),
        "telemetry": st.one_of(
            st.none(), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2), st.text(max_size=2)
        ),
    },
)


def verdicts(doc: Any) -> tuple[bool, bool]:
    """(the quick check's yes/no, jsonschema's) for one document."""
    return config._conforms(doc, SCHEMA, SCHEMA), not any(True for _ in VALIDATOR.iter_errors(doc))


def agree(doc: Any) -> None:
    quick, full = verdicts(doc)
    assert quick == full, doc


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.one_of(documents, near_valid))
def test_quick_check_agrees_with_jsonschema(doc: dict[str, Any]) -> None:
    quick, full = verdicts(doc)
    assert quick == full, doc


def test_quick_check_on_real_configs() -> None:
    import yaml

    assert CONFIGS
    for path in CONFIGS:
        doc = yaml.safe_load(path.read_text())
        agree(doc)
    agree({"database": {"port": 5432.0}})  # integral float: an integer to JSON Schema
    agree({"database": {"port": True}})  # a boolean is not an integer
    agree({"database": {"migrate": ["  "]}})
    agree({"language": "Python"})


def test_unknown_keyword_defers_to_jsonschema() -> None:
    assert not config._conforms({"a": 1}, {"type": "object", "patternProperties": {}}, {})
