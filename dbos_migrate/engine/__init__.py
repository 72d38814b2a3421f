"""The engine of a run: the run frame, the lock, history, SQL, commands and the scrubber (docs/architecture.md)."""
