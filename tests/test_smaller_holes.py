"""The smaller holes of the trust-boundary review (docs/security.md): files that are not files,
yes and no in the environment, a hot standby in read-only verbs, and a short password. Against
a real PostgreSQL; subprocesses only where the process environment or a hang is the point."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import psycopg
import pytest
from helpers import write_config
from inmemory import InMemoryContext
from pgharness import ClusterFactory, run_cli, start_standby

from dbos_migrate import verbs
from dbos_migrate.events import Event, Notice
from dbos_migrate.report import TextReporter

# Long enough for a start-up and an answer; a FIFO that is opened for reading blocks forever.
HANG = 60


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


# ---------------------------------------------------------------------------- files that are not files


def test_a_fifo_given_as_config_or_env_file_is_refused_not_waited_on(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, app_db_name="never_made", migrate=["true"])
    pipe = fifo(tmp_path / "pipe")
    for args in (
        ["validate", "-c", pipe],
        ["--env-file", pipe, "validate", "-c", cfg],
        ["validate", "--env-file", pipe, "-c", cfg],
    ):
        try:
            result = run_cli(*args, timeout=HANG)
        except subprocess.TimeoutExpired:
            pytest.fail(f"dbos-migrate {args} waited on a FIFO")
        assert result.returncode == 2, result.stdout + result.stderr
        assert "is a FIFO (named pipe)" in result.stderr
    assert run_cli("validate", "-c", "/dev/zero").stderr.count("is a character device") == 1


def test_a_step_summary_that_is_a_fifo_or_a_symlink_is_refused_with_a_warning(
    tmp_path: Path, pg_url: str, app_db: str
) -> None:
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    target = tmp_path / "elsewhere.md"
    target.write_text("")
    link = tmp_path / "summary-link.md"
    link.symlink_to(target)
    for summary, why in ((fifo(tmp_path / "summary-fifo"), "is a FIFO"), (link, "is a symbolic link")):
        env = {"GITHUB_ACTIONS": "true", "GITHUB_STEP_SUMMARY": str(summary)}
        try:
            result = run_cli("up", "-c", cfg, "-D", pg_url, "--system-db", "skip", env=env, timeout=HANG)
        except subprocess.TimeoutExpired:
            pytest.fail(f"up waited on a step summary that {why}")
        assert result.returncode == 0, result.stdout + result.stderr
        warnings = [
            line for line in result.stdout.splitlines() if line.startswith("::warning title=dbos-migrate step summary")
        ]
        assert len(warnings) == 1 and why in warnings[0] and "no summary written" in warnings[0], result.stdout
    assert target.read_text() == ""  # the link was never followed


# ---------------------------------------------------------------------------- yes and no


@pytest.mark.parametrize("value", ["on", "y", "enabled", "yes please"])
def test_a_flag_variable_says_yes_only_in_a_documented_spelling(tmp_path: Path, value: str) -> None:
    """DBOS_MIGRATE_YES=on used to count as --yes and let `down` past the production guard."""
    ran = tmp_path / "ran"
    cfg = write_config(tmp_path, app_db_name="guarded", rollback=[f"touch {ran}"])
    url = "postgresql://u:p@db.invalid:5432/postgres"
    env = {"DBOS_MIGRATE_YES": value, "PGCONNECT_TIMEOUT": "2"}
    refused = run_cli("down", "-c", cfg, "-D", url, "-o", "json", env=env)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "DBOS_MIGRATE_YES" in json.loads(refused.stdout)["error"]["message"]
    assert not ran.exists()


@pytest.mark.parametrize(("value", "code"), [("true", 3), ("YES", 3), ("1", 3), ("no", 5), ("0", 5), ("", 5)])
def test_the_documented_spellings_of_yes_and_no(tmp_path: Path, value: str, code: int) -> None:
    """yes: past the guard to the (unresolvable) server, exit 3; no: the guard refuses, exit 5."""
    cfg = write_config(tmp_path, app_db_name="guarded", rollback=["true"])
    env = {"DBOS_MIGRATE_YES": value, "PGCONNECT_TIMEOUT": "2"}
    result = run_cli("down", "-c", cfg, "-D", "postgresql://u:p@db.invalid:5432/postgres", env=env)
    assert result.returncode == code, result.stdout + result.stderr


def test_parse_bool() -> None:
    from dbos_migrate.settings.booleans import is_true, parse_bool

    assert [parse_bool(v) for v in ("true", " Yes ", "1", "false", "NO", "0", "", None)] == [True] * 3 + [False] * 5
    assert [parse_bool(v) for v in ("on", "off", "y", "t", "2")] == [None] * 5
    assert is_true("TRUE") and not is_true("on")


# ---------------------------------------------------------------------------- a hot standby


def test_status_and_dry_run_on_a_hot_standby_say_it_is_read_only(
    tmp_path: Path, own_cluster: ClusterFactory, reachable_tmp: Path
) -> None:
    primary = own_cluster(extra_hba=["host replication all 127.0.0.1/32 scram-sha-256"])
    standby = start_standby(primary, reachable_tmp)
    try:
        url = standby.url(dbname="postgres")
        cfg = write_config(
            tmp_path,
            app_db_name="on_standby",
            migrate=[f"touch {tmp_path / 'ran'}"],
            rollback=[f"touch {tmp_path / 'ran'}"],
        )
        status = run_cli("status", "-c", cfg, "-D", url)
        assert status.returncode == 0, status.stdout + status.stderr
        assert "read-only       yes: a hot standby" in status.stdout
        assert "no (read-only standby: up cannot create it)" in status.stdout and "up will create" not in status.stdout
        doc = json.loads(run_cli("status", "-c", cfg, "-D", url, "-o", "json").stdout)
        assert doc["standby"] is True and doc["exists"] is False
        for verb in (["up"], ["down", "--yes"]):
            dry = run_cli(*verb, "--dry-run", "-c", cfg, "-D", url)
            assert dry.returncode == 3, dry.stdout + dry.stderr
            assert "read-only standby" in dry.stderr and "would be created" not in dry.stdout
        assert not (tmp_path / "ran").exists()
        with psycopg.connect(primary.url(dbname="postgres")) as conn:
            assert conn.execute("SELECT pg_catalog.pg_is_in_recovery()").fetchone() == (False,)
            doc = json.loads(run_cli("status", "-c", cfg, "-D", primary.url(dbname="postgres"), "-o", "json").stdout)
            assert doc["standby"] is False
    finally:
        standby.remove()


# ---------------------------------------------------------------------------- a short password


def test_a_short_password_is_masked_as_a_token_and_warned_about(tmp_path: Path, own_cluster: ClusterFactory) -> None:
    """A server whose password is `p`: a command prints text in which `p` is a letter of words
    and a token of its own. Masking every `p` used to print `***ort`, telling the password."""
    url = own_cluster(password="p").url()
    app_db = "short_pw"
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["echo 'could not connect to port 5432 as p'"])
    ctx = InMemoryContext({"PATH": os.environ["PATH"]})
    events: list[Event] = []
    reporter = TextReporter(ctx)

    def sink(event: Event) -> None:
        events.append(event)
        reporter(event)

    report = verbs.up(ctx, verbs.UpOptions(config=str(cfg), db_url=url, system_db="skip"), sink)
    assert report.ok, report.error
    out, err = ctx.captured()
    assert "could not connect to port 5432 as ***" in out + err
    warnings = [e for e in events if isinstance(e, Notice) and "shorter than 4 characters" in e.text]
    assert len(warnings) == 1 and warnings[0].level == "warning"
    assert "warning: a database password is shorter than 4 characters" in out
