"""The console entry point. `--version` is answered here, before the CLI framework loads.

Deploy scripts and CI probes call `dbos-migrate --version` often; loading typer for it
would cost five times the interpreter's own start-up. Everything else goes to `cli.main`.
"""

import sys


def main() -> None:
    if sys.argv[1:] == ["--version"]:
        from dbos_migrate import __version__

        sys.stdout.write(f"dbos-migrate {__version__}\n")
        return
    from dbos_migrate.cli import main as cli_main

    cli_main()
