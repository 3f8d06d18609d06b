"""The interface every worker pool implements (local processes now, Ray actors later)."""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any

from deepaas_like.exceptions import InvalidArguments, PluginError, PredictionNotJSON, ResultTooLarge
from deepaas_like.model.plugin import ModelDescription


#: Called with (fraction done or None, message or None) when plugin code reports progress.
ProgressCallback = Callable[[float | None, str | None], None]


def unwrap(outcome: tuple) -> Any:
    """The result of a :meth:`Plugin.outcome`, or the project exception it stands for."""
    if outcome[0] == "ok":
        return outcome[1]
    if outcome[0] == "invalid":
        raise InvalidArguments(outcome[1])
    if outcome[0] == "not_json":
        raise PredictionNotJSON(outcome[1])
    if outcome[0] == "too_large":
        raise ResultTooLarge(outcome[1])
    raise PluginError(outcome[1], outcome[2], outcome[3])


class WorkerPool(abc.ABC):
    """Warmed workers of one model; each runs one call at a time."""

    description: ModelDescription

    @abc.abstractmethod
    async def start(self) -> ModelDescription:
        """Start every worker, warm it, and return the plugin's description.

        Raises ``PluginLoadError`` when the plugin cannot be imported or warmed.
        """

    @abc.abstractmethod
    async def run(
        self, hook: str, kwargs: dict[str, Any], job_id: str | None = None, on_progress: ProgressCallback | None = None
    ) -> Any:
        """Run ``hook(**kwargs)`` on a free worker, waiting for one; returns its result.

        ``job_id`` names the call so that :meth:`kill` can stop it; ``on_progress``
        receives what the plugin reports through :mod:`deepaas_like.progress`. Raises
        ``PluginError``, ``InvalidArguments`` (the plugin raised a marshmallow
        ValidationError), ``PredictionNotJSON``, ``ResultTooLarge``, ``WorkerDied`` or
        ``ModelUnavailable``. A binary result may come back as a temporary
        :class:`FileResult`: the caller deletes it (``discard()``) once it is used.
        """

    @abc.abstractmethod
    async def kill(self, job_id: str) -> bool:
        """Stop the call ``job_id`` by killing its worker (replaced by a fresh one).

        Returns False when no such call is running.
        """

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop every worker."""
