"""Allow `python -m dbos_migrate`."""

from dbos_migrate.cli import main

if __name__ == "__main__":
    main()
