"""The repository's own CI integrations, run the way their hosts run them (docs/ci.md):
the composite GitHub Action's steps with the environment GitHub sets, and the pre-commit
hook through `pre-commit try-repo` on a repository holding a valid and an invalid config."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import yaml
from helpers import write_config
from pgharness import REPO_ROOT

ACTION = REPO_ROOT / "action.yml"
EXPRESSION = re.compile(r"\$\{\{\s*([^}]*?)\s*\}\}")


class Runner:
    """Runs action.yml's steps as GitHub's runner does: `bash --noprofile --norc -eo pipefail`,
    its env with `${{ inputs.* }}` / `${{ github.action_path }}` rendered, GITHUB_PATH honoured."""

    def __init__(self, tmp: Path, workspace: Path) -> None:
        self.spec = yaml.safe_load(ACTION.read_text())
        self.tmp, self.workspace = tmp, workspace
        (tmp / "runner-temp").mkdir()
        self.path_file = tmp / "github_path"
        self.path_file.write_text("")

    def run_step(
        self,
        index: int,
        inputs: dict[str, str],
        extra_env: dict[str, str] | None = None,
        caller_env: dict[str, str] | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`caller_env` is the `env:` of the workflow step that uses the action: the action's
        own step `env:` overrides it, as on GitHub; `extra_env` overrides both."""
        step = self.spec["runs"]["steps"][index]
        assert "${{" not in step["run"], "inputs must reach scripts through env:, never spliced into run:"
        defaults = {name: str(meta.get("default", "")) for name, meta in self.spec["inputs"].items()}
        values = {**defaults, **inputs}

        def render(text: str) -> str:
            def one(match: re.Match[str]) -> str:
                expr = match.group(1)
                if expr.startswith("inputs."):
                    return values[expr[len("inputs.") :]]
                assert expr == "github.action_path", expr
                return str(REPO_ROOT)

            return EXPRESSION.sub(one, text)

        summary = self.tmp / f"summary-{index}-{len(list(self.tmp.iterdir()))}.md"
        summary.write_text("")
        env = {k: v for k, v in os.environ.items() if not k.startswith(("GITHUB_", "DBOS_MIGRATE_"))}
        env.update(
            CI="true",
            GITHUB_ACTIONS="true",
            GITHUB_WORKSPACE=str(self.workspace),
            GITHUB_ACTION_PATH=str(REPO_ROOT),
            GITHUB_STEP_SUMMARY=str(summary),
            GITHUB_PATH=str(self.path_file),
            GITHUB_ENV=str(self.tmp / "github_env"),
            GITHUB_OUTPUT=str(self.tmp / "github_output"),
            RUNNER_TEMP=str(self.tmp / "runner-temp"),
            RUNNER_OS="Linux",
        )
        env.update(caller_env or {})
        env.update({k: render(str(v)) for k, v in step.get("env", {}).items()})
        env.update(extra_env or {})
        added = [p for p in self.path_file.read_text().splitlines() if p]
        env["PATH"] = os.pathsep.join([*reversed(added), env["PATH"]])
        proc = subprocess.run(
            ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]],
            cwd=self.workspace,
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        proc.summary = summary.read_text()  # type: ignore[attr-defined]
        return proc


def test_the_github_action_validates_rehearses_and_migrates(tmp_path: Path, pg_url: str, app_db: str) -> None:
    workspace = tmp_path / "workspace"
    cfg = write_config(workspace, app_db_name=app_db, migrate=["psql -qc 'CREATE TABLE IF NOT EXISTS ci_t(x int)'"])
    (workspace / "bad").mkdir()
    (workspace / "bad" / "dbos-config.yaml").write_text("name: x\ndatabase:\n  migrate: npx knex migrate:latest\n")
    runner = Runner(tmp_path, workspace)
    install = runner.run_step(0, {})
    assert install.returncode == 0, install.stdout + install.stderr

    bad = runner.run_step(1, {"command": "validate", "config": "bad/dbos-config.yaml"})
    assert bad.returncode == 2
    assert re.search(
        r"^::error file=bad/dbos-config\.yaml,line=3,col=\d+::database\.migrate: must be a list",
        bad.stdout,
        re.M,
    )

    plan = runner.run_step(1, {"command": "plan", "database-url": pg_url})
    assert plan.returncode == 0, plan.stdout + plan.stderr
    assert "### dbos-migrate plan" in plan.summary  # type: ignore[attr-defined]

    up = runner.run_step(1, {"command": "up", "database-url": pg_url, "fail-on-breaking": "true"})
    assert up.returncode == 0, up.stdout + up.stderr
    assert "### dbos-migrate up: ✅ succeeded" in up.summary  # type: ignore[attr-defined]
    assert cfg.exists()

    hostile = runner.run_step(1, {"command": "validate; touch pwned", "config": "$(touch pwned2)"})
    assert hostile.returncode == 2
    assert not (workspace / "pwned").exists() and not (workspace / "pwned2").exists()


def test_the_action_passes_only_a_given_database_url(tmp_path: Path) -> None:
    """An empty `database-url` input leaves the caller's step-level DBOS_MIGRATE_DB_URL alone
    (it used to be replaced by ""); a given one wins; the input's copy reaches no process."""
    workspace = tmp_path / "workspace"
    workspace.mkdir()
    stub = tmp_path / "stub-bin"
    stub.mkdir()
    (stub / "dbos-migrate").write_text(
        '#!/bin/sh\nprintf "url=[%s] input=[%s]\\n" "${DBOS_MIGRATE_DB_URL-unset}" "${INPUT_DATABASE_URL-unset}"\n'
    )
    (stub / "dbos-migrate").chmod(0o755)
    runner = Runner(tmp_path, workspace)
    runner.path_file.write_text(f"{stub}\n")
    caller = {"DBOS_MIGRATE_DB_URL": "postgresql://caller@db.example/x"}

    kept = runner.run_step(1, {"command": "validate"}, caller_env=caller)
    assert kept.returncode == 0, kept.stdout + kept.stderr
    assert kept.stdout == "url=[postgresql://caller@db.example/x] input=[unset]\n"

    given = runner.run_step(1, {"command": "validate", "database-url": "postgresql://input@db/x"}, caller_env=caller)
    assert given.stdout == "url=[postgresql://input@db/x] input=[unset]\n"

    neither = runner.run_step(1, {"command": "validate"})
    assert neither.stdout == "url=[unset] input=[unset]\n"


def test_the_pre_commit_hook_through_try_repo(tmp_path: Path) -> None:
    repo = tmp_path / "app-repo"
    write_config(repo / "good", migrate=["alembic upgrade head"])
    (repo / "bad").mkdir()
    (repo / "bad" / "dbos-config.yaml").write_text("name: x\ndatabse: {}\n")
    (repo / "notes.yaml").write_text("not: [a config\n")  # not matched by the hook's files pattern
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(
        PRE_COMMIT_HOME=str(tmp_path / "pre-commit-home"),
        GIT_CONFIG_GLOBAL=str(tmp_path / "gitconfig"),
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@example.com",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@example.com",
    )
    (tmp_path / "gitconfig").write_text(f"[safe]\n\tdirectory = {REPO_ROOT}\n\tdirectory = {repo}\n")

    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=repo, env=env, check=True, capture_output=True, timeout=60)

    git("init", "-q")
    git("add", ".")

    def try_repo() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "pre_commit", "try-repo", str(REPO_ROOT), "dbos-migrate-validate", "--all-files"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
            check=False,
        )

    failing = try_repo()
    assert failing.returncode == 1, failing.stdout + failing.stderr
    assert "bad/dbos-config.yaml:2:1: databse: unknown key" in failing.stdout
    assert "good/dbos-config.yaml: valid" in failing.stdout and "notes.yaml" not in failing.stdout
    (repo / "bad" / "dbos-config.yaml").write_text("name: x\ndatabase: {}\n")
    git("add", ".")
    passing = try_repo()
    assert passing.returncode == 0, passing.stdout + passing.stderr
