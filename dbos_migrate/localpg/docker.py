"""The Docker backend: a container `dbos-migrate-postgres` (`-<port>` appended for ports other
than 5432) from `pgvector/pgvector:pg16`, falling back to `postgres:16`, published on
127.0.0.1 only. The password reaches the container as `-e POSTGRES_PASSWORD` with the value in
the docker client's environment, so it never appears on a command line.

Kept small: it cannot be exercised on machines without an engine.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence

from dbos_migrate.localpg.base import (
    BACKEND_DOCKER,
    DEFAULT_PASSWORD,
    DEFAULT_PORT,
    Backend,
    LocalPostgresError,
    LocalServer,
    server_url,
    wait_until,
)

DOCKER_IMAGES = ("pgvector/pgvector:pg16", "postgres:16")


def docker_available(timeout: float = 3.0) -> bool:
    """Whether a Docker engine answers `docker info` within `timeout` seconds."""
    if shutil.which("docker") is None:
        return False
    try:
        result = subprocess.run(
            ["docker", "info", "--format", "{{.ServerVersion}}"],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return False
    return result.returncode == 0


def container_name(port: int) -> str:
    return "dbos-migrate-postgres" if port == DEFAULT_PORT else f"dbos-migrate-postgres-{port}"


def _docker(
    args: Sequence[str], timeout: float, env: Mapping[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    try:
        return subprocess.run(
            ["docker", *args],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(env) if env is not None else None,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LocalPostgresError(f"docker {args[0]} failed: {exc}") from exc


def _accepts(url: str) -> bool:
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


class DockerBackend(Backend):
    """The container of a port; every method asks the engine, so callers check
    `docker_available()` first."""

    name = BACKEND_DOCKER

    def __init__(self, major: int | None = None) -> None:
        self.major = major

    def images(self) -> tuple[str, ...]:
        """The images to try, in order: DOCKER_IMAGES, or the same two of another major."""
        if self.major is None:
            return DOCKER_IMAGES
        return (f"pgvector/pgvector:pg{self.major}", f"postgres:{self.major}")

    def status(self, port: int) -> LocalServer | None:
        name = container_name(port)
        result = _docker(["inspect", "--format", "{{.State.Running}}", name], timeout=15)
        if result.returncode != 0:
            return None
        running = result.stdout.strip() == "true"
        return LocalServer(port=port, running=running, url=server_url(port), backend=self.name, container=name)

    def stop(self, port: int, timeout: float) -> LocalServer | None:
        state = self.status(port)
        if state is None or not state.running:
            return state
        _docker(["stop", state.container or ""], timeout=timeout + 10)
        return LocalServer(
            port=port,
            running=False,
            url=state.url,
            backend=self.name,
            changed=True,
            container=state.container,
        )

    def start(self, port: int, timeout: float) -> LocalServer:
        state = self.status(port)
        if state is not None and state.running:
            return state
        name = container_name(port)
        if state is not None:
            result = _docker(["start", name], timeout=60)
            if result.returncode != 0:
                raise LocalPostgresError(f"docker start {name} failed: {result.stderr.strip()}")
        else:
            self._run(name, port)
        url = server_url(port)
        if not wait_until(lambda: _accepts(url), timeout):
            raise LocalPostgresError(
                f"the container {name} did not accept connections within {timeout:.0f}s",
                hint=f"docker logs {name}",
            )
        return LocalServer(port=port, running=True, url=url, backend=self.name, changed=True, container=name)

    def _run(self, name: str, port: int) -> None:
        """Create and start the container from the first image that works."""
        env = {**os.environ, "POSTGRES_PASSWORD": DEFAULT_PASSWORD}
        errors = []
        for image in self.images():
            args = [
                "run",
                "-d",
                "--name",
                name,
                "-p",
                f"127.0.0.1:{port}:5432",
                "-e",
                "POSTGRES_PASSWORD",
                image,
            ]
            result = _docker(args, timeout=600, env=env)
            if result.returncode == 0:
                return
            errors.append(f"{image}: {result.stderr.strip()}")
            _docker(["rm", "-f", name], timeout=30)
        raise LocalPostgresError(
            "could not start a PostgreSQL container:\n" + "\n".join(errors),
            hint="check that Docker can pull images, or stop Docker to use local binaries",
        )
