"""Safety rules the CLI tests reached only slowly or not at all, checked in-process (the verbs
as a library, tests/inmemory.py's Context with scripted answers, a real PostgreSQL):

- the production guard's answers at the prompt (docs/behaviour.md, "The production guard");
- the creation lock is released only once the app database's lock is held (no gap to race
  into, docs/reliability.md);
- the rehearsal's scratch database is dropped when a command fails (docs/rehearsal.md).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import db_exists, write_config
from inmemory import InMemoryContext
from pgharness import drop_database

from dbos_migrate import verbs
from dbos_migrate.context import Ask
from dbos_migrate.errors import CommandFailed, GuardRefused, Interrupted
from dbos_migrate.events import CommandStarted, Event, GuardWarning
from dbos_migrate.model import RunReport

# ---------------------------------------------------------------------------- the production guard


def _answering(answer: str | type[BaseException] | None) -> Ask:
    """What a person does at the prompt: type a line, end the input (None), or press Ctrl-C."""

    def ask(prompt: str, secret: bool) -> str | None:
        assert secret is False and "Type the app database name" in prompt  # a name, echoed as typed
        if isinstance(answer, type):
            raise answer()
        return answer

    return ask


class _PromptContext(InMemoryContext):
    def __init__(self, ask: Ask) -> None:
        super().__init__({"PATH": os.environ["PATH"]})
        self.ask = ask


@pytest.mark.parametrize(
    ("answer", "exit_code"),
    [
        ("", 5),  # Enter alone
        ("   ", 5),
        (None, 5),  # end of input (Ctrl-D)
        ("not-the-name", 5),
        ("APP", 5),  # the name in the wrong case (replaced by the real name below)
        ("app-prefix", 5),  # a prefix of the name (likewise)
        (KeyboardInterrupt, 130),  # Ctrl-C at the prompt: interrupted, as everywhere else
        ("app", 0),  # the app database name
        ("  app  ", 0),  # surrounding blanks are not part of what was typed
    ],
    ids=["empty", "blank", "eof", "wrong", "wrong-case", "prefix", "ctrl-c", "right", "right-padded"],
)
def test_down_on_production_runs_only_after_the_name_is_typed(
    answer: str | type[BaseException] | None, exit_code: int, tmp_path: Path, pg_url: str, app_db: str
) -> None:
    rolled = tmp_path / "rolled"
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"], rollback=[f"touch {rolled}"])
    assert verbs.up(
        InMemoryContext({"PATH": os.environ["PATH"]}),
        verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip"),
        lambda e: None,
    ).ok
    if isinstance(answer, str):
        answer = {"APP": app_db.upper(), "app-prefix": app_db[:-1], "app": app_db, "  app  ": f"  {app_db}  "}.get(
            answer, answer
        )
    events: list[Event] = []
    report = verbs.down(
        _PromptContext(_answering(answer)),
        verbs.DownOptions(config=str(cfg), db_url=pg_url, production=True),
        events.append,
    )
    assert any(isinstance(e, GuardWarning) for e in events)  # the cautions came before the question
    if exit_code == 0:
        assert report.ok and report.error is None, report.error
        assert rolled.exists() and [c.status for c in report.commands] == ["succeeded"]
        return
    assert report.error is not None and report.error.exit_code == exit_code, report.error
    if exit_code == 5:
        assert isinstance(report.error, GuardRefused) and "nothing was run" in report.error.message
    else:
        assert isinstance(report.error, Interrupted) and report.error.signum == signal.SIGINT
    assert not rolled.exists() and report.commands == []
    assert not any(isinstance(e, CommandStarted) for e in events)


def _down_on_production(
    tmp_path: Path, pg_url: str, app_db: str, ctx: InMemoryContext, **options: Any
) -> tuple[RunReport, list[Event], Path]:
    """`up`, then `down` on the same app database marked production, with `options` and `ctx`."""
    rolled = tmp_path / "rolled"
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"], rollback=[f"touch {rolled}"])
    assert verbs.up(
        InMemoryContext({"PATH": os.environ["PATH"]}),
        verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip"),
        lambda e: None,
    ).ok
    events: list[Event] = []
    report = verbs.down(
        ctx, verbs.DownOptions(config=str(cfg), db_url=pg_url, production=True, **options), events.append
    )
    return report, events, rolled


def test_guard_warning_names_the_target_and_the_commands(tmp_path: Path, pg_url: str, app_db: str) -> None:
    prompts: list[str] = []

    def ask(prompt: str, secret: bool) -> str | None:
        prompts.append(prompt)
        return _answering(app_db)(prompt, secret)

    report, events, _ = _down_on_production(tmp_path, pg_url, app_db, _PromptContext(ask))
    assert report.ok, report.error
    assert prompts == [f"Type the app database name ({app_db}) to roll it back: "]
    (warning,) = [e for e in events if isinstance(e, GuardWarning)]
    assert warning.where is report.where and warning.where.app_database == app_db
    assert warning.commands == (f"touch {tmp_path / 'rolled'}",)


@pytest.mark.parametrize("confirm", ["right", "wrong"])
def test_confirm_runs_only_on_the_exact_name(confirm: str, tmp_path: Path, pg_url: str, app_db: str) -> None:
    """--confirm NAME runs without asking; any other name is refused, naming both, with the way out."""

    def never(prompt: str, secret: bool) -> str | None:
        raise AssertionError("--confirm must not prompt")

    given = app_db if confirm == "right" else app_db + "x"
    report, _, rolled = _down_on_production(tmp_path, pg_url, app_db, _PromptContext(never), confirm=given)
    if confirm == "right":
        assert report.ok and rolled.exists(), report.error
        return
    assert isinstance(report.error, GuardRefused) and not rolled.exists()
    assert report.error.message == (f"--confirm {given!r} does not match the app database {app_db!r}; nothing was run")
    assert report.error.hint == f"pass --confirm {app_db} (or --yes) to run it without a prompt"


def test_no_terminal_and_a_wrong_answer_are_refused_with_the_way_out(tmp_path: Path, pg_url: str, app_db: str) -> None:
    how = f"pass --confirm {app_db} (or --yes) to run it without a prompt"
    report, _, rolled = _down_on_production(tmp_path, pg_url, app_db, InMemoryContext({"PATH": os.environ["PATH"]}))
    assert isinstance(report.error, GuardRefused) and not rolled.exists()
    assert report.error.message == (
        f"refusing to roll back production database {app_db!r} without confirmation (no terminal to ask on); "
        "nothing was run"
    )
    assert report.error.hint == how
    report, _, rolled = _down_on_production(tmp_path, pg_url, app_db, _PromptContext(_answering("no")))
    assert isinstance(report.error, GuardRefused) and not rolled.exists()
    assert report.error.message == "confirmation did not match the app database name; nothing was run"
    assert report.error.hint == how


# ---------------------------------------------------------------------------- the creation lock


def _advisory_holders(pg_url: str, key: int) -> set[str]:
    """The databases in which some session holds the migration lock `key` right now."""
    from dbos_migrate.engine.database import LOCK_CLASS

    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            """SELECT d.datname FROM pg_catalog.pg_locks l JOIN pg_catalog.pg_database d ON d.oid = l.database
                WHERE l.locktype = 'advisory' AND l.granted AND l.classid = %s AND l.objid = %s AND l.objsubid = 2""",
            (LOCK_CLASS, key),
        ).fetchall()
    return {name for (name,) in rows}


def test_the_creation_lock_is_released_only_once_the_app_database_lock_is_held(
    tmp_path: Path, pg_url: str, app_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`up` on a missing database: at the moment the creation lock (in the maintenance
    database) is released, pg_locks must already show the app database's lock held."""
    from dbos_migrate.engine import database as db

    key = db.lock_key(app_db)
    calls: list[tuple[str, str, set[str]]] = []
    acquire: Callable[..., Any] = db.acquire_lock
    release: Callable[..., Any] = db.release_lock

    def recording_acquire(conn: psycopg.Connection[Any], *args: Any, **kwargs: Any) -> None:
        acquire(conn, *args, **kwargs)
        calls.append(("acquired", conn.info.dbname, _advisory_holders(pg_url, key)))

    def recording_release(conn: psycopg.Connection[Any], k: int) -> None:
        calls.append(("releasing", conn.info.dbname, _advisory_holders(pg_url, key)))
        release(conn, k)

    monkeypatch.setattr(db, "acquire_lock", recording_acquire)
    monkeypatch.setattr(db, "release_lock", recording_release)
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    report = verbs.up(
        InMemoryContext({"PATH": os.environ["PATH"]}),
        verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip"),
        lambda e: None,
    )
    assert report.ok and report.created, report.error
    maint = calls[0][1]
    assert maint != app_db
    assert [(what, where) for what, where, _ in calls] == [
        ("acquired", maint),
        ("acquired", app_db),
        ("releasing", maint),
        ("releasing", app_db),
    ]
    creation_release = calls[2]
    assert creation_release[2] == {maint, app_db}, "the creation lock was let go before the app lock was held"


# ---------------------------------------------------------------------------- the scratch database


def _databases_like(pg_url: str, prefix: str) -> list[str]:
    with psycopg.connect(pg_url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT datname FROM pg_catalog.pg_database WHERE starts_with(datname, %s)", (prefix,)
        ).fetchall()
    return [name for (name,) in rows]


def test_a_failing_command_still_drops_the_scratch_database(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """`plan --rehearse` whose command fails: exit 1, and the scratch database the command ran
    against (it records the name) is gone from pg_database afterwards."""
    from dbos_migrate.rehearse.scratch import SCRATCH_PREFIX
    from dbos_migrate.verbs.rehearsal import plan

    seen = tmp_path / "scratch.txt"
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[f'echo "$PGDATABASE" > {seen}; exit 3'])
    try:
        report = plan(
            InMemoryContext({"PATH": os.environ["PATH"]}),
            verbs.PlanOptions(config=str(cfg), db_url=pg_url),
            lambda e: None,
        )
        assert isinstance(report.error, CommandFailed) and report.error.exit_code == 1, report.error
        assert report.rehearsal is not None and report.rehearsal.created
        name = seen.read_text().strip()
        assert name == report.rehearsal.scratch_database and name.startswith(SCRATCH_PREFIX + app_db)
        assert not db_exists(pg_url, name), f"scratch database {name} survived the failed command"
        assert report.rehearsal.dropped is True
        assert not db_exists(pg_url, app_db)  # a rehearsal never creates the real database
    finally:
        for left in _databases_like(pg_url, SCRATCH_PREFIX + app_db):
            drop_database(pg_url, left)


# ---------------------------------------------------------------------------- the lock functions


def test_lock_holder_names_the_session_that_holds_the_lock(pg_url: str, app_db: str) -> None:
    """lock_holder reports the holding session (pid, application_name, client, start, user), and
    only for this key in this database; acquire_lock waits, names it, then takes the lock once freed."""
    from dbos_migrate.engine import database as db
    from dbos_migrate.errors import LockTimeout

    key = db.lock_key(app_db)
    with (
        psycopg.connect(pg_url, autocommit=True, application_name="holder-" + app_db) as holder,
        psycopg.connect(pg_url, autocommit=True) as other,
    ):
        assert db.lock_holder(other, key, "postgres") is None
        holder.execute("SELECT pg_catalog.pg_advisory_lock(%s, %s)", (db.LOCK_CLASS, key))
        assert db.holds_lock(holder, key) and not db.holds_lock(other, key)
        row = other.execute(
            "SELECT coalesce(pg_catalog.host(client_addr), 'local socket'), backend_start, usename::text, "
            "current_database() FROM pg_catalog.pg_stat_activity WHERE pid = %s",
            (holder.info.backend_pid,),
        ).fetchone()
        assert row is not None
        found = db.lock_holder(other, key, row[3])
        assert found is not None
        assert (found.pid, found.application_name, found.client, found.since, found.user) == (
            holder.info.backend_pid,
            "holder-" + app_db,
            row[0],
            row[1],
            row[2],
        )
        assert db.lock_holder(other, key, row[3] + "_other") is None  # another database's lock
        assert db.lock_holder(other, key ^ 1, row[3]) is None  # another key
        waits: list[int] = []
        with pytest.raises(LockTimeout) as refused:
            db.acquire_lock(other, key, row[3], timeout=0.3, on_wait=lambda h, left: waits.append(h.pid if h else 0))
        assert waits == [holder.info.backend_pid]
        assert refused.value.message.startswith(f"could not take the migration lock for {row[3]!r} within 0.3s; ")
        assert refused.value.message.endswith(f"held by {found.describe()}")
        assert not db.holds_lock(other, key)
        db.release_lock(holder, key)
        assert not db.holds_lock(holder, key)
        db.acquire_lock(other, key, row[3], timeout=30, on_wait=lambda h, left: None)
        assert db.holds_lock(other, key)
        db.release_lock(other, key)
        assert not db.holds_lock(other, key)


def test_the_timeout_names_the_holder_or_says_it_has_since_ended() -> None:
    """The LockTimeout's message when the last look found the holder, and when the holder ended
    between the last failed try and that look (the race acquire_lock cannot stage on demand)."""
    from datetime import datetime, timezone

    from dbos_migrate.engine import database as db
    from dbos_migrate.errors import LockTimeout
    from dbos_migrate.model import LockHolder

    hint = (
        "wait for that run to finish, raise --lock-timeout, or end the holder's session "
        "(SELECT pg_terminate_backend(pid)) if it is stuck"
    )
    gone = db.lock_timed_out("app_db", 1.92006, None)
    assert isinstance(gone, LockTimeout)
    assert (
        gone.message
        == "could not take the migration lock for 'app_db' within 2s; held by a session that has since ended"
    )
    assert gone.hint == hint
    holder = LockHolder(4242, "deploy", "10.0.0.7", datetime(2026, 1, 2, 3, 4, 5, tzinfo=timezone.utc), "ops")
    named = db.lock_timed_out("app_db", 0.3, holder)
    assert named.message == (
        "could not take the migration lock for 'app_db' within 0.3s; "
        "held by deploy, pid 4242, user ops, from 10.0.0.7, since 2026-01-02 03:04:05 UTC"
    )
    assert named.hint == hint


def test_a_held_lock_is_reported_while_waiting_and_named_on_timeout(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """`up` while another session holds the app database's lock: a WaitingForLock event names the
    holder and the time left (the sink then releases the lock, and the run goes on); with
    --lock-timeout 0 the LockTimeout names the app database and the holder."""
    from pgharness import with_dbname

    from dbos_migrate.engine import database as db
    from dbos_migrate.errors import LockTimeout
    from dbos_migrate.events import LockAcquired, WaitingForLock

    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    options = verbs.UpOptions(config=str(cfg), db_url=pg_url, system_db="skip", lock_timeout=300)
    assert verbs.up(InMemoryContext({"PATH": os.environ["PATH"]}), options, lambda e: None).ok
    key = db.lock_key(app_db)
    with psycopg.connect(with_dbname(pg_url, app_db), autocommit=True, application_name="holder") as holder:
        holder.execute("SELECT pg_catalog.pg_advisory_lock(%s, %s)", (db.LOCK_CLASS, key))
        pid = holder.info.backend_pid
        refused = verbs.up(
            InMemoryContext({"PATH": os.environ["PATH"]}), dataclasses.replace(options, lock_timeout=0), lambda e: None
        )
        assert isinstance(refused.error, LockTimeout) and refused.commands == []
        assert refused.error.message.startswith(f"could not take the migration lock for {app_db!r} within 0s; ")
        assert f"held by holder, pid {pid}," in refused.error.message
        assert refused.error.hint == (
            "wait for that run to finish, raise --lock-timeout, or end the holder's session "
            "(SELECT pg_terminate_backend(pid)) if it is stuck"
        )
        events: list[Event] = []

        def sink(event: Event) -> None:
            events.append(event)
            if isinstance(event, WaitingForLock):  # the holder finishes once the waiter has said so
                holder.execute("SELECT pg_catalog.pg_advisory_unlock(%s, %s)", (db.LOCK_CLASS, key))

        before = time.monotonic()
        report = verbs.up(InMemoryContext({"PATH": os.environ["PATH"]}), options, sink)
        spent = time.monotonic() - before
    assert report.ok, report.error
    waits = [e for e in events if isinstance(e, WaitingForLock)]
    assert len(waits) == 1 and waits[0].holder is not None, events
    assert waits[0].holder.pid == pid and waits[0].holder.application_name == "holder"
    assert 0 < waits[0].seconds_left <= 300
    (acquired,) = [e for e in events if isinstance(e, LockAcquired)]
    assert 0 <= acquired.waited_s <= spent  # the wait, measured on the context's clock


def test_a_driver_error_while_taking_the_lock_becomes_a_database_error(pg_url: str, app_db: str) -> None:
    """A psycopg error in take_lock (here: its session is gone) is classified, with where it happened."""
    from types import SimpleNamespace

    from dbos_migrate.engine import database as db
    from dbos_migrate.engine import frame
    from dbos_migrate.engine.scrub import Scrubber
    from dbos_migrate.errors import DatabaseError

    conn = psycopg.connect(pg_url, autocommit=True)
    conn.close()
    ctx = InMemoryContext({})
    run: Any = SimpleNamespace(ctx=ctx, scrub=Scrubber(), emit=lambda e: None)
    with pytest.raises(DatabaseError) as failed:
        frame.take_lock(run, conn, db.lock_key(app_db), app_db, ctx.clock() + 30)
    assert failed.value.message == "taking the migration lock: the connection is closed"


@pytest.mark.parametrize("during", [None, "migrate 1"])
def test_verify_lock_stops_the_run_when_the_lock_or_its_session_is_gone(during: str | None, pg_url: str) -> None:
    """verify_lock passes while the session holds the lock; a session without it, or a dead one,
    stops the run, saying which (and, after a command, that another run may have overlapped)."""
    from dbos_migrate.engine import database as db
    from dbos_migrate.engine.scrub import Scrubber
    from dbos_migrate.errors import DatabaseError

    key = db.lock_key("verify-" + uuid.uuid4().hex)
    hint = "check the server; rerun when it is back (migrations must be idempotent or resumable)"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("SELECT pg_catalog.pg_advisory_lock(%s, %s)", (db.LOCK_CLASS, key))
        db.verify_lock(conn, key, Scrubber(), during=during)  # held: nothing to say
        db.release_lock(conn, key)
        reasons = ["its session no longer holds it"]
        with pytest.raises(DatabaseError) as lost:
            db.verify_lock(conn, key, Scrubber(), during=during)
        errors = [lost.value]
    with pytest.raises(DatabaseError) as failed:
        db.verify_lock(conn, key, Scrubber(), during=during)  # the connection is closed now
    errors.append(failed.value)
    reasons.append("its connection failed (the connection is closed)")
    for error, reason in zip(errors, reasons, strict=True):
        if during is None:
            assert type(error) is db.ConnectionLost
            assert error.message == f"the migration lock was lost: {reason}; no further command was started"
            assert error.hint == hint
        else:
            assert type(error) is db.LockLost
            assert error.message == (
                f"the migration lock was lost while {during} ran: {reason}; another run may have overlapped; "
                "no further command was started"
            )
            assert error.hint == hint + "; check what the other run did (dbos-migrate history)"


def test_lock_keys_are_stable_across_versions() -> None:
    """Two versions of the tool running at once must agree on the key (docs/reliability.md)."""
    from dbos_migrate.engine import database as db

    assert (db.lock_key("app"), db.lock_key("myapp_db")) == (561172188, 1440968267)


def test_release_wakes_the_waiters_on_the_lock_channel(pg_url: str, app_db: str) -> None:
    """release_lock unlocks and notifies the channel the waiters LISTEN on."""
    from dbos_migrate.engine import database as db

    key = db.lock_key(app_db)
    with psycopg.connect(pg_url, autocommit=True) as conn, psycopg.connect(pg_url, autocommit=True) as waiter:
        waiter.execute(f'LISTEN "dbos_migrate_lock_{key}"')
        conn.execute("SELECT pg_catalog.pg_advisory_lock(%s, %s)", (db.LOCK_CLASS, key))
        db.release_lock(conn, key)
        assert not db.holds_lock(conn, key)
        # Waits for the condition (a notification), not for a time: 60 s is only a bound for a broken server.
        heard = [n.channel for n in waiter.notifies(timeout=60, stop_after=1)]
        assert heard == [f"dbos_migrate_lock_{key}"]


class _SteppedClock:
    """time.monotonic for acquire_lock in another thread, in lock step with the test: each call
    waits until the test answers it with a time. Between two calls the waiter does one turn of
    its loop, so whatever it reported for one answer is known when the next call arrives."""

    def __init__(self) -> None:
        import queue

        self.calls: queue.Queue[None] = queue.Queue()
        self.answers: queue.Queue[float] = queue.Queue()

    def monotonic(self) -> float:
        self.calls.put(None)
        return self.answers.get(timeout=60)

    def answer(self, now: float) -> None:
        """Wait for the waiter's next call (60 s bounds a broken test, it is not a timing), answer `now`."""
        self.calls.get(timeout=60)
        self.answers.put(now)

    def called_again(self, thread: Any) -> bool:
        """Wait until the waiter's thread ends (False) or it calls the clock once more (True)."""
        bound = time.monotonic() + 60
        while thread.is_alive() and self.calls.empty() and time.monotonic() < bound:
            thread.join(timeout=0.01)
        return not self.calls.empty()


def test_a_waiter_names_a_new_holder_once_five_seconds_passed_and_never_the_same_twice(
    pg_url: str, app_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While it waits, acquire_lock looks up the holder at first and then once more than 5 s
    have passed since its last look (on its clock, driven here step by step), and reports a
    holder only when it differs from the last one reported, with the time left."""
    import threading
    from types import SimpleNamespace

    from dbos_migrate.engine import database as db

    clock = _SteppedClock()
    monkeypatch.setattr(db, "time", SimpleNamespace(monotonic=clock.monotonic))
    key = db.lock_key(app_db)
    reports: list[tuple[int, float]] = []
    failed: list[BaseException] = []
    with (
        psycopg.connect(pg_url, autocommit=True) as first,
        psycopg.connect(pg_url, autocommit=True) as second,
        psycopg.connect(pg_url, autocommit=True) as waiter,
    ):
        first.execute("SELECT pg_catalog.pg_advisory_lock(%s, %s)", (db.LOCK_CLASS, key))

        def wait() -> None:
            try:
                db.acquire_lock(
                    waiter,
                    key,
                    "postgres",
                    timeout=300,
                    on_wait=lambda h, left: reports.append((h.pid if h else 0, left)),
                )
            except BaseException as exc:  # checked in the test's thread below
                failed.append(exc)

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        a, b = first.info.backend_pid, second.info.backend_pid
        clock.answer(1.0)  # the deadline: 301 (a clock that starts near 0, as right after boot)
        clock.answer(1.0)  # the first wait: the holder is looked up and reported
        clock.answer(1.0)
        assert reports == [(a, 300.0)]
        clock.answer(6.5)  # looked up again: the same holder is not reported again
        clock.answer(6.5)
        assert reports == [(a, 300.0)]
        # The waiter is stopped in its clock: the lock changes hands without it trying meanwhile.
        clock.calls.get(timeout=60)
        db.release_lock(first, key)
        second.execute("SELECT pg_catalog.pg_advisory_lock(%s, %s)", (db.LOCK_CLASS, key))
        clock.answers.put(6.5)
        clock.answer(11.5)  # exactly 5 s after the last look: not yet
        clock.answer(12.0)  # more than 5 s: looked up, and the new holder is reported
        clock.calls.get(timeout=60)
        assert reports == [(a, 300.0), (b, 289.0)]
        db.release_lock(second, key)
        clock.answers.put(12.0)
        thread.join(timeout=60)
        assert not thread.is_alive() and not failed, failed
        assert db.holds_lock(waiter, key)
        db.release_lock(waiter, key)


def test_a_waiter_pauses_a_growing_jittered_while_and_never_past_its_deadline(
    pg_url: str, app_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between two tries a waiter pauses on its LISTEN connection, returning at the first
    notification: the pause starts at 5 ms, grows by half each turn up to a quarter second, is
    jittered by 0.5 to 1.5, and never outlasts the deadline (at least 1 ms). The clock is driven
    step by step and the jitter is fixed at its low end; what the waiter asks of the connection
    is recorded (the wait itself is real)."""
    import threading
    from types import SimpleNamespace

    from dbos_migrate.engine import database as db
    from dbos_migrate.errors import LockTimeout

    clock = _SteppedClock()
    jitters: list[tuple[float, float]] = []

    def uniform(low: float, high: float) -> float:
        jitters.append((low, high))
        return low

    monkeypatch.setattr(db, "time", SimpleNamespace(monotonic=clock.monotonic))
    monkeypatch.setattr(db, "random", SimpleNamespace(uniform=uniform))
    key = db.lock_key(app_db)
    pauses: list[tuple[float, object]] = []
    failed: list[BaseException] = []
    with psycopg.connect(pg_url, autocommit=True) as holder, psycopg.connect(pg_url, autocommit=True) as waiter:
        holder.execute("SELECT pg_catalog.pg_advisory_lock(%s, %s)", (db.LOCK_CLASS, key))
        notifies = waiter.notifies

        def recording(*, timeout: float, stop_after: object = "unset") -> Any:
            pauses.append((timeout, stop_after))
            return notifies(timeout=timeout, stop_after=1 if stop_after == "unset" else stop_after)  # type: ignore[arg-type]

        monkeypatch.setattr(waiter, "notifies", recording)

        def wait() -> None:
            try:
                db.acquire_lock(waiter, key, "postgres", timeout=300, on_wait=lambda h, left: None)
            except BaseException as exc:  # checked in the test's thread below
                failed.append(exc)

        thread = threading.Thread(target=wait, daemon=True)
        thread.start()
        clock.answer(1000.0)  # the deadline: 1300
        for _ in range(12):
            clock.answer(1000.0)
        clock.answer(1299.9999)  # a tenth of a millisecond left: the pause is 1 ms
        clock.answer(1300.0)  # the deadline itself: the wait is over
        assert not clock.called_again(thread) and not thread.is_alive()
    delays = [0.005]
    while len(delays) < 12:
        delays.append(min(delays[-1] * 1.5, 0.25))
    assert delays[-1] == 0.25 and delays[-3] < 0.25
    assert [p[1] for p in pauses] == [1] * 13
    assert [p[0] for p in pauses] == pytest.approx([d * 0.5 for d in delays] + [0.001])
    assert jitters == [(0.5, 1.5)] * 13
    assert len(failed) == 1 and isinstance(failed[0], LockTimeout), failed


def test_release_on_a_dead_session_is_silent(pg_url: str, app_db: str) -> None:
    """The lock's session ended under it (the server freed the lock): release_lock must not raise."""
    from dbos_migrate.engine import database as db

    key = db.lock_key(app_db)
    conn = psycopg.connect(pg_url, autocommit=True)
    with psycopg.connect(pg_url, autocommit=True) as admin:
        # With a timeout, pg_terminate_backend returns once the session has ended (PostgreSQL 14+).
        admin.execute("SELECT pg_catalog.pg_terminate_backend(%s, 30000)", (conn.info.backend_pid,))
    assert not conn.closed  # psycopg learns of it only on the next statement
    db.release_lock(conn, key)
    conn.close()


def test_a_waiter_listens_while_it_waits_and_tries_first_once(pg_url: str, app_db: str) -> None:
    """acquire_lock on a held lock: it LISTENs on the lock's channel while waiting (so a release
    wakes it at once), calls on_first_attempt exactly once, and stops listening once it holds the lock."""
    from dbos_migrate.engine import database as db

    key = db.lock_key(app_db)
    channel = f"dbos_migrate_lock_{key}"
    with psycopg.connect(pg_url, autocommit=True) as holder, psycopg.connect(pg_url, autocommit=True) as waiter:
        holder.execute("SELECT pg_catalog.pg_advisory_lock(%s, %s)", (db.LOCK_CLASS, key))
        firsts: list[int] = []
        listening: list[list[str]] = []

        def on_wait(h: object, left: float) -> None:
            listening.append([r[0] for r in waiter.execute("SELECT pg_catalog.pg_listening_channels()")])
            db.release_lock(holder, key)  # the holder finishes once the waiter waits

        db.acquire_lock(
            waiter, key, "postgres", timeout=300, on_wait=on_wait, on_first_attempt=lambda: firsts.append(1)
        )
        assert db.holds_lock(waiter, key) and firsts == [1]
        assert listening == [[channel]]
        assert [r[0] for r in waiter.execute("SELECT pg_catalog.pg_listening_channels()")] == []
        db.release_lock(waiter, key)
