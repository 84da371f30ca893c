"""Configuration: the typed schema, its files and flags, and the configured database."""
