"""A training run by ``deepaas-like-cli`` in its own process, kept as a model version: the
version a server's training of the same model would make, in the same job database and
model store (``--database-url``, ``--model-store``; by default the per-user ones a server
started without them uses), so that a server serves it as ``name@n``.

The making is the server's own training hook
(:class:`~deepaas_like.serving.version_making.VersionMaking`): it says where the plugin's
``save`` writes, then records the version; the CLI only gives it a training without a job
row in the database (its uuid names the version's directory and its ``training``).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from sqlalchemy import func, select

from deepaas_like.database import Database
from deepaas_like.database.tables import Job, ModelVersion
from deepaas_like.jobs.hooks import Training
from deepaas_like.jobs.states import DONE
from deepaas_like.kinds import TRAIN
from deepaas_like.registry.records import VersionRecords
from deepaas_like.registry.storage import ModelStore
from deepaas_like.serving.version_making import VersionMaking

__all__ = ["LocalVersion"]

T = TypeVar("T")


async def _write(what: str, write: Callable[[], Awaitable[T]]) -> T:
    """A write of the training's state, done once: a CLI has no job to keep retrying for."""
    return await write()


class LocalVersion:
    """The version one local training of ``model`` may become: :meth:`open`, then
    :attr:`save_to` for the plugin's ``save``, then :meth:`keep` or :meth:`discard`, then
    :meth:`close`.
    """

    def __init__(self, model: str, database: Database, store: ModelStore) -> None:
        self.model = model
        self.database = database
        self.store = store
        self.making = VersionMaking(store, VersionRecords(database))
        job = Job(uuid=uuid.uuid4().hex, model=model, kind=str(TRAIN), args={}, api_key_hash=None)
        self.training = Training(model, True, job, _write)

    @classmethod
    async def open(cls, model: str, database_url: str, store_url: str) -> LocalVersion:
        """Open (and migrate) the job database at ``database_url`` and check that the model
        store at ``store_url`` can be written. Raises ``StartupError`` naming either and why.
        """
        store = ModelStore(store_url)
        await asyncio.to_thread(store.check)
        database = await Database.open(database_url)
        version = cls(model, database, store)
        await version.making.started(version.training)
        return version

    @property
    def save_to(self) -> str:
        """Where the plugin's ``save`` writes the trained state (the version's directory's URL)."""
        assert self.training.save_to is not None, "VersionMaking.started sets it for a model that makes versions"
        return self.training.save_to

    @property
    def location(self) -> str:
        """The version's directory, relative to the store."""
        return str(self.training.notes["version_location"])

    async def next_number(self) -> int:
        """The number the version would get if kept now (numbers are never used twice)."""
        async with self.database.sessions() as session:
            last = await session.scalar(select(func.max(ModelVersion.number)).where(ModelVersion.model == self.model))
        return (last or 0) + 1

    async def keep(self, arguments: dict[str, Any], output: Any, metrics: dict[str, float]) -> str:
        """Record the saved training as a version: its ``arguments`` (JSON), the ``metrics``
        it reported and the numbers in its ``output``, as a server's training records them.
        Returns the version's id (``name@n``); raises ``DatabaseUnavailable``.
        """
        self.training.job.args = arguments
        self.training.metrics = dict(metrics)
        outcome: dict[str, Any] = {"status": DONE, "output": output}
        await self.making.ended(self.training, outcome)
        return str(outcome["version"])

    async def discard(self) -> None:
        """Remove what the plugin saved (nothing happens when it saved nothing)."""
        await asyncio.to_thread(self.store.remove, self.location)

    async def close(self) -> None:
        await self.database.close()
