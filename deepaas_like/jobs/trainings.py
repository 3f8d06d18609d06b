"""Training jobs: a row per training, a task that runs it, and cancellation."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from deepaas_like.exceptions import DeepaasLikeError, HookNotImplemented
from deepaas_like.jobs.models import CANCELLED, DONE, ERROR, RUNNING
from deepaas_like.jobs.store import INTERRUPTED, JobStore
from deepaas_like.model.args import json_arguments
from deepaas_like.model.wrapper import ModelWrapper

LOG = logging.getLogger(__name__)
CANCELLED_BY_USER = "cancelled by a DELETE request"


class Trainings:
    """Starts trainings in the background and keeps their rows up to date."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self._tasks: dict[str, asyncio.Task[None]] = {}

    async def start(self, model: ModelWrapper, kwargs: dict[str, Any], cleanup: Callable[[], None]) -> dict[str, Any]:
        """Record a ``running`` training and start it; returns the training object.

        ``cleanup`` runs when the training ends however it ends (it deletes uploads).
        """
        if model.train_schema is None:
            cleanup()
            raise HookNotImplemented(f"model {model.name!r} does not implement train()")
        job = await self.store.create(model.name, json_arguments(kwargs))
        task = asyncio.create_task(self._run(model, job.uuid, kwargs, cleanup))
        self._tasks[job.uuid] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.uuid, None))
        return job.to_training()

    async def _run(self, model: ModelWrapper, uuid: str, kwargs: dict[str, Any], cleanup: Callable[[], None]) -> None:
        try:
            output = await model.train(kwargs, job_id=uuid)
        except DeepaasLikeError as error:
            await self.store.finish(uuid, ERROR, message=error.message)
        except asyncio.CancelledError:
            await asyncio.shield(self.store.finish(uuid, CANCELLED, message=CANCELLED_BY_USER))
            raise
        except Exception as error:  # noqa: BLE001 - recorded on the job; the server keeps serving
            LOG.exception("training %s of %s failed", uuid, model.name)
            await self.store.finish(uuid, ERROR, message=f"{type(error).__name__}: {error}")
        else:
            await self.store.finish(uuid, DONE, output=output)
        finally:
            cleanup()

    async def get(self, model: str, uuid: str) -> dict[str, Any]:
        """The training object; raises ``JobNotFound``."""
        return (await self.store.get(model, uuid)).to_training()

    async def list(self, model: str) -> list[dict[str, Any]]:
        """Every training object of ``model``, oldest first."""
        return [job.to_training() for job in await self.store.list(model)]

    async def cancel(self, model: ModelWrapper, uuid: str) -> dict[str, Any]:
        """Cancel a running training: mark it ``cancelled`` and kill its worker (a fresh,
        warmed one replaces it). A finished training is returned unchanged.
        """
        job = await self.store.get(model.name, uuid)
        if job.status == RUNNING:
            await self.store.finish(uuid, CANCELLED, message=CANCELLED_BY_USER)
            if not await model.kill(uuid):
                task = self._tasks.get(uuid)
                if task is not None:
                    task.cancel()
        return await self.get(model.name, uuid)

    async def close(self) -> None:
        """Stop the trainings still running; their rows say they were interrupted."""
        tasks = list(self._tasks.items())
        for uuid, task in tasks:
            await self.store.finish(uuid, ERROR, message=INTERRUPTED)
            task.cancel()
        tasks = [task for _, task in tasks]
        await asyncio.gather(*tasks, return_exceptions=True)
