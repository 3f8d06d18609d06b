"""Model versions and promotions as rows of the server's SQL database, so that every instance
sharing it sees the same versions and serves the same one under a model's name.

A version is numbered per model from 1, in the order trainings end; a number is never used
twice (a deleted version keeps its row, marked ``deleted``). What a model's name serves is
the latest of its promotions (none: the plugin itself); rolling back removes the latest.
"""

from __future__ import annotations

import dataclasses
import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from sqlalchemy import JSON, DateTime, Index, Integer, String, Text, delete, func, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from sqlalchemy.orm import Mapped, mapped_column

from deepaas_like.database import Base, error_text, transient
from deepaas_like.exceptions import DatabaseUnavailable

#: Between a model's name and a version's number in a version's id: ``text_classifier@3``.
SEPARATOR = "@"
#: The largest version number (the column is a 32-bit integer on every database).
MAX_NUMBER = 2**31 - 1


def version_id(model: str, number: int) -> str:
    """The id a version is served under: ``{model}@{number}``."""
    return f"{model}{SEPARATOR}{number}"


def parse_version_id(name: str) -> tuple[str, int] | None:
    """``(model, number)`` of a version id such as ``text_classifier@3``; None for a name
    that is not one (no ``@``, or not a positive whole number after it).
    """
    model, separator, number = name.rpartition(SEPARATOR)
    if not separator or not model:
        return None
    parsed = parse_number(number)
    return None if parsed is None else (model, parsed)


def parse_number(text: str) -> int | None:
    """The version number ``text`` writes (1 to :data:`MAX_NUMBER`, no leading zero), or None."""
    if not text.isdigit() or text.startswith("0") or len(text) > len(str(MAX_NUMBER)) or int(text) > MAX_NUMBER:
        return None
    return int(text)


class ModelVersion(Base):
    """One version: made by training job ``job``, stored at ``location`` (relative to the
    model store), with the training's ``arguments`` and ``metrics`` (numbers); it belongs
    to the API key hashed as ``api_key_hash`` (the training's; NULL without API keys).
    """

    __tablename__ = "model_versions"

    model: Mapped[str] = mapped_column(String(200), primary_key=True)
    number: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    job: Mapped[str] = mapped_column(String(32))
    location: Mapped[str] = mapped_column(Text)
    parent: Mapped[str] = mapped_column(String(250))
    arguments: Mapped[dict[str, Any]] = mapped_column(JSON)
    metrics: Mapped[dict[str, float]] = mapped_column(JSON)
    run_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    api_key_hash: Mapped[str | None] = mapped_column(String(64), nullable=True)
    created: Mapped[datetime.datetime] = mapped_column(DateTime)
    deleted: Mapped[datetime.datetime | None] = mapped_column(DateTime, nullable=True)


class Promotion(Base):
    """``model``'s name serves version ``number`` (None: the plugin itself) from ``created``
    on, until a later promotion.
    """

    __tablename__ = "model_promotions"
    __table_args__ = (Index("ix_model_promotions_model", "model", "id"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    model: Mapped[str] = mapped_column(String(200))
    number: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created: Mapped[datetime.datetime] = mapped_column(DateTime)


@dataclasses.dataclass(frozen=True)
class VersionRecord:
    """A version as the server hands it out. ``location`` is its directory relative to the
    model store; ``parent`` the model it was trained from; ``job`` the training's uuid;
    ``api_key_hash`` the key that owned the training (None: made without API keys).
    """

    model: str
    number: int
    job: str
    location: str
    parent: str
    arguments: dict[str, Any]
    metrics: dict[str, float]
    created: datetime.datetime
    run_id: str | None = None
    api_key_hash: str | None = None

    @property
    def id(self) -> str:
        return version_id(self.model, self.number)


def _record(row: ModelVersion) -> VersionRecord:
    return VersionRecord(
        model=row.model,
        number=row.number,
        job=row.job,
        location=row.location,
        parent=row.parent,
        arguments=dict(row.arguments or {}),
        metrics=dict(row.metrics or {}),
        created=row.created,
        run_id=row.run_id,
        api_key_hash=row.api_key_hash,
    )


async def _versions_of(session: AsyncSession, models: list[str]) -> list[VersionRecord]:
    query = (
        select(ModelVersion)
        .where(ModelVersion.model.in_(models), ModelVersion.deleted.is_(None))
        .order_by(ModelVersion.model, ModelVersion.number.desc())
    )
    return [_record(row) for row in await session.scalars(query)]


class VersionRecords:
    """Reads and writes version and promotion rows through ``engine`` (the job database's).

    Every method raises :class:`DatabaseUnavailable` while the database is away or busy.
    """

    def __init__(self, engine: AsyncEngine) -> None:
        self._sessions = async_sessionmaker(engine, expire_on_commit=False)

    @asynccontextmanager
    async def _session(self, write: bool = False) -> AsyncIterator[AsyncSession]:
        try:
            async with self._sessions.begin() if write else self._sessions() as session:
                yield session
        except Exception as error:  # noqa: BLE001 - sorted: transient or not
            if not transient(error):
                raise
            reason = error_text(error)
            raise DatabaseUnavailable(f"the job database is unavailable ({reason}); try again later") from error

    async def add(
        self,
        model: str,
        job: str,
        location: str,
        parent: str,
        arguments: dict[str, Any],
        metrics: dict[str, float],
        run_id: str | None = None,
        api_key_hash: str | None = None,
    ) -> VersionRecord:
        """Record a new version of ``model`` under the next number, owned by the API key
        hashed as ``api_key_hash``; returns it. Two instances recording at once get two
        numbers (the loser of the insert tries again).
        """
        while True:
            try:
                async with self._session(write=True) as session:
                    numbers = select(func.max(ModelVersion.number)).where(ModelVersion.model == model)
                    last = await session.scalar(numbers)
                    row = ModelVersion(
                        model=model,
                        number=(last or 0) + 1,
                        job=job,
                        location=location,
                        parent=parent,
                        arguments=arguments,
                        metrics=metrics,
                        run_id=run_id,
                        api_key_hash=api_key_hash,
                        created=datetime.datetime.now(),
                    )
                    session.add(row)
                return _record(row)
            except sa_exc.IntegrityError:
                continue  # another instance took that number

    async def get(self, model: str, number: int) -> VersionRecord | None:
        """Version ``number`` of ``model``; None when there is none (or it was deleted)."""
        async with self._session() as session:
            row = await session.get(ModelVersion, (model, number))
        return None if row is None or row.deleted is not None else _record(row)

    async def versions_of(self, models: list[str]) -> list[VersionRecord]:
        """The versions of ``models`` that are not deleted, newest first."""
        async with self._session() as session:
            return await _versions_of(session, models)

    async def delete(self, model: str, number: int) -> bool:
        """Mark a version deleted (its number is not used again); False if there was none."""
        async with self._session(write=True) as session:
            result = await session.execute(
                update(ModelVersion)
                .where(ModelVersion.model == model, ModelVersion.number == number, ModelVersion.deleted.is_(None))
                .values(deleted=datetime.datetime.now())
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    async def promote(self, model: str, number: int | None) -> None:
        """From now on ``model``'s name serves version ``number`` (None: the plugin)."""
        async with self._session(write=True) as session:
            session.add(Promotion(model=model, number=number, created=datetime.datetime.now()))

    async def rollback(self, model: str) -> bool:
        """Undo ``model``'s latest promotion, and those below it of versions deleted since,
        so that its name serves what it served before; False when there was none.
        """
        async with self._session(write=True) as session:
            latest = await session.scalar(select(func.max(Promotion.id)).where(Promotion.model == model))
            if latest is None:
                return False
            await session.execute(delete(Promotion).where(Promotion.id == latest))
            while True:
                below = (
                    await session.execute(
                        select(Promotion.id, Promotion.number)
                        .where(Promotion.model == model)
                        .order_by(Promotion.id.desc())
                        .limit(1)
                    )
                ).first()
                if below is None or below.number is None:
                    return True
                kept = await session.get(ModelVersion, (model, below.number))
                if kept is not None and kept.deleted is None:
                    return True
                await session.execute(delete(Promotion).where(Promotion.id == below.id))

    async def catalog(self, models: list[str]) -> tuple[list[VersionRecord], dict[str, int]]:
        """The versions of ``models`` (as :meth:`versions_of`) and the version number each
        serves under its name, where one is promoted: both read in one session, as every
        instance does every poll.
        """
        latest = (
            select(Promotion.model, func.max(Promotion.id).label("id"))
            .where(Promotion.model.in_(models))
            .group_by(Promotion.model)
            .subquery()
        )
        promotions = select(Promotion.model, Promotion.number).join(latest, Promotion.id == latest.c.id)
        async with self._session() as session:
            versions = await _versions_of(session, models)
            promoted = {model: number for model, number in await session.execute(promotions) if number is not None}
        return versions, promoted
