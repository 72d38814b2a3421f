"""The DBOS Cloud rules that `validate --cloud` adds."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest

from dbos_migrate.errors import Problem
from dbos_migrate.report.jsonshape import to_json
from dbos_migrate.settings import config
from dbos_migrate.settings.cloud import cloud_problems
from dbos_migrate.settings.config import Config


def cfg(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> Config:
    path = tmp_path / "dbos-config.yaml"
    path.write_text(text, encoding="utf-8")
    return config.load(path, dict(env or {}))


def check(tmp_path: Path, text: str, env: Mapping[str, str] | None = None) -> list[Problem]:
    return cloud_problems(cfg(tmp_path, text, env))


# ---------------------------------------------------------------------------- user names


@pytest.mark.parametrize("user", ["abc", "a" * 16, "app_user", "u2_x", "abc123"])
def test_valid_usernames(tmp_path: Path, user: str) -> None:
    assert check(tmp_path, f"name: my-app\ndatabase:\n  username: {user}\n") == []


@pytest.mark.parametrize(
    "user",
    ["ab", "a" * 17, "App_user", "1user", "_user", "user-name", "user.name", "üser", "us er", "'user!'"],
)
def test_invalid_usernames(tmp_path: Path, user: str) -> None:
    (p,) = check(tmp_path, f"name: my-app\ndatabase:\n  username: {user}\n")
    assert p.path == "database.username"
    assert (p.line, p.column) == (3, 13)
    assert "3-16 characters" in p.message
    assert "starting with a letter" in p.message


@pytest.mark.parametrize("user", ["dbosadmin", "dbos", "postgres", "admin"])
def test_reserved_usernames(tmp_path: Path, user: str) -> None:
    (p,) = check(tmp_path, f"name: my-app\ndatabase:\n  username: {user}\n")
    assert p.message == f"the user name {user!r} is reserved on DBOS Cloud"


def test_username_from_variable(tmp_path: Path) -> None:
    (p,) = check(tmp_path, "name: my-app\ndatabase:\n  username: ${U}\n", {"U": "postgres"})
    assert "reserved" in p.message
    assert check(tmp_path, "name: my-app\ndatabase:\n  username: ${U}\n", {}) == []


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://postgres:Secret-pw1@h/db", "reserved"),
        ("postgresql://dbos:Secret-pw1@h/db", "reserved"),
        ("postgresql://Bad-User:Secret-pw1@h/db", "3-16 characters"),
        ("postgresql://ab:Secret-pw1@h/db", "3-16 characters"),
        ("postgresql://a%62c_d:Secret-pw1@h/db", None),  # percent-decoded: abc_d
        ("postgresql://h/db", None),
        ("postgresql://good_user:Secret-pw1@h/db", None),
    ],
)
def test_user_in_database_url(tmp_path: Path, url: str, message: str | None) -> None:
    found = check(tmp_path, f"name: my-app\ndatabase_url: {url}\n")
    if message is None:
        assert found == []
        return
    (p,) = found
    assert p.path == "database_url"
    assert p.message.startswith("the user in database_url: ")
    assert message in p.message
    assert "Secret-pw1" not in p.message


def test_unparsable_database_url_is_a_problem_without_the_password(tmp_path: Path) -> None:
    (p,) = check(tmp_path, "name: my-app\ndatabase_url: mysql://user:Secret-pw1@h/db\n")
    assert p.path == "database_url"
    assert "not a PostgreSQL URL" in p.message
    assert "Secret-pw1" not in p.render()


# ---------------------------------------------------------------------------- passwords


@pytest.mark.parametrize("pw", ["12345678", "a" * 128, "Str0ng!Pass#word", "p:a;s%s&w=o?r*d", "ünïcødé8"])
def test_valid_passwords(tmp_path: Path, pw: str) -> None:
    assert check(tmp_path, "name: my-app\ndatabase:\n  password: ${PW}\n", {"PW": pw}) == []


@pytest.mark.parametrize(
    ("pw", "message"),
    [
        ("1234567", "8 to 128 characters"),
        ("a" * 129, "8 to 128 characters"),
        ("has/slash-pw", "cannot contain"),
        ('has"quote-pw', "cannot contain"),
        ("has@at-pw123", "cannot contain"),
        ("has'apos-pw1", "cannot contain"),
        ("has space-pw", "cannot contain"),
        ("has\ttab-pw12", "cannot contain"),
        ("has\nnewline-pw", "cannot contain"),
        ("nbsp\u00a0inside-pw", "cannot contain"),
    ],
)
def test_invalid_passwords_never_show_the_password(tmp_path: Path, pw: str, message: str) -> None:
    found = check(tmp_path, "name: my-app\ndatabase:\n  password: ${PW}\n", {"PW": pw})
    assert [p.path for p in found] == ["database.password"]
    (p,) = found
    assert message in p.message
    assert (p.line, p.column) == (3, 13)
    for text in (p.render(), str(to_json(p)), repr(p)):
        assert pw not in text


def test_short_password_with_forbidden_characters_gives_two_problems(tmp_path: Path) -> None:
    found = check(tmp_path, "name: my-app\ndatabase:\n  password: ${PW}\n", {"PW": "a@b"})
    assert sorted(p.message.split(" ")[-1] for p in found) == ["characters", "whitespace"]
    assert all("a@b" not in p.render() for p in found)


def test_literal_password_in_file_not_echoed(tmp_path: Path) -> None:
    found = check(tmp_path, "name: my-app\ndatabase:\n  password: 'bad pass@word'\n")
    assert found
    for p in found:
        assert "bad pass@word" not in p.render()


def test_numeric_password_is_checked_as_text(tmp_path: Path) -> None:
    assert check(tmp_path, "name: my-app\ndatabase:\n  password: 123456789\n") == []
    (p,) = check(tmp_path, "name: my-app\ndatabase:\n  password: 1234\n")
    assert "8 to 128" in p.message


def test_unset_password_variable_is_not_a_cloud_problem(tmp_path: Path) -> None:
    assert check(tmp_path, "name: my-app\ndatabase:\n  password: ${NOPE}\n") == []


# ---------------------------------------------------------------------------- app names


@pytest.mark.parametrize("name", ["abc", "my-app", "my_app", "app-2", "a" * 30, "123"])
def test_valid_app_names(tmp_path: Path, name: str) -> None:
    assert check(tmp_path, f"name: '{name}'\n") == []


@pytest.mark.parametrize("name", ["ab", "a" * 31, "My-App", "my app", "my.app", "app!", "ünï-app"])
def test_invalid_app_names(tmp_path: Path, name: str) -> None:
    (p,) = check(tmp_path, f"name: '{name}'\n")
    assert p.path == "name"
    assert (p.line, p.column) == (1, 7)
    assert "3-30 characters" in p.message


def test_every_cloud_problem_at_once(tmp_path: Path) -> None:
    text = "name: My App\ndatabase_url: postgresql://admin:x@h/db\ndatabase:\n  username: postgres\n  password: ${PW}\n"
    found = check(tmp_path, text, {"PW": "short"})
    assert sorted(p.path for p in found) == ["database.password", "database.username", "database_url", "name"]
    for p in found:
        assert "short" not in p.render()


def test_cloud_problems_name_the_file_like_schema_problems(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "dbos-config.yaml").write_text("name: X\n", encoding="utf-8")
    monkeypatch.chdir(tmp_path)
    c = config.load("dbos-config.yaml", {})
    (p,) = cloud_problems(c)
    assert p.file == "dbos-config.yaml"


def test_clean_config_has_no_cloud_problems(tmp_path: Path) -> None:
    text = "name: my-app\ndatabase_url: ${DBOS_DATABASE_URL}\ndatabase:\n  migrate:\n    - alembic upgrade head\n"
    env = {"DBOS_DATABASE_URL": "postgresql://app_user:Good-Pass-1@h.cloud.dbos.dev:5432/postgres?sslmode=require"}
    assert check(tmp_path, text, env) == []
