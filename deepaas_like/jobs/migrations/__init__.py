"""Alembic migrations of the job database, applied at start-up (``store.migrate``)."""
