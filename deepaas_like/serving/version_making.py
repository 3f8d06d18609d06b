"""The making of model versions, as a training hook (``jobs.hooks.TrainingHook``): a
successful training of a model that saves its state leaves a version in the model store,
recorded in the server's database.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from deepaas_like.jobs.hooks import Training, numbers_of
from deepaas_like.jobs.states import DONE
from deepaas_like.registry.records import VersionRecord, VersionRecords
from deepaas_like.registry.storage import ModelStore

__all__ = ["VersionMaking"]

LOG = logging.getLogger(__name__)


class VersionMaking:
    """Makes a version of each successful training of a model that
    :attr:`~deepaas_like.jobs.execution.Servable.makes_versions`: saved in ``model_store``,
    recorded in ``records``; ``on_version`` is told of each new version.
    """

    def __init__(
        self,
        model_store: ModelStore,
        records: VersionRecords,
        on_version: Callable[[VersionRecord], None] | None = None,
    ) -> None:
        self.model_store = model_store
        self.records = records
        self.on_version = on_version

    async def started(self, training: Training) -> None:
        """Tell the training where to save the version it makes."""
        if training.makes_versions:
            location = self.model_store.location(training.model, training.job.uuid)
            training.notes["version_location"] = location
            training.save_to = self.model_store.url_of(location)

    async def ended(self, training: Training, outcome: dict[str, Any]) -> None:
        """Record the version a successful training saved (retried while the database is
        away): its metrics are the latest reported and the numbers ``train`` returned; it
        belongs to the training's API key. The outcome gains its id, ``version``.
        """
        location = training.notes.get("version_location")
        if outcome["status"] != DONE or location is None:
            return
        model, job = training.model, training.job
        metrics = {**training.metrics, **numbers_of(outcome.get("output"))}
        version = await training.write(
            f"the version made by job {job.uuid}",
            lambda: self.records.add(
                model, job.uuid, location, model, job.args, metrics, training.run_id, job.api_key_hash
            ),
        )
        LOG.info("training %s of %s made version %s", job.uuid, model, version.id)
        training.notes["version"] = version
        training.version, training.artifacts = version.id, self.model_store.url_of(location)
        outcome["version"] = version.id
        if self.on_version is not None:
            self.on_version(version)

    async def discarded(self, training: Training) -> None:
        """Drop the version of a training that was cancelled while it was being recorded."""
        version: VersionRecord | None = training.notes.get("version")
        if version is None:
            return
        try:
            await self.records.delete(version.model, version.number)
            await asyncio.to_thread(self.model_store.remove, version.location)
        except Exception:  # noqa: BLE001 - a left-over version is listed, and can be deleted
            LOG.exception("cannot remove version %s of a cancelled training", version.id)
