"""The database layer: schema, SQLite and PostgreSQL backends, run records, the tranche
ledger and the sink's ingestion limits. No Beam."""
