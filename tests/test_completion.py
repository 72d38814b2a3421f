"""Shell completion: typer's --show-completion/--install-completion, and the completion
protocol the shell's script drives, complete commands and options (docs/behaviour.md)."""

from __future__ import annotations

from pgharness import invoke


def test_show_completion_prints_the_script_for_a_shell() -> None:
    """The shell is named, not detected: typer detects it from the process's ancestors, and a
    test run started by a non-shell (a scheduler, bench/repeat_suite.py) has none."""
    result = invoke("--show-completion", "bash", env={"_TYPER_COMPLETE_TEST_DISABLE_SHELL_DETECTION": "1"})
    assert result.returncode == 0 and "_DBOS_MIGRATE_COMPLETE=complete_bash" in result.stdout, result.stderr
    assert "--install-completion" in invoke("--help").stdout


def test_the_completion_protocol_completes_commands_and_options() -> None:
    env = {"_DBOS_MIGRATE_COMPLETE": "complete_bash", "COMP_WORDS": "dbos-migrate va", "COMP_CWORD": "1"}
    result = invoke(env=env)
    assert result.returncode == 0 and result.stdout.split() == ["validate"], result.stderr
    env.update(COMP_WORDS="dbos-migrate up --lock", COMP_CWORD="2")
    assert invoke(env=env).stdout.split() == ["--lock-timeout"]
