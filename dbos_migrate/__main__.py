"""Allow `python -m dbos_migrate`."""

from dbos_migrate.cli import console

if __name__ == "__main__":
    console()
