"""The one error and health policy of the server's database, for every repository on it
(jobs, instances, model versions): a transient error (the database away or busy) becomes
:class:`DatabaseUnavailable` (503 for a request; a job state write retries it), and the
database's health follows the outcome of each read and write.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import exc as sa_exc

from deepaas_like.exceptions import DatabaseUnavailable

__all__ = ["TRANSIENT", "Health", "guarded", "transient", "error_text"]

LOG = logging.getLogger(__name__)
T = TypeVar("T")

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


class Health:
    """Whether the database's last read and last write worked, and why not.

    Reads and writes are told apart: a SQLite file locked by another writer still answers
    reads, and readiness must still say that writes fail. The first failure is logged at
    ERROR, the recovery at WARNING with how long the database was away.
    """

    def __init__(self) -> None:
        self._read_problem: str | None = None
        self.write_problem: str | None = None
        self._down_since: float | None = None

    @property
    def problem(self) -> str | None:
        """Why the last read or write failed (None once it works again)."""
        return self.write_problem or self._read_problem

    @contextlib.asynccontextmanager
    async def guard(self, write: bool) -> AsyncIterator[None]:
        """Run one read (``write`` False) or write on the database: a transient error in it
        becomes :class:`DatabaseUnavailable`; any other error passes unchanged.
        """
        try:
            yield
        except DatabaseUnavailable:
            raise
        except Exception as error:  # noqa: BLE001 - sorted: transient or not
            if not transient(error):
                raise
            raise self._failed(error, write) from error
        self._succeeded(write)

    def _failed(self, error: BaseException, write: bool) -> DatabaseUnavailable:
        reason = error_text(error)
        if self.problem is None:
            self._down_since = time.monotonic()
            LOG.error(
                "the job database is unavailable (%s); requests that need it get 503, "
                "job state writes are retried until it is back",
                reason,
            )
        if write:
            self.write_problem = reason
        else:
            self._read_problem = reason
        return DatabaseUnavailable(f"the job database is unavailable ({reason}); try again later")

    def _succeeded(self, write: bool) -> None:
        if self.problem is None:
            return
        if write:
            self.write_problem = self._read_problem = None
        else:
            self._read_problem = None
        if self.problem is None and self._down_since is not None:
            LOG.warning("the job database is back after %.1f s", time.monotonic() - self._down_since)
            self._down_since = None


class _OnDatabase(Protocol):
    @property
    def health(self) -> Health: ...


class _Repository(Protocol):
    @property
    def database(self) -> _OnDatabase: ...


def guarded(write: bool) -> Callable[[Callable[..., Awaitable[T]]], Callable[..., Awaitable[T]]]:
    """Decorate a method of a repository (an object with a ``database``): it runs under
    its database's :meth:`Health.guard`, as a read or a ``write``.
    """

    def decorate(method: Callable[..., Awaitable[T]]) -> Callable[..., Awaitable[T]]:
        @functools.wraps(method)
        async def call(self: _Repository, *args: Any, **kwargs: Any) -> T:
            async with self.database.health.guard(write):
                result = await method(self, *args, **kwargs)
            return result

        return call

    return decorate
