"""Alembic migrations of the server's database, applied at start-up (``Database.migrate``);
the revisions are in ``revisions/`` (alembic's ``version_locations``).
"""
