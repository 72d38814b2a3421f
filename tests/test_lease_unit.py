"""The lease's pure parts, in-process (docs/reliability.md, "The lease"): when a held lease
stops a run and what it says, who a lease's holder is, and the table's name. Its waiting,
expiry and renewal against a server are tested end to end in test_lease.py."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from dbos_migrate.engine import lease
from dbos_migrate.engine.scrub import Scrubber


class _Interrupts:
    """What the runner's Interrupts receives from a lease that is lost."""

    def __init__(self) -> None:
        self.stops: list[tuple[str, float]] = []

    def stop(self, reason: str, grace: float) -> None:
        self.stops.append((reason, grace))


def _lease(seconds_left: float, ttl: float = 30.0, grace: float = 60.0) -> tuple[lease.Lease, _Interrupts]:
    interrupts = _Interrupts()
    endpoint: Any = None  # never connected: the threads are not started
    held = lease.Lease(endpoint, Scrubber(), "app", "run-1", ttl, seconds_left, interrupts, grace)  # type: ignore[arg-type]
    return held, interrupts


def test_a_fresh_lease_lets_commands_start() -> None:
    held, interrupts = _lease(seconds_left=30.0)
    held.check()
    held.check(during="migrate 1")
    assert held.held_throughout() and held.lost is None and interrupts.stops == []
    assert held.period == 5.0 and held.grace == 5.0  # renewed every TTL/6; the grace is at most that
    assert _lease(30.0, grace=2.0)[0].grace == 2.0


def test_a_lease_with_less_than_half_its_ttl_left_stops_the_run() -> None:
    held, _ = _lease(seconds_left=14.0)  # under TTL/2 = 15 s: too short to stop a command safely
    with pytest.raises(lease.LeaseLost) as lost:
        held.check()
    assert lost.value.message == (
        "the migration lease was lost (it could not be renewed in time); no further command was started"
    )
    assert lost.value.hint == "check the server and the network; rerun when they are back"
    assert lost.value.exit_code == 3


def test_a_lost_lease_stops_the_command_once_and_says_so() -> None:
    held, interrupts = _lease(seconds_left=30.0)
    held._lose("another run took it over after it expired")
    held._lose("a second reason")
    assert interrupts.stops == [("another run took it over after it expired", 5.0)]
    assert held.lost == "another run took it over after it expired" and not held.held_throughout()
    with pytest.raises(lease.LeaseLost) as lost:
        held.check(during="migrate 1")
    assert lost.value.message == (
        "the migration lease was lost while migrate 1 ran (another run took it over after it expired); the "
        "command was stopped before the lease could expire, so no other run overlapped it; no further command "
        "was started"
    )
    assert lost.value.hint == (
        "check the server and the network; rerun when they are back (migrations must be idempotent or resumable)"
    )


def test_a_process_start_is_its_start_time_and_nothing_once_it_has_exited() -> None:
    """Field 22 of /proc/PID/stat (start time in clock ticks since boot); '' for a zombie or a pid
    that names no process."""
    me = lease.process_start(os.getpid())
    assert me == Path(f"/proc/{os.getpid()}/stat").read_text().rsplit(")", 1)[1].split()[19]
    child = subprocess.Popen(["true"])
    bound = time.monotonic() + 60  # bounds a broken test; the wait is on the state, not a time
    while Path(f"/proc/{child.pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < bound
        time.sleep(0.01)
    assert lease.process_start(child.pid) == ""  # exited, not yet reaped
    child.wait()
    assert lease.process_start(child.pid) == ""  # reaped: the pid names no process


def test_a_holder_is_gone_only_when_its_process_on_this_machine_is() -> None:
    child = subprocess.Popen(["true"])
    child.wait()  # reaped: its pid names no process now
    me = lease.process_start(os.getpid())
    assert me.isdigit() and lease.process_start(child.pid) == ""
    here = lease.host_id()
    assert here == lease.host_id() and here.count(":") >= 1

    def holder(host_id: str, pid: int, start: str) -> lease.Holder:
        return lease.Holder("run-9", "box", pid, host_id, start, True, 10.0)

    assert not holder(here, os.getpid(), me).gone()
    assert holder(here, child.pid, me).gone()
    assert holder(here, os.getpid(), me + "0").gone()  # the pid was reused by another process
    assert not holder("another-machine", child.pid, me).gone()
    assert holder(here, 1, me).describe() == "run run-9 held by box/pid 1"


def test_the_lease_table_is_quoted_in_its_schema() -> None:
    assert lease.table("dbos_migrate") == '"dbos_migrate".lease'
    assert lease.table('od"d') == '"od""d".lease'
