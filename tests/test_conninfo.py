"""Connection strings by libpq's rules: the URL as written, libpq's reading of it, and the
effective connection (URL, service file, PG* environment, .pgpass). Pure: no server."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import examples
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from psycopg.conninfo import conninfo_to_dict

from dbos_migrate.errors import UsageError
from dbos_migrate.settings.conninfo import (
    effective,
    nonlocal_endpoint,
    parse_url,
    split,
    synthesized,
    url_problem,
)

#: What a URL can carry: any character but NUL (libpq refuses %00) and lone surrogates (not UTF-8).
CHARS = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00")

# ---------------------------------------------------------------------------- schemes


@pytest.mark.parametrize(
    "scheme",
    [
        "postgresql",
        "postgres",
        "postgresql+psycopg",
        "postgresql+psycopg2",
        "postgresql+asyncpg",
        "postgresql+pg8000",
        "postgresql+psycopg_async",
        "postgres+mydriver",
        "POSTGRESQL",
        "Postgres",
    ],
)
def test_accepted_schemes_keep_the_driver_as_written(scheme: str) -> None:
    u = parse_url(f"{scheme}://u:pw@h:5432/db")
    assert (u.user, u.password, u.param("host"), u.param("port"), u.database) == ("u", "pw", "h", "5432", "db")
    assert u.scheme == scheme
    assert u.with_database("app").text == f"{scheme}://u:pw@h:5432/app"


@pytest.mark.parametrize(
    "text", ["mysql://u:pw@h/db", "http://h", "h:5432/db", "", "postgresql:/h/db", "sqlite:///x.db", "postgresql+://h"]
)
def test_rejected_schemes(text: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_url(text)
    assert "not a PostgreSQL URL" in info.value.message
    assert "pw" not in info.value.message


def test_driver_parameters_are_kept_for_commands_and_ignored_by_libpq() -> None:
    text = "postgresql+asyncpg://u:pw@h/db?ssl=require&prepared_statement_cache_size=0&sslmode=require"
    u = parse_url(text)
    assert u.extra == (("ssl", "require"), ("prepared_statement_cache_size", "0"))
    assert u.param("sslmode") == "require"
    assert u.with_database("app").text == text.replace("/db?", "/app?")
    assert "ssl=" not in u.libpq_text().replace("sslmode=", "")
    with pytest.raises(UsageError) as info:  # libpq itself would refuse it on a plain scheme
        parse_url("postgresql://u:pw@h/db?ssl=require")
    assert "'ssl'" in info.value.message


# ---------------------------------------------------------------------------- libpq's grammar


def test_query_parameters_are_libpqs_and_the_text_is_untouched() -> None:
    text = "postgresql://u:pw@h/db?sslmode=verify-full&sslrootcert=/etc/ca.pem&connect_timeout=10&application_name=my%20app"
    u = parse_url(text)
    assert u.text == text
    assert dict(u.params) == {
        "user": "u",
        "password": "pw",
        "host": "h",
        "dbname": "db",
        "sslmode": "verify-full",
        "sslrootcert": "/etc/ca.pem",
        "connect_timeout": "10",
        "application_name": "my app",
    }


def test_query_host_and_port_are_what_libpq_uses() -> None:
    u = parse_url("postgresql://u@:6543/postgres?host=/socket/dir&port=7777&hostaddr=127.0.0.2")
    assert (u.param("host"), u.param("port"), u.param("hostaddr")) == ("/socket/dir", "7777", "127.0.0.2")


@pytest.mark.parametrize(
    "password",
    [
        "p@ss",
        "p:ss",
        "p/ss",
        "p%ss",
        "p#ss",
        "p?ss",
        "p&s=s",
        "@:/%#?&=",
        "  spaced  ",
        "ünïcødé",
        "é@/:",
        "+plus+",
        'Xy7$p@ss:w/o%r#d?&=x"q\\z',
        "pass!word$1*~",
    ],
)
def test_percent_encoded_password_is_decoded_and_kept_as_written(password: str) -> None:
    text = f"postgresql+psycopg://user:{quote(password, safe='')}@db.example.com:5432/postgres"
    u = parse_url(text)
    assert u.password == password
    assert u.with_database("app").text == text.replace("/postgres", "/app")
    assert u.masked() == "postgresql+psycopg://user:***@db.example.com:5432/postgres"


@settings(max_examples=examples(300), deadline=None)
@given(
    user=st.text(CHARS, min_size=1, max_size=12),
    password=st.text(CHARS, max_size=30),
    host=st.sampled_from(["h", "db.example.com", "[::1]", "10.0.0.1", "%2Fvar%2Frun", "h1:5432,h2:5433", ""]),
    port=st.sampled_from(["", ":5432", ":6543"]),
    db=st.text(CHARS, max_size=10),
    query=st.sampled_from(
        ["", "?sslmode=require", "?host=/tmp&port=6000", "?application_name=a%20b&connect_timeout=3"]
    ),
)
def test_split_agrees_with_libpq(user: str, password: str, host: str, port: str, db: str, query: str) -> None:
    """Where the text is split without libpq (masking, replacing the path), the pieces are the
    ones libpq reads: checked against psycopg's conninfo_to_dict."""
    assume("," not in host or not port)
    text = f"postgresql://{quote(user, safe='')}:{quote(password, safe='')}@{host}{port}/{quote(db, safe='')}{query}"
    libpq = conninfo_to_dict(text)
    u = parse_url(text)
    assert dict(u.params) == libpq
    sp = split(text)
    assert sp.password is not None
    assert text[sp.password[0] : sp.password[1]] == quote(password, safe="")
    assert (
        u.with_database("other").database
        == "other"
        == conninfo_to_dict(u.with_database("other").libpq_text())["dbname"]
    )
    assert u.masked().split("@", 1)[0] == f"postgresql://{quote(user, safe='')}:***"


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("postgresql://u:p@ss@h:5432/db", "more than one '@'"),
        ("postgresql://u:p/ss@h:5432/db", "'@' after a '/'"),
        ("postgresql://u:a@b/c@h:5432/db", "'@'"),
        ("postgresql://u:50%off@h/db", "'%'"),
        ("postgresql://u@localhost:54x2/db", "not a number"),
        ("postgresql://u@localhost:5432:5432/db", "two ports"),
        ("postgresql://u:pw@h:99999/db", "not a number from 1 to 65535"),
        ("postgresql://u:pw@h:0/db", "not a number from 1 to 65535"),
        ("postgresql://u:pw@[::1/db", "unbalanced"),
        ("postgresql://u:secretpw@h/db?sslmode", "without a value"),
    ],
)
def test_mistakes_get_a_hint_that_fits_and_never_the_password(text: str, fragment: str) -> None:
    problem = url_problem(text)
    assert problem is not None and fragment in problem.message
    with pytest.raises(UsageError) as info:
        parse_url(text)
    shown = info.value.message + (info.value.hint or "")
    for secret in ("p@ss", "p/ss", "50%off", "secretpw", "a@b/c"):
        if secret in text:
            assert secret not in shown
    if "@" in fragment or "%" in fragment:
        assert "percent-encode" in (info.value.hint or "")


@pytest.mark.parametrize(
    ("text", "password"),
    [("postgresql://u:p:ss@h/db", "p:ss"), ("postgresql://u:p?ss@h/db", "p?ss"), ("postgresql://u:p#ss@h/db", "p#ss")],
)
def test_characters_libpq_reads_unambiguously_are_accepted(text: str, password: str) -> None:
    u = parse_url(text)
    assert u.password == password and u.param("host") == "h"
    assert password not in u.masked()


def test_ipv6_multiple_hosts_and_sockets() -> None:
    assert parse_url("postgresql://u:pw@[::1]:5432/db").param("host") == "::1"
    multi = parse_url("postgresql://u:pw@h1:5432,h2:5433/db?target_session_attrs=read-write")
    assert (multi.param("host"), multi.param("port")) == ("h1,h2", "5432,5433")
    assert multi.masked() == "postgresql://u:***@h1:5432,h2:5433/db?target_session_attrs=read-write"
    for text in ("postgresql:///db?host=/var/run/postgresql", "postgresql://%2Fvar%2Frun%2Fpostgresql/db"):
        assert parse_url(text).param("host") == "/var/run/postgresql"


# ---------------------------------------------------------------------------- the URL as written


def test_with_database_replaces_only_the_path() -> None:
    text = "postgresql+psycopg://u:pass!word$1*~@h:5432/postgres?sslmode=require&application_name=x"
    assert parse_url(text).with_database("my_app").text == text.replace("/postgres?", "/my_app?")
    assert parse_url("postgresql://u@h").with_database("a").text == "postgresql://u@h/a"
    assert parse_url("postgresql://u@h?sslmode=require").with_database("a").text == "postgresql://u@h/a?sslmode=require"
    dbq = parse_url("postgresql://u@h/x?dbname=postgres&sslmode=require").with_database("a")
    assert dbq.text == "postgresql://u@h/x?dbname=a&sslmode=require" and dbq.database == "a"
    same = parse_url("postgresql://u:p%21@h/app")
    assert same.with_database("app") is same  # nothing to replace: the text stays byte for byte


@settings(max_examples=examples(200), deadline=None)
@given(password=st.text(CHARS, min_size=1, max_size=30))
def test_masked_never_shows_the_password(password: str) -> None:
    u = parse_url(f"postgresql://u:{quote(password, safe='')}@h:5432/db")
    assert u.masked() == "postgresql://u:***@h:5432/db"


@pytest.mark.parametrize("param", ["password", "sslpassword"])
def test_secret_query_params_masked_and_removed(param: str) -> None:
    u = parse_url(f"postgresql://u:pw@h/db?{param}=TopSecret&sslmode=require")
    assert "TopSecret" not in u.masked() and f"{param}=***" in u.masked() and "sslmode=require" in u.masked()
    bare = u.without_secrets()
    assert "TopSecret" not in bare.text and "pw" not in bare.text.split("@")[0]
    assert bare.text == "postgresql://u@h/db?sslmode=require"


def test_with_password() -> None:
    u = parse_url("postgresql://dbosadmin:***@db.example.com:5432/postgres")
    assert u.with_password("p@ss/w").text == "postgresql://dbosadmin:p%40ss%2Fw@db.example.com:5432/postgres"
    assert parse_url("postgresql://h/db").with_password("x").text == "postgresql://:x@h/db"


def test_synthesized_urls_encode_everything() -> None:
    u = synthesized("us@r", "p@ss:w/o%r#d", "/var/run/postgresql", "5433", [("sslmode", "disable")])
    assert (u.user, u.password, u.param("host"), u.param("port"), u.param("sslmode")) == (
        "us@r",
        "p@ss:w/o%r#d",
        "/var/run/postgresql",
        "5433",
        "disable",
    )
    assert synthesized("u", None, "::1", "5432").param("host") == "::1"


# ---------------------------------------------------------------------------- the effective connection


def test_url_then_service_then_environment(tmp_path: Path) -> None:
    services = tmp_path / "services.conf"
    services.write_text("[billing]\nhost=svc-host\nport=6001\nuser=svc_user\nsslmode=verify-full\n")
    env = {
        "PGSERVICEFILE": str(services),
        "PGSERVICE": "billing",
        "PGPORT": "7000",
        "PGUSER": "env_user",
        "PGSSLMODE": "disable",
        "PGCONNECT_TIMEOUT": "4",
        "HOME": str(tmp_path),
    }
    eff = effective(parse_url("postgresql://url_user@/app"), env)
    assert eff.get("user") == "url_user" and eff.source("user") == "the URL"
    assert (eff.get("host"), eff.get("port"), eff.get("sslmode")) == ("svc-host", "6001", "verify-full")
    assert "service billing" in (eff.source("host") or "")
    assert eff.get("connect_timeout") == "4" and eff.source("connect_timeout") == "PGCONNECT_TIMEOUT"
    assert "service" not in dict(eff.params)  # expanded: connections never name it again
    assert "svc-host:6001" in eff.describe()


def test_unknown_service_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(UsageError) as info:
        effective(parse_url("postgresql:///app?service=nope"), {"HOME": str(tmp_path), "PGSYSCONFDIR": str(tmp_path)})
    assert "service 'nope'" in info.value.message


def test_pgpass_supplies_the_password_and_every_candidate_is_a_secret(tmp_path: Path) -> None:
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("db.example.com:5432:*:app_user:from\\:pgpass\nother:*:*:*:unrelated\n*:*:*:app_user:fallback\n")
    pgpass.chmod(0o600)
    eff = effective(parse_url("postgresql://app_user@db.example.com/app"), {"PGPASSFILE": str(pgpass)})
    assert (eff.password, eff.password_source) == ("from:pgpass", ".pgpass")
    assert {"from:pgpass", "fallback"} <= set(eff.secrets) and "unrelated" not in eff.secrets
    pgpass.chmod(0o644)  # libpq ignores a password file others may read: so does the effective result
    assert (
        effective(parse_url("postgresql://app_user@db.example.com/app"), {"PGPASSFILE": str(pgpass)}).password is None
    )


def test_pgpassword_beats_pgpass_and_the_url_beats_both(tmp_path: Path) -> None:
    pgpass = tmp_path / "pgpass"
    pgpass.write_text("*:*:*:*:from-file\n")
    pgpass.chmod(0o600)
    env = {"PGPASSFILE": str(pgpass), "PGPASSWORD": "from-env"}
    assert effective(parse_url("postgresql://u@h/db"), env).password == "from-env"
    assert effective(parse_url("postgresql://u:from-url@h/db"), env).password == "from-url"
    assert (
        effective(parse_url("postgresql://u:***@h/db"), {"PGPASSFILE": str(pgpass)}, ignore_password=True).password
        == "from-file"
    )


# ---------------------------------------------------------------------------- what the guard judges


@pytest.mark.parametrize(
    ("url", "env"),
    [
        ("postgresql://u@localhost:6545/postgres?hostaddr=192.0.2.2", {}),
        ("postgresql://u@:6545/postgres", {"PGHOST": "192.0.2.2"}),
        ("postgresql://u@localhost/postgres", {"PGHOSTADDR": "192.0.2.2"}),
        ("postgresql://u@/postgres", {"PGSERVICE": "remote"}),
        ("postgresql://u@localhost,db.example.com/postgres", {}),
        ("postgresql://u@/postgres?host=db.example.com", {}),
    ],
)
def test_a_remote_endpoint_from_any_source_is_found(tmp_path: Path, url: str, env: dict[str, str]) -> None:
    services = tmp_path / "svc.conf"
    services.write_text("[remote]\nhost=db.example.com\n")
    eff = effective(parse_url(url), {**env, "PGSERVICEFILE": str(services), "HOME": str(tmp_path)})
    remote = nonlocal_endpoint(eff)
    assert remote is not None and ("192.0.2.2" in remote or "db.example.com" in remote)


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://localhost/db",
        "postgresql://127.0.0.1/db",
        "postgresql://127.3.2.1/db",
        "postgresql://[::1]/db",
        "postgresql:///db",
        "postgresql:///db?host=/var/run/postgresql",
        "postgresql://localhost/db?hostaddr=127.0.0.1",
    ],
)
def test_local_endpoints(url: str) -> None:
    assert nonlocal_endpoint(effective(parse_url(url), {})) is None


@pytest.mark.parametrize(
    "url", ["postgresql://localhost./db", "postgresql://LOCALHOST./db", "postgresql:///db?host=localhost."]
)
def test_localhost_with_a_trailing_dot_is_not_local(url: str) -> None:
    """`localhost.` is an absolute DNS name: a resolver may send it to the network."""
    remote = nonlocal_endpoint(effective(parse_url(url), {}))
    assert remote is not None and "localhost." in remote.lower()


def test_effective_reads_only_the_mapping_it_is_given() -> None:
    """The process environment plays no part: tests and library callers pass their own."""
    os.environ.setdefault("PGHOST_UNUSED", "x")
    eff = effective(parse_url("postgresql://u@h/db"), {})
    assert {k for k, _ in eff.params} == {"user", "host", "dbname"}


def test_masked_text_hides_the_password_without_a_parse() -> None:
    from dbos_migrate.settings.conninfo import compose, masked_text

    assert masked_text("postgresql://postgres:dbos@localhost:5432") == "postgresql://postgres:***@localhost:5432"
    url = compose("postgres", "p@ss:w/o%r#d?&=x", "localhost", 5432, dbname="db")
    assert "p@ss" not in url
    assert masked_text(url) == "postgresql://postgres:***@localhost:5432/db"
    assert masked_text("postgresql://localhost/db") == "postgresql://localhost/db"
    assert (
        masked_text("postgresql://h/db?sslpassword=s3cret&sslmode=require")
        == "postgresql://h/db?sslpassword=***&sslmode=require"
    )


def test_compose_round_trips_any_password_and_name() -> None:
    import psycopg

    from dbos_migrate.settings.conninfo import compose

    password = 'Xy7$p@ss:w/o%r#d?&=x"q\\z'
    info = psycopg.conninfo.conninfo_to_dict(compose("us@r", password, "localhost", 6543, dbname="d/b"))
    assert (info["user"], info["password"], info["dbname"], info["port"]) == ("us@r", password, "d/b", "6543")


@pytest.mark.parametrize(
    ("host", "local"),
    [
        ("[::1]", True),  # a bracketed literal, as written in a URL
        ("127.0.0.1%eth0", True),  # a zone suffix is not part of the address
        ("::1%lo", True),
        ("127.0.0.1%a%b", True),  # only the first % starts the zone
        ("@abstract-socket", True),  # a Linux abstract socket
        ("X127.0.0.1", False),  # a name that merely contains a loopback literal
        ("127.0.0.1.example.com", False),
        ("10.0.0.1", False),
    ],
)
def test_is_local_host_on_literal_spellings(host: str, local: bool) -> None:
    from dbos_migrate.settings.conninfo import is_local_host

    assert is_local_host(host) is local


def test_masked_text_masks_a_secret_parameter_whose_value_holds_an_equals_sign() -> None:
    from dbos_migrate.settings.conninfo import masked_text

    assert masked_text("postgresql://h/db?password=a=b&sslmode=require") == (
        "postgresql://h/db?password=***&sslmode=require"
    )
