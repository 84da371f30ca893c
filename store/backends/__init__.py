"""The database backends, one module per database: its connection, its SQL dialect
(column types, upsert, schema migrations) and how its errors are classified.

``base`` holds what every backend offers and the error classes; ``dialect`` the SQL
text every backend derives from its hooks; ``on_conflict`` the ``INSERT ... ON
CONFLICT`` upsert that SQLite and PostgreSQL share. ``store.database`` maps URL
schemes to the backend classes and opens connections.
"""
