"""Schedule stores, one per result store kind: memory, SQLite, Redis."""
