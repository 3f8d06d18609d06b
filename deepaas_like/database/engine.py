"""The server's SQL database through SQLAlchemy's asyncio engine: SQLite by default,
PostgreSQL at scale. Opening it migrates the schema (alembic, ``database/migrations``) under
a lock, so that servers started together migrate one after the other.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import logging
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

from deepaas_like import json_text
from deepaas_like.database.policy import Health, error_text
from deepaas_like.database.tables import Job
from deepaas_like.exceptions import DatabaseUnavailable, DeepaasLikeError, StartupError

__all__ = ["CONNECT_TIMEOUT", "SQLITE_BUSY_TIMEOUT", "Database", "Migration", "async_url", "database_identity"]

LOG = logging.getLogger(__name__)

_MIGRATIONS = Path(__file__).parent / "migrations"
_MIGRATION_LOCK = 72050001  # PostgreSQL advisory lock id: one instance migrates at a time
_MIGRATION_WAIT = 120.0  # seconds a start waits for another instance's migration (SQLite)
#: Seconds a SQLite write waits for another writer before it fails as "database is locked"
#: (a job state write then retries it; a request gets 503).
SQLITE_BUSY_TIMEOUT = 5.0
#: Seconds to open a PostgreSQL connection before the database counts as unreachable.
CONNECT_TIMEOUT = 5

# The asyncio driver used for the URL forms people write (SQLAlchemy's dialect names).
_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+pysqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
}


class _AtDebug(logging.Handler):
    """Passes alembic's records on to the root logger's handlers at DEBUG: its lines
    ("Context impl SQLiteImpl.", "Running upgrade ...", a dozen at every start) say nothing
    an operator needs; :meth:`Database.open` says in one INFO line what a migration changed.
    """

    def emit(self, record: logging.LogRecord) -> None:
        root = logging.getLogger()
        if record.levelno <= logging.INFO:
            if not root.isEnabledFor(logging.DEBUG):
                return
            record.levelno, record.levelname = logging.DEBUG, logging.getLevelName(logging.DEBUG)
        root.handle(record)


def _alembic_at_debug() -> None:
    """Have alembic's INFO lines logged at DEBUG (once per process)."""
    alembic = logging.getLogger("alembic")
    if not any(isinstance(handler, _AtDebug) for handler in alembic.handlers):
        alembic.addHandler(_AtDebug())
        alembic.propagate = False


@dataclasses.dataclass(frozen=True)
class Migration:
    """What :meth:`Database.migrate` did: the schema revision ``before`` (None: a database
    without tables) and ``after``, and the message of each revision applied, oldest first.
    """

    before: str | None
    after: str | None
    applied: tuple[str, ...] = ()

    def describe(self, database: str) -> str | None:
        """The INFO line saying what changed in ``database`` (its URL, password hidden),
        or None when nothing did."""
        if not self.applied:
            return None
        if self.before is None:
            return f"job database {database}: tables created (schema revision {self.after})"
        return f"job database {database}: schema migrated from revision {self.before} to {self.after}: " + "; ".join(
            self.applied
        )


def _title(doc: str) -> str:
    """A revision's message on one line: its docstring's first sentence, up to a colon."""
    first = " ".join(doc.split("\n\n")[0].split())
    return first.split(":")[0].split(". ")[0].rstrip(".")


def async_url(url: str) -> URL:
    """``url`` with an asyncio driver: ``sqlite:///jobs.sqlite`` becomes
    ``sqlite+aiosqlite:///jobs.sqlite``, ``postgresql://...`` becomes
    ``postgresql+psycopg://...``; async URLs are kept. Raises :class:`StartupError` for a
    URL SQLAlchemy cannot parse.
    """
    try:
        parsed = make_url(url)
    except ArgumentError as error:
        raise StartupError(f"the job database URL {url!r} is not an SQLAlchemy URL: {error}") from error
    return parsed.set(drivername=_ASYNC_DRIVERS.get(parsed.drivername, parsed.drivername))


def database_identity(url: str | None) -> str:
    """A short stable identity of the database ``url`` names: 8 hex digits of SHA-256, the
    same for every spelling of one database (driver, relative SQLite path, password left
    out); ``00000000`` without a URL. Upload folders carry it to say whose they are.
    """
    if not url:
        return "0" * 8
    try:
        parsed = async_url(url)
    except DeepaasLikeError:
        return _digest(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database:
        parsed = parsed.set(database=os.path.abspath(parsed.database))
    return _digest(parsed.render_as_string(hide_password=True))


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:8]


def _json_column(value: Any) -> str:
    """What a JSON column holds: NaN and infinite floats as null (PostgreSQL's ``json`` type
    refuses ``NaN``, and a stored one would break strict readers), any other value JSON
    lacks as its text."""
    return json_text.dumps(value, text_for_others=True)


class Database:
    """The engine, its sessions and its :class:`Health`; one per server process, shared
    by every repository on it (``JobStore``, ``VersionRecords``).
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine
        #: Sessions whose objects stay readable after their commit.
        self.sessions: async_sessionmaker[AsyncSession] = async_sessionmaker(engine, expire_on_commit=False)
        self.health = Health()

    @property
    def problem(self) -> str | None:
        """Why the last read or write failed (None once it works again)."""
        return self.health.problem

    async def ping(self) -> None:
        """One round trip to the database; raises :class:`DatabaseUnavailable`."""
        async with self.health.guard(write=False), self.engine.connect() as connection:
            await connection.execute(text("SELECT 1"))

    async def check(self, timeout: float = 2.0) -> str | None:
        """Why the database cannot serve now, or None: a round trip within ``timeout``
        seconds, and no write failing since the last that worked (a SQLite file locked by
        another writer still answers reads).
        """
        try:
            await asyncio.wait_for(self.ping(), timeout)
        except TimeoutError:
            return f"the job database did not answer within {timeout:g} s"
        except DatabaseUnavailable as error:
            return error.message
        if self.health.write_problem:
            return f"the job database refuses writes ({self.health.write_problem})"
        return None

    @classmethod
    async def open(cls, url: str) -> "Database":
        """Connect to ``url`` (an SQLAlchemy URL, e.g. ``sqlite:///jobs.sqlite`` or
        ``postgresql://user@host/db``; see :func:`async_url`), migrate the schema to the
        latest revision and check that it can be written.

        Raises :class:`StartupError` naming the database (password hidden) and the reason
        when it is unreachable, unreadable, not a database or read-only.
        """
        parsed = async_url(url)
        shown = parsed.render_as_string(hide_password=True)
        sqlite = parsed.get_backend_name() == "sqlite"
        engine = None
        try:
            if sqlite and parsed.database not in (None, "", ":memory:") and not parsed.database.startswith("file:"):
                os.makedirs(os.path.dirname(os.path.abspath(parsed.database)), exist_ok=True)
            options: dict[str, Any] = {}
            if parsed.get_backend_name() == "postgresql":
                # A restarted server leaves dead connections in the pool: test each before use.
                options = {"pool_pre_ping": True, "connect_args": {"connect_timeout": CONNECT_TIMEOUT}}
            engine = create_async_engine(parsed, json_serializer=_json_column, **options)
            if sqlite:
                event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            database = cls(engine)
            async with _migration_lock(parsed if sqlite else None):
                migration = await database.migrate()
                await database._check_writable()
            line = migration.describe(shown)
            if line is not None:
                LOG.info("%s", line)
            else:
                LOG.debug("job database %s: schema up to date (revision %s)", shown, migration.after)
        except StartupError:
            if engine is not None:
                await engine.dispose()
            raise
        except Exception as error:  # noqa: BLE001 - any failure here means: no job database
            if engine is not None:
                await engine.dispose()
            raise StartupError(f"cannot use the job database {shown}: {error_text(error)}") from error
        return database

    async def _check_writable(self) -> None:
        # A read-only database (file mode, read-only mount, replica) would fail every job
        # later; an insert that is rolled back finds out now.
        async with self.sessions() as session:
            session.add(
                Job(
                    uuid="0" * 32,
                    model="",
                    kind="",
                    status="pending",
                    args={},
                    kwargs={},
                    created=datetime.datetime.now(),
                    events=[],
                )
            )
            await session.flush()
            await session.rollback()

    async def migrate(self, revision: str = "head") -> Migration:
        """Apply the alembic migrations not yet applied, up to ``revision``; what was done."""
        # Imported here: alembic is needed once, at start-up, beside the workers' start.
        _alembic_at_debug()
        from alembic import command
        from alembic.config import Config
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        def upgrade(connection: Any) -> Migration:
            config = Config()
            config.set_main_option("script_location", str(_MIGRATIONS))
            # The revisions' folder is not alembic's default "versions": that word means
            # model versions here.
            config.set_main_option("version_locations", str(_MIGRATIONS / "revisions"))
            # One path, split on os.pathsep (never on the spaces a path may hold): alembic
            # 1.16's path_separator, and version_path_separator before it.
            config.set_main_option("path_separator", "os")
            config.set_main_option("version_path_separator", "os")
            config.attributes["connection"] = connection
            before = MigrationContext.configure(connection).get_current_revision()
            command.upgrade(config, revision)
            after = MigrationContext.configure(connection).get_current_revision()
            if after == before:
                return Migration(before, after)
            scripts = ScriptDirectory.from_config(config).iterate_revisions(after, before)
            applied = tuple(reversed([_title(script.doc or script.revision) for script in scripts]))
            return Migration(before, after, applied)

        async with self.engine.begin() as connection:
            if connection.dialect.name == "postgresql":
                await connection.execute(text(f"SELECT pg_advisory_xact_lock({_MIGRATION_LOCK})"))
            migration: Migration = await connection.run_sync(upgrade)
        return migration

    async def close(self) -> None:
        await self.engine.dispose()


def _sqlite_pragmas(connection: Any, _record: Any) -> None:
    # WAL lets readers work while a job is written; the timeout waits out a busy writer
    # (set first: switching to WAL itself waits for a writer of another process).
    cursor = connection.cursor()
    cursor.execute(f"PRAGMA busy_timeout={int(SQLITE_BUSY_TIMEOUT * 1000)}")
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.close()


@contextlib.asynccontextmanager
async def _migration_lock(url: URL | None) -> AsyncIterator[None]:
    """Hold an exclusive lock on ``<database file>.lock`` while the schema is migrated, so
    that servers started together on one SQLite file migrate one after the other (on
    PostgreSQL an advisory lock does this, see :meth:`Database.migrate`). Nothing is locked
    for PostgreSQL (``url`` None) and in-memory databases.

    Raises :class:`StartupError` after :data:`_MIGRATION_WAIT` seconds of waiting.
    """
    database = url.database if url is not None else None
    if not database or database == ":memory:" or database.startswith("file:"):
        yield
        return
    # fcntl.flock: an advisory lock the kernel drops when the process dies (kill -9
    # included), so a crashed start never blocks the next one. POSIX only, as the workers are.
    path = os.path.abspath(database) + ".lock"
    descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + _MIGRATION_WAIT
        while True:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StartupError(
                        f"another server has been migrating the job database {database} for over "
                        f"{_MIGRATION_WAIT:g} s (it holds {path}); stop it or wait for it to finish"
                    ) from None
                await asyncio.sleep(0.05)
        yield
    finally:
        os.close(descriptor)  # closing releases the lock
