"""`python -m dbos_migrate`, and the `dbos-migrate` console script's entry point.

SIGINT and SIGTERM are handled before anything heavy is imported, so a signal at any
instant after the interpreter has started ends the run with its exit code (130/143) and,
with `-o json`, one JSON document (docs/reliability.md, "One JSON document from the first
instant"). Only the error kinds are imported until the command line is loaded.
"""

import os
import signal
import sys

from dbos_migrate.errors import Interrupted

_stopping: list[int] = []


def interrupt(signum: int, frame: object) -> None:
    """Stop the run in order (outside a command; during one, the runner's own handlers take
    over); once stopping, further signals are ignored while the outcome is printed."""
    if _stopping:
        return
    _stopping.append(signum)
    raise Interrupted(signum)


def main() -> None:
    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)
    try:
        from dbos_migrate.cli import console
    except Interrupted as exc:  # while importing the command line: nothing has been printed yet
        from dbos_migrate.report.early import stopped_early

        sys.exit(stopped_early(exc, sys.argv[1:], sys.stdout, sys.stderr, dict(os.environ)))
    console(interrupt)


if __name__ == "__main__":
    main()
