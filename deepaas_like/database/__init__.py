"""The database room: the server's SQL database (engine, sessions, one error and health
policy, every table and their migrations), used by jobs and model versions alike.
"""

from deepaas_like.database.engine import Database, async_url, database_identity
from deepaas_like.database.policy import Health, error_text, guarded, transient

__all__ = ["Database", "Health", "async_url", "database_identity", "error_text", "guarded", "transient"]
