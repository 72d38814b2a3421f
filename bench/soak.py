#!/usr/bin/env python3
"""A bounded chaos soak of `dbos-migrate up`: many runs of a few apps, with faults, on a
throwaway PostgreSQL behind a small TCP proxy on 127.0.0.1. It stops by itself.

Usage::

    nice -n 10 python bench/soak.py                  # 5 minutes, 4 apps, 2 runs per app at a time
    nice -n 10 python bench/soak.py --minutes 15 --apps 6 --seed 7

It prints one summary line (and `--json PATH` writes the same figures):
runs, faults by kind, violations by kind, and the time to recover after instance-wide faults.

* **Where.** A throwaway cluster (`dbos_migrate.localpg.Cluster`, fsync off) in a temporary
  directory, removed at the end; the runs reach it only through the proxy, which listens on
  127.0.0.1 only and can cut every connection at once.
* **The runs.** Each app has two workers that start `dbos-migrate up -o json` one after
  another, so every app always has runs contending for its lock. Each run has one command of
  0.2-1.5 s. Some runs get a small `--command-timeout` (expected exit 124) or a small
  `--lock-timeout` (expected exit 4).
* **The faults**, one every 1.5-4 s, on a random run or on the instance: SIGKILL or SIGTERM of
  the tool, SIGKILL or SIGTERM of the command's process group, an immediate server restart,
  pg_terminate_backend of an app's lock session, idle_session_timeout on an app database
  for a few seconds, a proxy cut of every connection.
* **The violations.**
  - overlap: a command of an app started while another command of that app still ran. Each
    command takes a non-blocking `flock` on a file of its app, held by the whole command (its
    shell and children) and released by the kernel when the last of them is gone, so a dead
    command never looks alive and a live one never looks dead; failing to take it is an overlap;
  - orphan: a command still alive 10 s after its run's tool exited;
  - lost write: a command the JSON document says succeeded that never wrote its end marker;
  - history mismatch: a document with `history_written` not false whose commands are not the
    rows of its run id in dbos_migrate.history;
  - unexpected exit code: outside the codes the run's faults allow
    (none: 0; tool SIGTERM: 143; tool SIGKILL: -9; command killed: 1; restart, lock session
    ended, proxy cut: 3; command timeout: 124; lock timeout: 4; 0 is always allowed);
  - missing JSON: a run not SIGKILLed whose stdout is not exactly one JSON document.
* **Time to recover:** after each restart or proxy cut, the time until a run (of any app)
  that started after the fault succeeds.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import selectors
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common import start_cluster  # noqa: E402

from dbos_migrate.localpg import Cluster  # noqa: E402

PASSWORD = "soak-pw"
ALLOWED = {
    "tool_sigterm": {143},
    "tool_sigkill": {-9},
    "cmd_sigkill": {1},
    "cmd_sigterm": {1},
    "restart": {3},
    "terminate_lock": {3},
    "proxy_cut": {3},
    "idle_session_timeout": {3},
    "command_timeout": {124},
    "lock_timeout": {4},
}
INSTANCE_WIDE = ("restart", "proxy_cut")
COMMAND = (
    'exec 9>>"$SOAK_DIR/{app}.flock"; '
    'flock -n 9 || echo "overlap $SOAK_TOKEN" >> "$SOAK_DIR/violations"; '
    'echo $$ > "$SOAK_DIR/runs/$SOAK_TOKEN.pid"; '
    'echo "start $SOAK_TOKEN" >> "$SOAK_DIR/{app}.log"; '
    "sleep $SOAK_SLEEP; "
    'echo "end $SOAK_TOKEN" >> "$SOAK_DIR/{app}.log"'
)


# ---------------------------------------------------------------------------- the proxy


class Proxy:
    """A TCP proxy on 127.0.0.1 (loopback only) to the cluster; `cut()` drops every connection."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", 0))
        self.listener.listen(128)
        self.port = int(self.listener.getsockname()[1])
        self.pairs: set[tuple[socket.socket, socket.socket]] = set()
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), timeout=5)
                upstream.settimeout(None)
            except OSError:
                client.close()
                continue
            pair = (client, upstream)
            with self.lock:
                self.pairs.add(pair)
            threading.Thread(target=self._pump, args=(pair,), daemon=True).start()

    def _pump(self, pair: tuple[socket.socket, socket.socket]) -> None:
        a, b = pair
        sel = selectors.DefaultSelector()
        sel.register(a, selectors.EVENT_READ, b)
        sel.register(b, selectors.EVENT_READ, a)
        try:
            while True:
                for key, _ in sel.select(1.0):
                    data = key.fileobj.recv(65536)  # type: ignore[union-attr]
                    if not data:
                        return
                    key.data.sendall(data)
                with self.lock:
                    if pair not in self.pairs:
                        return
        except OSError:
            return
        finally:
            sel.close()
            with self.lock:
                self.pairs.discard(pair)
            for s in pair:
                with contextlib.suppress(OSError):
                    s.close()

    def cut(self) -> int:
        with self.lock:
            pairs = list(self.pairs)
            self.pairs.clear()
        for pair in pairs:
            for s in pair:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                    s.close()
        return len(pairs)

    def close(self) -> None:
        self.stopping = True
        self.listener.close()
        self.cut()


# ---------------------------------------------------------------------------- runs


@dataclass
class Run:
    app: str
    token: str
    proc: subprocess.Popen[bytes]
    started: float
    expected: set[str] = field(default_factory=set)  # fault kinds this run met
    ended: float | None = None
    code: int | None = None
    stdout: str = ""


class Soak:
    def __init__(self, args: argparse.Namespace, base: Path, cluster: Cluster, proxy: Proxy) -> None:
        self.args = args
        self.base = base
        self.cluster = cluster
        self.proxy = proxy
        self.rng = random.Random(args.seed)
        self.lock = threading.Lock()
        self.live: list[Run] = []
        self.done: list[Run] = []
        self.faults: Counter[str] = Counter()
        self.violations: Counter[str] = Counter()
        self.examples: dict[str, str] = {}
        self.recover: list[float] = []
        self.pending_recover: list[float] = []
        self.deadline = time.monotonic() + args.minutes * 60
        self.counter = 0
        self.apps = [f"soak_app_{i}" for i in range(args.apps)]
        (base / "runs").mkdir()
        self.cli = [sys.executable, "-m", "dbos_migrate"]
        for app in self.apps:
            cfg = base / app / "dbos-config.yaml"
            cfg.parent.mkdir()
            cfg.write_text(
                f"name: {app}\ndatabase:\n  app_db_name: {app}\n  migrate:\n    - {json.dumps(COMMAND.format(app=app))}\n"
            )

    def url(self, port: int) -> str:
        return f"postgresql://postgres:{PASSWORD}@127.0.0.1:{port}/postgres"

    def violation(self, kind: str, detail: str) -> None:
        with self.lock:
            self.violations[kind] += 1
            self.examples.setdefault(kind, detail)

    # -- one worker per app slot

    def worker(self, app: str) -> None:
        while time.monotonic() < self.deadline:
            with self.lock:
                self.counter += 1
                token = f"{app}-{self.counter}"
            expected: set[str] = set()
            extra: list[str] = []
            lock_timeout = "60"
            roll = self.rng.random()
            sleep = self.rng.uniform(0.2, 1.5)
            if roll < 0.05:
                extra += ["--command-timeout", "0.3"]
                sleep = 3.0
                expected.add("command_timeout")
            elif roll < 0.10:
                lock_timeout = "0.2"
                expected.add("lock_timeout")
            env = dict(
                os.environ,
                SOAK_DIR=str(self.base),
                SOAK_TOKEN=token,
                SOAK_SLEEP=f"{sleep:.2f}",
                PYTHONPATH=str(ROOT),
                DBOS_MIGRATE_LEASE_TTL=str(self.args.lease_ttl),
            )
            argv = [
                *self.cli,
                "up",
                "-o",
                "json",
                "-D",
                self.url(self.proxy.port),
                "--system-db",
                "skip",
                "--wait",
                "30",
                "--kill-after",
                "1",
                "--lock-timeout",
                lock_timeout,
                *extra,
            ]
            proc = subprocess.Popen(
                argv,
                cwd=self.base / app,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                start_new_session=True,
            )
            run = Run(app, token, proc, time.monotonic(), expected)
            with self.lock:
                self.live.append(run)
            out, _ = proc.communicate()
            with self.lock:
                self.live.remove(run)
                run.ended, run.code, run.stdout = (
                    time.monotonic(),
                    proc.returncode,
                    out.decode(errors="replace"),
                )
                self.done.append(run)
            self.judge(run)

    def judge(self, run: Run) -> None:
        allowed = {0}
        for kind in run.expected:
            allowed |= ALLOWED[kind]
        if run.code not in allowed:
            self.violation("unexpected_exit_code", f"{run.token}: exit {run.code} with faults {sorted(run.expected)}")
        doc: dict[str, Any] | None = None
        if run.code != -9:
            try:
                doc = json.loads(run.stdout)
            except ValueError:
                self.violation("missing_json", f"{run.token}: exit {run.code}, stdout {run.stdout[:80]!r}")
        pidfile = self.base / "runs" / f"{run.token}.pid"
        if pidfile.exists():
            pid = int(pidfile.read_text().strip() or 0)
            limit = time.monotonic() + 10
            while _alive(pid) and time.monotonic() < limit:
                time.sleep(0.1)
            if _alive(pid):
                self.violation("orphan", f"{run.token}: command pid {pid} alive after the run")
                with contextlib.suppress(OSError):
                    os.killpg(pid, signal.SIGKILL)
        if doc is None:
            return
        if doc.get("ok") and run.code == 0 and not run.expected & {"tool_sigterm"}:
            with self.lock:
                now = time.monotonic()
                for fault_at in list(self.pending_recover):
                    if run.started > fault_at:
                        self.recover.append(now - fault_at)
                        self.pending_recover.remove(fault_at)
        log = (self.base / f"{run.app}.log").read_text() if (self.base / f"{run.app}.log").exists() else ""
        for command in doc.get("commands", []):
            if command.get("status") == "succeeded" and f"end {run.token}\n" not in log:
                self.violation("lost_write", f"{run.token}: succeeded without its end marker")
        if doc.get("history_written") is not False and doc.get("run_id"):
            rows = self.history(run.app, doc["run_id"])
            wanted = [c.get("status") for c in doc.get("commands", [])]
            if rows is not None and rows != wanted:
                self.violation("history_mismatch", f"{run.token}: document {wanted}, history {rows}")

    def history(self, app: str, run_id: str) -> list[str] | None:
        import psycopg

        for _ in range(30):
            try:
                with psycopg.connect(
                    self.url(self.cluster.port).replace("/postgres", f"/{app}"), connect_timeout=5
                ) as conn:
                    rows = conn.execute(
                        "SELECT status FROM dbos_migrate.history WHERE run_id::text = %s ORDER BY command_index",
                        (run_id,),
                    ).fetchall()
                    return [str(r[0]) for r in rows]
            except psycopg.Error:
                time.sleep(1)
        return None

    # -- faults

    def fault_loop(self) -> None:
        kinds = [
            "tool_sigkill",
            "tool_sigterm",
            "cmd_sigkill",
            "cmd_sigterm",
            "restart",
            "terminate_lock",
            "idle_session_timeout",
            "proxy_cut",
        ]
        while time.monotonic() < self.deadline - 5:
            time.sleep(self.rng.uniform(1.5, 4.0))
            kind = self.rng.choice(kinds)
            try:
                if self.inject(kind):
                    with self.lock:
                        self.faults[kind] += 1
            except Exception as exc:  # a fault that could not be injected is not a finding
                print(f"soak: fault {kind} not injected: {exc}", file=sys.stderr)

    def _running_command(self) -> Run | None:
        with self.lock:
            candidates = [r for r in self.live if (self.base / "runs" / f"{r.token}.pid").exists()]
        return self.rng.choice(candidates) if candidates else None

    def inject(self, kind: str) -> bool:
        if kind in ("tool_sigkill", "tool_sigterm", "cmd_sigkill", "cmd_sigterm"):
            run = self._running_command()
            if run is None:
                return False
            sig = signal.SIGKILL if kind.endswith("sigkill") else signal.SIGTERM
            run.expected.add(kind)
            if kind.startswith("tool"):
                run.proc.send_signal(sig)
            else:
                pid = int((self.base / "runs" / f"{run.token}.pid").read_text().strip() or 0)
                with contextlib.suppress(OSError):
                    os.killpg(pid, sig)
            return True
        if kind in INSTANCE_WIDE:
            with self.lock:
                for run in self.live:
                    run.expected.add(kind)
                self.pending_recover.append(time.monotonic())
            if kind == "restart":
                self.cluster.stop(mode="immediate")
                self.cluster.start()
            else:
                self.proxy.cut()
            return True
        import psycopg

        app = self.rng.choice(self.apps)
        with psycopg.connect(self.url(self.cluster.port), autocommit=True, connect_timeout=5) as conn:
            if kind == "terminate_lock":  # the lock session of an app whose lock is held now
                held = conn.execute(
                    """SELECT d.datname, l.pid FROM pg_locks l JOIN pg_database d ON d.oid = l.database
                        WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2
                          AND d.datname LIKE 'soak\\_app\\_%'"""
                ).fetchall()
                if not held:
                    return False
                app, pid = self.rng.choice(held)
                with self.lock:
                    for run in self.live:
                        if run.app == app:
                            run.expected.add(kind)
                conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
                return True
            # idle_session_timeout on the app database for a few seconds: sessions that do not
            # protect themselves end when idle for 300 ms
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (app,)).fetchone():
                return False
            with self.lock:
                for run in self.live:
                    if run.app == app:
                        run.expected.add(kind)
            conn.execute(f'ALTER DATABASE "{app}" SET idle_session_timeout = 300')
            time.sleep(self.rng.uniform(2, 5))
            with self.lock:
                for run in self.live:
                    if run.app == app:
                        run.expected.add(kind)
            conn.execute(f'ALTER DATABASE "{app}" RESET idle_session_timeout')
            return True

    # -- the whole soak

    def run(self) -> dict[str, Any]:
        started = time.monotonic()
        workers = [
            threading.Thread(target=self.worker, args=(app,), daemon=True)
            for app in self.apps
            for _ in range(self.args.per_app)
        ]
        for thread in workers:
            thread.start()
        faults = threading.Thread(target=self.fault_loop, daemon=True)
        faults.start()
        faults.join()
        for thread in workers:
            thread.join(timeout=300)
        overlaps = (self.base / "violations").read_text().split("\n") if (self.base / "violations").exists() else []
        for line in filter(None, overlaps):
            self.violation("overlap", line)
        codes = Counter(str(r.code) for r in self.done)
        durations = [r.ended - r.started for r in self.done if r.ended is not None]
        return {
            "minutes": round((time.monotonic() - started) / 60, 1),
            "runs": len(self.done),
            "apps": len(self.apps),
            "exit_codes": dict(sorted(codes.items())),
            "run_s": {
                "median": round(statistics.median(durations), 2) if durations else None,
                "max": round(max(durations), 2) if durations else None,
            },
            "faults": dict(sorted(self.faults.items())),
            "violations": {
                k: self.violations.get(k, 0)
                for k in (
                    "overlap",
                    "orphan",
                    "lost_write",
                    "history_mismatch",
                    "unexpected_exit_code",
                    "missing_json",
                )
            },
            "recover_s": {
                "count": len(self.recover),
                "median": round(statistics.median(self.recover), 2) if self.recover else None,
                "max": round(max(self.recover), 2) if self.recover else None,
            },
            "examples": self.examples,
        }


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state not in ("Z", "X")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--apps", type=int, default=4)
    parser.add_argument("--per-app", type=int, default=2, help="runs of each app at a time")
    parser.add_argument("--lease-ttl", type=float, default=6.0)
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--json", metavar="PATH")
    parser.add_argument("--tmpdir", default="/tmp" if os.path.isdir("/tmp") else None)
    args = parser.parse_args()
    # Under the system temp dir: the server's own user (when we are root) must reach its data.
    base = Path(tempfile.mkdtemp(prefix="dbos-migrate-soak-", dir=args.tmpdir))
    os.chmod(base, 0o755)
    cluster = None
    proxy = None
    try:
        cluster = start_cluster(base / "data", PASSWORD, "soak", {"fsync": False, "max_connections": 200})
        proxy = Proxy(cluster.port)
        work = base / "work"
        work.mkdir()
        os.chmod(work, 0o777)
        result = Soak(args, work, cluster, proxy).run()
        result["seed"] = args.seed
    finally:
        if proxy is not None:
            proxy.close()
        if cluster is not None:
            with contextlib.suppress(Exception):
                cluster.remove()
        shutil.rmtree(base, ignore_errors=True)
    v = result["violations"]
    print(
        f"soak: {result['minutes']} min, {result['runs']} runs of {result['apps']} apps (seed {args.seed}); "
        f"exit codes {result['exit_codes']}; run time median {result['run_s']['median']} s, max {result['run_s']['max']} s; faults {sum(result['faults'].values())} {result['faults']}; "
        f"violations {sum(v.values())} {v}; recovered after {result['recover_s']['count']} instance-wide faults "
        f"in median {result['recover_s']['median']} s, max {result['recover_s']['max']} s"
    )
    if result["examples"]:
        print("soak: examples " + json.dumps(result["examples"]))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    return 1 if sum(v.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
