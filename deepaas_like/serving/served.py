"""The serving layer: one model as the server serves it, above the executors.

A :class:`ServedModel` owns the model's worker pools (predictions; trainings, started on
first use), dynamic batching and autoscaling, and turns what the plugin returns into what
the client receives (:func:`deepaas_like.results.render`). Its description (argument
schemas, media types, metadata) is a :class:`~deepaas_like.serving.schemas.ModelSchemas`,
built once and shared with its versions. It knows nothing of HTTP, of versions or of
promotions: the router (:mod:`deepaas_like.serving.router`) decides what serves a call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from deepaas_like.exceptions import HookNotImplemented, InvalidPrediction, PluginError
from deepaas_like.kinds import PREDICT, TRAIN, Kind
from deepaas_like.results import FileResult, Prediction, render
from deepaas_like.serving.autoscaling import Autoscaler, Autoscaling
from deepaas_like.serving.batching import Batcher
from deepaas_like.serving.schemas import ModelSchemas
from deepaas_like.workers.base import Placement, ProgressCallback, WorkerPool, note

__all__ = ["ServedModel"]

LOG = logging.getLogger(__name__)


class ServedModel:
    """A model as the server serves it: its workers, ``predict`` and ``train``.

    Predictions run on ``predict_pool``; trainings on a second pool made by
    ``make_train_pool`` when the first training starts, so a long training never
    holds up predictions. A plugin with ``predict_batch`` gets dynamic batching when
    ``max_batch_size`` is 2 or more (``batch_wait`` in seconds). With ``autoscaling``, the
    predict workers follow the queue between its minimum and maximum. A model version is
    served as a ServedModel named by its id, without ``make_train_pool`` (it takes
    predictions only) and with its model's ``schemas``.
    """

    def __init__(
        self,
        name: str,
        predict_pool: WorkerPool,
        make_train_pool: Callable[[], WorkerPool] | None = None,
        max_batch_size: int = 1,
        batch_wait: float = 0.0,
        on_batch: Callable[[int], None] | None = None,
        autoscaling: Autoscaling | None = None,
        schemas: ModelSchemas | None = None,
    ) -> None:
        self.name = name
        self._trains = make_train_pool is not None
        self.predict_pool = predict_pool
        self._max_batch_size = max_batch_size
        self._batch_wait = batch_wait
        self._on_batch = on_batch
        self.batcher: Batcher | None = None
        self._autoscaling = autoscaling
        self.autoscaler: Autoscaler | None = None
        self._make_train_pool = make_train_pool
        self._train_pool: WorkerPool | None = None
        self._train_pool_start: asyncio.Task[WorkerPool] | None = None
        #: The model's description and argument schemas: given (a version's, its model's),
        #: else built by :meth:`start` from what the workers report of the plugin.
        self.schemas: ModelSchemas = schemas  # type: ignore[assignment]

    async def start(self) -> None:
        """Start and warm the predict workers and build the argument schemas from the
        plugin's description (unless given). Raises ``PluginLoadError``.
        """
        description = await self.predict_pool.start()
        failure = description.metadata_error
        if failure is not None and self._trains:  # a version's base model said it already
            LOG.error(
                "get_metadata() of model %r failed; the model is served, its metadata answers %d: %s: %s\n%s",
                self.name,
                failure.status,
                failure.error_type,
                failure.message,
                failure.traceback.rstrip(),
            )
        if self.schemas is None:
            self.schemas = ModelSchemas.build(self.name, description, self._trains)
        if description.batch and self._max_batch_size >= 2:
            # As many batches at once as the live workers hold: autoscaling changes them.
            self.batcher = Batcher(self.predict_pool, self._max_batch_size, self._batch_wait, self._on_batch)
        if self._autoscaling is not None:
            self.autoscaler = Autoscaler(
                self.predict_pool,
                self.queued,
                self._autoscaling,
                None if self.batcher is None else self.batcher.wake,
                self.name,
            )
            self.autoscaler.start()

    def queued(self) -> int:
        """Predictions waiting for a worker (in the batcher's queue, or the pool's)."""
        return self.predict_pool.waiting + (self.batcher.queued if self.batcher is not None else 0)

    async def stop(self) -> None:
        if self.autoscaler is not None:
            await self.autoscaler.close()
        if self.batcher is not None:
            await self.batcher.close()
        await self.predict_pool.stop()
        if self._train_pool_start is not None:
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await self._train_pool_start
        if self._train_pool is not None:
            await self._train_pool.stop()

    @property
    def worker_restarts(self) -> int:
        """Workers of this model replaced after dying or being killed."""
        pools = [self.predict_pool, self._train_pool]
        return sum(pool.restarts for pool in pools if pool is not None)

    def unavailable(self) -> str | None:
        """Why the model cannot take predictions (no live worker), or None."""
        if self.predict_pool.live_workers > 0:
            return None
        return self.predict_pool.unavailable or f"model {self.name!r} has no live worker; a new one is starting"

    @property
    def makes_versions(self) -> bool:
        """Whether each successful training makes a model version (the plugin has
        ``save`` and ``load``).
        """
        return self._trains and self.schemas.description.versions

    def accepts(self, kind: Kind | str) -> bool:
        """Whether the plugin has the hook for ``kind`` (``predict`` or ``train``)."""
        return self.schemas.of(kind) is not None and (kind == PREDICT or self._trains)

    def require(self, kind: Kind | str) -> None:
        """Raise ``HookNotImplemented`` (501) unless the plugin has the hook for ``kind``."""
        if not self.accepts(kind):
            raise HookNotImplemented(f"model {self.name!r} does not implement {kind}()")

    def metadata(self) -> dict[str, Any]:
        """The plugin's metadata merged over ``{"id": name, "name": name}``, and, when the
        predict workers run on GPUs or on a Ray cluster, ``"workers"``: where each live one
        runs, ``{"node": ..., "device": "cpu" or "gpu:ID"}`` (plain local CPU workers leave
        the document as DEEPaaS has it). Raises ``PluginError`` with what the plugin's
        ``get_metadata`` raised at start-up (and the HTTP status it chose).
        """
        description = self.schemas.description
        failure = description.metadata_error
        if failure is not None:
            raise PluginError(failure.error_type, failure.message, failure.traceback, failure.status)
        placements = self.predict_pool.placements()
        if all(p == Placement() for p in placements):
            return {"id": self.name, "name": self.name, **description.metadata}
        workers = [{"node": p.node, "device": p.device} for p in placements]
        return {"id": self.name, "name": self.name, "workers": workers, **description.metadata}

    async def predict(
        self, kwargs: dict[str, Any], job_id: str | None = None, on_progress: ProgressCallback | None = None
    ) -> Prediction:
        """Run ``predict(**kwargs)`` in a worker; returns what the client receives, in the
        media type ``kwargs["accept"]`` chose (see :func:`deepaas_like.results.render`).

        JSON data is checked against the plugin's ``schema`` when it has one, else wrapped as
        DEEPaaS wraps it, ``{"status": "OK", "predictions": result}``. A call with a
        ``job_id`` (an asynchronous prediction) is never batched, so that :meth:`kill` can
        stop it. Raises ``HookNotImplemented``, ``InvalidPrediction`` and whatever the pool
        raises.
        """
        self.require(PREDICT)
        if self.batcher is not None and job_id is None:
            result = await self.batcher.submit(kwargs)
        else:
            result = await self.predict_pool.run("predict", kwargs, job_id=job_id, on_progress=on_progress)
        response = self.schemas.response
        if response is not None and not isinstance(result, (bytes, FileResult)):
            errors = response().validate(result if isinstance(result, dict) else {"": result})
            if errors:
                raise InvalidPrediction(errors)
        return render(result, kwargs.get("accept"), wrap=response is None)

    async def train(
        self,
        kwargs: dict[str, Any],
        job_id: str,
        on_progress: ProgressCallback | None = None,
        save_to: str | None = None,
    ) -> Any:
        """Run ``train(**kwargs)`` in a training worker; ``job_id`` lets :meth:`kill` stop it.
        With ``save_to`` (a version directory's URL) the worker then saves the trained
        state there (the plugin's ``save``): a ``save`` that fails fails the training.

        The training workers start with the first training. That start runs on its own:
        cancelling the training that waits for it does not cancel it, and a start that
        fails is tried again by the next training.
        """
        self.require(TRAIN)
        starting = self._train_pool is None  # the first training starts the training workers
        if starting:
            note(on_progress, "starting the training worker: loading the model")
        pool = await self._training_pool()
        if starting:
            note(on_progress, "training worker ready")
        return await pool.run("train", kwargs, job_id=job_id, on_progress=on_progress, save_to=save_to)

    async def _training_pool(self) -> WorkerPool:
        if self._train_pool is not None:
            return self._train_pool
        if self._train_pool_start is None:
            self._train_pool_start = asyncio.create_task(self._start_training_pool())
        return await asyncio.shield(self._train_pool_start)

    async def _start_training_pool(self) -> WorkerPool:
        assert self._make_train_pool is not None  # require(TRAIN) refused a model that does not train
        pool = self._make_train_pool()
        try:
            await pool.start()
        except BaseException:
            self._train_pool_start = None  # the next training tries again
            await pool.stop()
            raise
        self._train_pool = pool
        return pool

    async def kill(self, job_id: str) -> bool:
        """Kill the worker running job ``job_id`` (a training or an asynchronous
        prediction); False if none is.
        """
        if await self.predict_pool.kill(job_id):
            return True
        return self._train_pool is not None and await self._train_pool.kill(job_id)
