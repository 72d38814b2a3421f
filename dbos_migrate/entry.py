"""The console entry point: the work done before the CLI framework loads.

- `--version` is answered here: deploy scripts and CI probes call it often, and loading
  typer for it would cost five times the interpreter's own start-up.
- `up` and `down` enter the start-up gate (see gate.py) here, keyed by the config file, so
  that concurrent runs of one app queue before any heavy import rather than after.
Everything else goes to `cli.main`.
"""

import os
import sys


def config_path(args: list[str]) -> str:
    """The -c/--config value, else the default; unparseable input is left to typer."""
    for i, arg in enumerate(args):
        if arg in ("-c", "--config") and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith("--config="):
            return arg[len("--config=") :]
        if arg.startswith("-c") and len(arg) > 2 and not arg.startswith("--"):
            return arg[2:]
    return "dbos-config.yaml"


def main() -> None:
    args = sys.argv[1:]
    if args == ["--version"]:
        from dbos_migrate import __version__

        sys.stdout.write(f"dbos-migrate {__version__}\n")
        return
    gate = None
    if args[:1] in (["up"], ["down"]) and not {"-h", "--help"} & set(args):
        from dbos_migrate.gate import StartGate

        gate = StartGate("config:" + os.path.realpath(config_path(args[1:]))).enter()
    from dbos_migrate.cli import main as cli_main

    cli_main(gate=gate)
