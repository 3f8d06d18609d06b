"""Model versions and promotions as rows of the server's SQL database, so that every instance
sharing it sees the same versions and serves the same one under a model's name.

A version is numbered per model from 1, in the order trainings end; a number is never used
twice (a deleted version keeps its row, marked ``deleted``). What a model's name serves is
the latest of its promotions (none: the plugin itself); rolling back removes the latest.
"""

from __future__ import annotations

import dataclasses
import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy import exc as sa_exc
from sqlalchemy.ext.asyncio import AsyncSession

from deepaas_like.database import Database, guarded
from deepaas_like.database.tables import ModelVersion, Promotion

__all__ = [
    "MAX_NUMBER",
    "SEPARATOR",
    "VersionRecord",
    "VersionRecords",
    "parse_number",
    "parse_version_id",
    "version_id",
]

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
    """Reads and writes version and promotion rows of ``database`` (the server's, shared
    with the jobs).

    Every method raises :class:`DatabaseUnavailable` while the database is away or busy
    (the database's one policy, :func:`deepaas_like.database.guarded`).
    """

    def __init__(self, database: Database) -> None:
        self.database = database

    @guarded(write=True)
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
                async with self.database.sessions.begin() as session:
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

    @guarded(write=False)
    async def get(self, model: str, number: int) -> VersionRecord | None:
        """Version ``number`` of ``model``; None when there is none (or it was deleted)."""
        async with self.database.sessions() as session:
            row = await session.get(ModelVersion, (model, number))
        return None if row is None or row.deleted is not None else _record(row)

    @guarded(write=False)
    async def versions_of(self, models: list[str]) -> list[VersionRecord]:
        """The versions of ``models`` that are not deleted, newest first."""
        async with self.database.sessions() as session:
            return await _versions_of(session, models)

    @guarded(write=True)
    async def delete(self, model: str, number: int) -> bool:
        """Mark a version deleted (its number is not used again); False if there was none."""
        async with self.database.sessions.begin() as session:
            result = await session.execute(
                update(ModelVersion)
                .where(ModelVersion.model == model, ModelVersion.number == number, ModelVersion.deleted.is_(None))
                .values(deleted=datetime.datetime.now())
            )
            return result.rowcount == 1  # type: ignore[attr-defined]

    @guarded(write=True)
    async def promote(self, model: str, number: int | None) -> None:
        """From now on ``model``'s name serves version ``number`` (None: the plugin)."""
        async with self.database.sessions.begin() as session:
            session.add(Promotion(model=model, number=number, created=datetime.datetime.now()))

    @guarded(write=True)
    async def rollback(self, model: str) -> bool:
        """Undo ``model``'s latest promotion, and those below it of versions deleted since,
        so that its name serves what it served before; False when there was none.
        """
        async with self.database.sessions.begin() as session:
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

    @guarded(write=False)
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
        async with self.database.sessions() as session:
            versions = await _versions_of(session, models)
            promoted = {model: number for model, number in await session.execute(promotions) if number is not None}
        return versions, promoted
