"""The router: what serves a call that names a model, ``name`` or ``name@n``.

A model's name is served by its plugin, or by its promoted version once one is promoted; a
version id (``text_classifier@3``) by that version's own workers, loaded on its first call
(:class:`~deepaas_like.serving.model_versions.ModelVersions`). As in Ray Serve's router, a
version is an attribute of the route, looked up at call time, not a back-reference from a
model to a version manager: :class:`ServedModel` knows nothing of versions.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from deepaas_like.exceptions import HookNotImplemented, ModelNotFound
from deepaas_like.kinds import PREDICT, TRAIN, Kind
from deepaas_like.registry.records import VersionRecord
from deepaas_like.results import Prediction
from deepaas_like.serving.model_versions import ModelVersions
from deepaas_like.serving.schemas import ModelSchemas
from deepaas_like.serving.served import ServedModel
from deepaas_like.workers.base import ProgressCallback

__all__ = ["ModelHandle", "Router"]


@dataclasses.dataclass(frozen=True)
class ModelHandle:
    """What serves the calls of one name: the served ``model`` (the plugin's workers and
    trainings) and, for a version named by id (``name@n``), its ``version`` record. A
    model's own name follows its promotion at each call. It is what the job runner runs
    jobs on (its ``Servable``), so that asynchronous predictions follow promotions too.
    """

    router: Router
    model: ServedModel
    version: VersionRecord | None = None

    @property
    def name(self) -> str:
        """The name calls use: the model's, or the version's id."""
        return self.model.name if self.version is None else self.version.id

    @property
    def schemas(self) -> ModelSchemas:
        """The model's description, shared by its versions."""
        return self.model.schemas

    @property
    def makes_versions(self) -> bool:
        """Whether a training of this name makes a version (never for a version itself)."""
        return self.version is None and self.model.makes_versions

    def accepts(self, kind: Kind | str) -> bool:
        """Whether calls of ``kind`` are served: a version takes predictions only."""
        return (self.version is None or kind == PREDICT) and self.model.accepts(kind)

    def require(self, kind: Kind | str) -> None:
        """Raise ``HookNotImplemented`` (501) unless calls of ``kind`` are served."""
        if self.version is not None and kind != PREDICT:
            raise HookNotImplemented(f"{self.name} is a model version: train its model, {self.model.name}")
        self.model.require(kind)

    def metadata(self) -> dict[str, Any]:
        """The plugin's metadata (see :meth:`ServedModel.metadata`); a version's carries its
        id (and as its name, unless the plugin names itself).
        """
        metadata = self.model.metadata()
        if self.version is not None:
            if metadata.get("name") == self.model.name:
                metadata["name"] = self.name
            metadata["id"] = self.name
        return metadata

    async def predict(
        self, kwargs: dict[str, Any], job_id: str | None = None, on_progress: ProgressCallback | None = None
    ) -> Prediction:
        """Predict with what serves this name now (see :meth:`Router.predict`)."""
        return await self.router.predict(self, kwargs, job_id, on_progress)

    async def train(
        self,
        kwargs: dict[str, Any],
        job_id: str,
        on_progress: ProgressCallback | None = None,
        save_to: str | None = None,
    ) -> Any:
        """Train the model (see :meth:`ServedModel.train`); a version refuses (501)."""
        self.require(TRAIN)
        return await self.model.train(kwargs, job_id, on_progress, save_to)

    async def kill(self, job_id: str) -> bool:
        """Kill the worker running job ``job_id``, the model's or a version's; False if none is."""
        return await self.router.kill(self, job_id)


class Router:
    """Resolves names to :class:`ModelHandle` s over the served ``models`` and, when the
    server keeps them, their ``versions``.
    """

    def __init__(self, models: dict[str, ServedModel], versions: ModelVersions | None = None) -> None:
        self.models = models
        self.versions = versions
        self._handles = {name: ModelHandle(self, model) for name, model in models.items()}

    def handles(self) -> dict[str, ModelHandle]:
        """A handle per served model's name (what the job runner runs jobs on)."""
        return dict(self._handles)

    async def resolve(self, name: str) -> ModelHandle:
        """What serves ``name``: a served model, or a version by its id. Raises
        ``ModelNotFound`` (404; also for a version that does not exist).
        """
        handle = self._handles.get(name)
        if handle is not None:
            return handle
        record = await self.versions.resolve(name) if self.versions is not None else None
        if record is None:
            raise ModelNotFound(f"model {name!r} not found; served: {', '.join(self.models)}")
        return ModelHandle(self, self.models[record.model], record)

    def listed(self) -> list[ModelHandle]:
        """Every served model, then every version of them (as last read from the database)."""
        known = self.versions.known.values() if self.versions is not None else ()
        return [*self._handles.values(), *(ModelHandle(self, self.models[v.model], v) for v in known)]

    def promoted(self, model: str) -> str | None:
        """The id of the version ``model``'s name serves (None: the plugin itself)."""
        return self.versions.promoted(model) if self.versions is not None else None

    async def predict(
        self,
        handle: ModelHandle,
        kwargs: dict[str, Any],
        job_id: str | None = None,
        on_progress: ProgressCallback | None = None,
    ) -> Prediction:
        """Predict with the version ``handle`` names, else the version its model's name is
        promoted to, else the plugin. Raises what :meth:`ServedModel.predict` raises, and
        ``VersionNotFound``/``VersionUnavailable`` for a version.
        """
        handle.require(PREDICT)
        vid = handle.version.id if handle.version is not None else self.promoted(handle.model.name)
        if vid is None or self.versions is None:
            return await handle.model.predict(kwargs, job_id, on_progress)
        return await self.versions.predict(vid, kwargs, job_id, on_progress)

    async def kill(self, handle: ModelHandle, job_id: str) -> bool:
        """Kill the worker running job ``job_id`` (the model's, or a version's); False if none is."""
        if await handle.model.kill(job_id):
            return True
        return self.versions is not None and await self.versions.kill(job_id)
