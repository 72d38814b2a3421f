"""The migration lock under concurrency: runs never overlap, the database is created once."""

from __future__ import annotations

import json
import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import psycopg
from helpers import db_exists, history_rows, write_config
from pgharness import run_cli, with_dbname

# mkdir is atomic: if the directory already exists, another run's command is inside its
# critical section right now, so an overlap is recorded. No timing assumption is made: a
# correct lock passes however the runs are scheduled. The sleep is no synchronisation; it
# only widens the window a broken lock would need to show an overlap (see the docstrings).
CRITICAL = 'mkdir "$MARK_DIR/busy" 2>/dev/null || echo overlap >> "$MARK_DIR/overlaps"; sleep 0.05; echo ran >> "$MARK_DIR/runs"; rmdir "$MARK_DIR/busy"'


def _concurrent_up(cfg: Path, url: str, n: int, mark: Path) -> list[subprocess.CompletedProcess[str]]:
    env: dict[str, str | None] = {"MARK_DIR": str(mark)}
    with ThreadPoolExecutor(max_workers=n) as pool:
        futures = [
            pool.submit(run_cli, "up", "-c", cfg, "-D", url, "--output", "json", env=env, timeout=300) for _ in range(n)
        ]
        return [f.result() for f in futures]


def test_concurrent_runs_on_a_fresh_instance_never_overlap(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """A stress test: its pass does not depend on timing, but catching a broken lock does, and
    cannot be made not to. An overlap is two commands inside CRITICAL at once; a command that
    waited for a second entrant would wait for what a correct lock never lets happen, so only
    a pause can end it: CRITICAL's 0.05 s sleep keeps the window open. The deterministic
    proofs of the lock are test_up_and_down_share_the_lock's hand-over (a run shown waiting
    while another holds) and test_verbs_inprocess.py's lock order test."""
    mark = tmp_path / "mark"
    mark.mkdir()
    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[CRITICAL, CRITICAL])
    results = _concurrent_up(cfg, pg_url, 12, mark)
    for r in results:
        assert r.returncode == 0, r.stderr
    docs = [json.loads(r.stdout) for r in results]
    assert sum(1 for d in docs if d["created"]) == 1, "the database must be created exactly once"
    assert not (mark / "overlaps").exists(), "two runs' commands overlapped"
    assert (mark / "runs").read_text().count("ran") == 24
    assert db_exists(pg_url, app_db)
    assert len(history_rows(pg_url, app_db)) == 24


def _hand_over(
    tmp_path: Path, pg_url: str, app_db: str, env: dict[str, str | None], holder_verb: str, waiter_verb: str
) -> None:
    """`holder_verb` holds the lock (its command waits for the test); `waiter_verb` must report
    waiting for it and run nothing until the holder is let go."""
    from test_reliability import Running

    mark = Path(str(env["MARK_DIR"]))
    hold = (
        'touch "$MARK_DIR/held"; while [ ! -e "$MARK_DIR/go" ]; do sleep 0.02; done; rm "$MARK_DIR/held" "$MARK_DIR/go"'
    )
    held = write_config(tmp_path / holder_verb, app_db_name=app_db, migrate=[hold], rollback=[hold])
    quick = f'echo "{waiter_verb}" >> "$MARK_DIR/ran"'
    other = write_config(tmp_path / waiter_verb, app_db_name=app_db, migrate=[quick], rollback=[quick])
    holder = Running(tmp_path / holder_verb, [holder_verb, "-c", held, "-D", pg_url], env=env)
    waiter: Running | None = None
    try:
        holder.wait_for(lambda: (mark / "held").exists(), f"{holder_verb} to hold the lock")
        waiter = Running(tmp_path / waiter_verb, [waiter_verb, "-c", other, "-D", pg_url], env=env)
        waiting = waiter
        waiter.wait_for(lambda: "waiting for the migration lock" in waiting.stdout, f"{waiter_verb} to wait")
        assert not (mark / "ran").exists()  # nothing of the waiter ran while the lock was held
        (mark / "go").touch()
        assert holder.wait() == 0, holder.output()
        assert waiter.wait() == 0, waiter.output()
        assert (mark / "ran").read_text().split() == [waiter_verb]
        (mark / "ran").unlink()
    finally:
        for run in (holder, waiter):
            if run is not None and run.proc.poll() is None:
                run.proc.kill()
                run.proc.wait()


def test_up_and_down_share_the_lock(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """Deterministic first: while `up` holds the lock (its command waits for the test), `down`
    reports waiting for it and runs nothing, and the other way round. Then a stress mix of
    both verbs, whose overlap check depends on timing only to catch a broken lock (see
    test_concurrent_runs_on_a_fresh_instance_never_overlap)."""
    mark = tmp_path / "mark"
    mark.mkdir()
    env: dict[str, str | None] = {"MARK_DIR": str(mark)}  # without it the command would write at /
    _hand_over(tmp_path, pg_url, app_db, env, "up", "down")
    _hand_over(tmp_path, pg_url, app_db, env, "down", "up")

    cfg = write_config(tmp_path, app_db_name=app_db, migrate=[CRITICAL], rollback=[CRITICAL])
    with ThreadPoolExecutor(max_workers=8) as pool:
        futures = [
            pool.submit(run_cli, verb, "-c", cfg, "-D", pg_url, env=env, timeout=300) for verb in ["up", "down"] * 4
        ]
        results = [f.result() for f in futures]
    assert all(r.returncode == 0 for r in results), [r.stderr for r in results]
    assert not (mark / "overlaps").exists()


def test_dead_holder_releases_the_lock_at_once(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """A holder whose session ends (here: terminated, as a killed process's would) frees the lock."""
    from dbos_migrate.engine.database import LOCK_CLASS, lock_key

    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    assert run_cli("up", "-c", cfg, "-D", pg_url).returncode == 0
    holder = psycopg.connect(with_dbname(pg_url, app_db), autocommit=True)
    holder.execute("SELECT pg_advisory_lock(%s, %s)", (LOCK_CLASS, lock_key(app_db)))
    pid = holder.info.backend_pid
    with psycopg.connect(pg_url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s, 10000)", (pid,))  # waits until it is gone
    holder.close()
    # --lock-timeout 0: only an immediately free lock is good enough.
    result = run_cli("up", "-c", cfg, "-D", pg_url, "--lock-timeout", "0")
    assert result.returncode == 0, result.stderr


def test_release_notifies_waiters(tmp_path: Path, pg_url: str, app_db: str) -> None:
    """Waiters LISTEN on the lock's channel; the holder's release NOTIFYs them (hand-over in one round trip)."""
    from dbos_migrate.engine.database import lock_key

    cfg = write_config(tmp_path, app_db_name=app_db, migrate=["true"])
    assert run_cli("up", "-c", cfg, "-D", pg_url).returncode == 0
    channel = f"dbos_migrate_lock_{lock_key(app_db)}"
    with psycopg.connect(with_dbname(pg_url, app_db), autocommit=True) as listener:
        listener.execute(f'LISTEN "{channel}"')
        assert run_cli("up", "-c", cfg, "-D", pg_url).returncode == 0
        received = [n.channel for n in listener.notifies(timeout=10, stop_after=1)]
    assert received == [channel]
