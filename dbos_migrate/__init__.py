"""dbos-migrate: the deploy-time `dbos migrate` step of DBOS apps, as a standalone tool."""

__version__ = "0.3.0"
