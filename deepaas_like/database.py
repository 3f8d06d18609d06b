"""What every user of the server's SQL database shares: the declarative base its tables are
declared on (their schema is migrated by alembic, ``jobs/migrations``), and how a database
error is told apart and described.
"""

from __future__ import annotations

from sqlalchemy import exc as sa_exc
from sqlalchemy.orm import DeclarativeBase

#: Errors that mean "the database is away or busy now", not "this statement is wrong": the
#: server stopped or restarted, the network, a SQLite lock, a full connection pool.
TRANSIENT = (
    sa_exc.OperationalError,
    sa_exc.InterfaceError,
    sa_exc.DisconnectionError,
    sa_exc.TimeoutError,
    OSError,
    TimeoutError,
)


class Base(DeclarativeBase):
    """Base of every table of the server's database (jobs, instances, model versions)."""


def transient(error: BaseException) -> bool:
    """Whether ``error`` means the database is away or busy now (try again later)."""
    return isinstance(error, TRANSIENT) or bool(getattr(error, "connection_invalidated", False))


def error_text(error: BaseException) -> str:
    """A one-line description of a database error for logs and job messages: the driver's
    own first line (``database is locked``, ``connection refused``), never the SQL
    statement that SQLAlchemy adds to its messages.
    """
    original = getattr(error, "orig", None) or error
    first = (str(original).strip().splitlines() or [""])[0].split("[SQL:")[0].strip()
    return f"{type(original).__name__}: {first}"[:300] if first else type(original).__name__
