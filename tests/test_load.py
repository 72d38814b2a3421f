"""The migration lock under load: many runs of one app, many apps at once, a holder SIGKILLed.

Each test starts its own throwaway cluster (a fresh instance: nothing else connects to it) or
uses a fresh app database on the shared server. Like test_reliability.py, nothing here sleeps
and then asserts: overlaps are caught by an atomic mkdir, and every wait is on a condition.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from helpers import db_exists, history_rows, query, write_config
from pgharness import ClusterFactory, run_cli
from test_reliability import (
    LONG,
    Running,
    assert_command_group_gone,
    background_clis,
    sessions_of,
    wait_until,
)

# As in test_lock.py: mkdir is atomic, so a second command inside the critical section at the
# same time records an overlap. The sleep is no synchronisation: it only widens the window a
# broken lock would need to show an overlap (see test_16_concurrent_runs_of_one_app_on_a_fresh_instance).
CRITICAL = (
    'mkdir "$MARK_DIR/busy" 2>/dev/null || echo overlap >> "$MARK_DIR/overlaps"; sleep 0.05; '
    'echo ran >> "$MARK_DIR/runs"; rmdir "$MARK_DIR/busy"'
)


@pytest.fixture
def background() -> Iterator[Callable[..., Running]]:
    yield from background_clis()


def _parallel(
    calls: Sequence[tuple[object, ...]], env: dict[str, str | None] | None = None
) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        futures = [pool.submit(run_cli, *args, env=env, timeout=300) for args in calls]
        return [f.result() for f in futures]


def test_16_concurrent_runs_of_one_app_on_a_fresh_instance(tmp_path: Path, own_cluster: ClusterFactory) -> None:
    """A stress test: its pass does not depend on timing, but catching a broken lock does, and
    cannot be made not to. An overlap is two commands inside CRITICAL at once; a command that
    waited for a second entrant would wait for what a correct lock never lets happen, so only
    a pause can end it: CRITICAL's 0.05 s sleep keeps the window open. A waiter shown waiting
    while a holder holds is proven deterministically by
    test_sigkilled_lock_holder_lets_the_next_run_start and test_lock.py's hand-over."""
    cluster = own_cluster()
    url = cluster.url()
    mark = tmp_path / "mark"
    mark.mkdir()
    cfg = write_config(tmp_path, app_db_name="busy_app", migrate=[CRITICAL, CRITICAL])
    results = _parallel([("up", "-c", cfg, "-D", url, "--output", "json")] * 16, env={"MARK_DIR": str(mark)})

    for r in results:
        assert r.returncode == 0, r.stdout + r.stderr
    docs = [json.loads(r.stdout) for r in results]
    assert sum(1 for d in docs if d["created"]) == 1, "the database must be created exactly once"
    assert not (mark / "overlaps").exists(), "two runs' commands overlapped"
    assert (mark / "runs").read_text().count("ran") == 32
    assert len(history_rows(url, "busy_app")) == 32
    assert len({d["run_id"] for d in docs}) == 16


def test_20_apps_migrate_at_once_on_one_instance(tmp_path: Path, own_cluster: ClusterFactory) -> None:
    cluster = own_cluster()
    url = cluster.url()
    apps = [f"app_{i:02d}" for i in range(20)]
    calls = []
    for app in apps:
        cfg = write_config(
            tmp_path / app,
            app_db_name=app,
            migrate=['echo "$PGDATABASE" > db.txt', "psql -qX -c 'create table orders (id int)'"],
        )
        calls.append(("up", "-c", cfg, "-D", url, "--output", "json"))
    results = _parallel(calls)

    for app, r in zip(apps, results, strict=True):
        assert r.returncode == 0, f"{app}: {r.stdout}{r.stderr}"
        assert json.loads(r.stdout)["created"] is True
        assert db_exists(url, app)
        assert (tmp_path / app / "db.txt").read_text().strip() == app  # each command saw its own app
        assert query(url, "SELECT to_regclass('orders') IS NOT NULL", dbname=app) == [(True,)]
        rows = history_rows(url, app)
        assert [(r["command_index"], r["status"]) for r in rows] == [(1, "succeeded"), (2, "succeeded")]


def test_sigkilled_lock_holder_lets_the_next_run_start(
    tmp_path: Path, pg_url: str, app_db: str, background: Callable[..., Running]
) -> None:
    """A waiting run takes over as soon as the killed holder's session ends; after that, a
    run with --lock-timeout 0 (only an immediately free lock will do) succeeds too."""
    holder_dir = tmp_path / "holder"
    cfg = write_config(holder_dir, app_db_name=app_db, migrate=[LONG, "touch second-ran"])
    holder = background(holder_dir, ["up", "-c", cfg, "-D", pg_url])
    holder.wait_for(lambda: (holder_dir / "started").exists(), "the holder's command to start")

    waiter_dir = tmp_path / "waiter"
    waiter_cfg = write_config(waiter_dir, app_db_name=app_db, migrate=["touch ran"])
    waiter = background(waiter_dir, ["up", "-c", waiter_cfg, "-D", pg_url, "--lock-timeout", "120"])
    waiter.wait_for(lambda: "waiting for the migration lock" in waiter.stdout, "the second run to wait")
    assert f"pid {holder.pid})" in waiter.stdout  # it names the holder
    assert not (waiter_dir / "ran").exists()

    os.kill(holder.pid, signal.SIGKILL)
    assert waiter.wait() == 0, waiter.output()
    assert (waiter_dir / "ran").exists()
    assert_command_group_gone(holder_dir)
    assert not (holder_dir / "second-ran").exists()

    wait_until(lambda: not sessions_of(pg_url, holder.pid), "the killed holder's session to end")
    after = run_cli("up", "-c", waiter_cfg, "-D", pg_url, "--lock-timeout", "0")
    assert after.returncode == 0, after.stdout + after.stderr
