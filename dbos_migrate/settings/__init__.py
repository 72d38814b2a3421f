"""Settings: the config file, the target instance and the connection rules (docs/architecture.md)."""
