"""The call service: one path for a call of a model, whichever front received it.

A front (HTTP, gRPC, the CLI's local mode) decodes its request into a :class:`Call` and
encodes the :class:`Answer`; :class:`CallService` does the rest, in this order: resolve
the model the call names (:class:`~deepaas_like.serving.router.Router`: ``name``,
``name@n``, promotions), check the endpoint is on (402) and the plugin has the hook (501),
validate the arguments against the model's schema (``accept`` chosen when the client names
none), then either run the prediction inside the shutdown drain and wait for it (a
synchronous prediction), or submit a job (an asynchronous prediction, a training). Reads of
jobs (get, list, cancel, follow, result) resolve the model the same way.

The anchors: cog's ``PredictionService`` (one layer between the fronts and the workers) and
LitServe's specs (a front only decodes and encodes).
"""

from __future__ import annotations

import dataclasses
import enum
from collections.abc import Callable, Mapping
from typing import Any

from deepaas_like.api_keys import Caller
from deepaas_like.exceptions import EndpointDisabled, Forbidden, HookNotImplemented, InvalidArguments
from deepaas_like.jobs.feed import Feed
from deepaas_like.jobs.service import Jobs
from deepaas_like.jobs.states import JobView
from deepaas_like.kinds import PREDICT, Kind
from deepaas_like.model.args import UploadedFile, is_file_field
from deepaas_like.negotiation import choose_media_type
from deepaas_like.registry.records import VersionRecord
from deepaas_like.results import Prediction
from deepaas_like.serving import schemas
from deepaas_like.serving.draining import Drain
from deepaas_like.serving.model_versions import ModelVersions, version_document
from deepaas_like.serving.router import ModelHandle, Router
from deepaas_like.serving.uploads import Uploads
from deepaas_like.workers.base import ProgressCallback

__all__ = ["SYNC_TRAINING", "Answer", "Call", "CallService", "Mode"]

#: The job id of a training run without a job (the CLI's local mode).
SYNC_TRAINING = "cli"


class Mode(enum.StrEnum):
    """Whether the client waits for the answer (``sync``: a prediction's result; a training's
    output in the CLI's local mode, which has no jobs) or gets a job at once (``async``: an
    asynchronous prediction, a training on a server).
    """

    SYNC = "sync"
    ASYNC = "async"


@dataclasses.dataclass(frozen=True)
class Call:
    """One call of a model, as every front decodes it.

    ``model`` is the name the client used (``name`` or a version id ``name@n``); ``kind``
    the endpoint (predict or train); ``arguments`` the raw arguments, before validation
    (files as :class:`~deepaas_like.model.args.UploadedFile` in ``uploads``); ``accept``
    the client's preference of media types for the result (an ``Accept`` header's value;
    None: none, the model's default); ``owner`` the hash of the caller's API key (None
    without keys); ``idempotency_key`` names a job-creating call so that a retry gets the
    first job; ``mode`` whether the client waits for the result.
    """

    model: str
    kind: Kind
    arguments: Mapping[str, Any]
    uploads: Uploads | None = None
    accept: str | None = None
    owner: str | None = None
    idempotency_key: str | None = None
    mode: Mode = Mode.SYNC


@dataclasses.dataclass(frozen=True)
class Answer:
    """What a call produced: the ``prediction`` of a synchronous one (or the ``output`` of a
    synchronous training, run with the validated ``arguments``), else the ``job`` it made
    (or the first job of its idempotency key); ``handle`` is what served it.
    """

    handle: ModelHandle
    prediction: Prediction | None = None
    job: JobView | None = None
    output: Any = None
    arguments: dict[str, Any] | None = None


class CallService:
    """Resolves, validates, submits, waits and renders calls of the models ``router``
    serves: predictions wait inside ``drain``; jobs go to ``jobs`` (the job runner's face:
    ``submit``, ``get``, ``list``, ``cancel``, ``follow``, ``result``, ``document``).
    ``endpoint_on`` says whether a kind's endpoint is on (``Settings.endpoint_on``); uploads
    go under ``upload_dir`` (None: the system's temporary directory), their folders tagged
    with ``upload_owner`` (:func:`~deepaas_like.database.database_identity`, computed once).
    With ``keys`` (the server has API keys), a model version's training is seen by its API
    key and admin keys only, and changing what a model's name serves takes an admin key.
    """

    def __init__(
        self,
        router: Router,
        jobs: Jobs | None,
        drain: Drain,
        endpoint_on: Callable[[Kind], bool],
        upload_dir: str | None = None,
        upload_owner: str = "0" * 8,
        keys: bool = False,
    ) -> None:
        self.router = router
        self.jobs = jobs
        self.drain = drain
        self.endpoint_on = endpoint_on
        self.upload_dir = upload_dir
        self.upload_owner = upload_owner
        self.keys = keys

    def uploads(self) -> Uploads:
        """A new folder for one call's uploads (``with calls.uploads() as uploads:``)."""
        return Uploads(self.upload_dir, self.upload_owner)

    # Resolving ---------------------------------------------------------------------------

    async def resolve(self, model: str, kind: Kind | None = None) -> ModelHandle:
        """What serves ``model`` (``name`` or ``name@n``); with a ``kind``, one whose endpoint
        is on. Raises ``ModelNotFound`` (404, also for a version that does not exist) and
        ``EndpointDisabled`` (402).
        """
        handle = await self.router.resolve(model)
        if kind is not None and not self.endpoint_on(kind):
            raise EndpointDisabled(f"the {kind} endpoint is disabled on this server")
        return handle

    async def target(self, model: str, kind: Kind) -> ModelHandle:
        """As :meth:`resolve`, and the plugin has the hook for ``kind``: ``HookNotImplemented`` (501)."""
        handle = await self.resolve(model, kind)
        handle.require(kind)
        return handle

    @staticmethod
    def check_mode(handle: ModelHandle, mode: Mode) -> None:
        """Raise ``HookNotImplemented`` (501) for an asynchronous prediction of a version."""
        if mode == Mode.ASYNC and handle.version is not None:
            raise HookNotImplemented(
                f"{handle.name} is a model version: it answers synchronous predictions only "
                f"(promote it to have {handle.model.name} answer asynchronous ones)"
            )

    # Calling -----------------------------------------------------------------------------

    def validate(self, handle: ModelHandle, call: Call) -> dict[str, Any]:
        """The call's arguments loaded by the model's schema of ``call.kind``; for a
        prediction of a model that offers media types, ``accept`` chosen from the client's
        preference (``call.accept``) when the arguments do not name one. Raises
        ``InvalidArguments`` (422: ``{"field": ["message", ...]}``).
        """
        schema = handle.schemas.require(call.kind)
        raw = dict(call.arguments)
        offered = handle.schemas.accept_choices
        if call.kind == PREDICT and offered and raw.get("accept") is None:
            accept = None if call.mode == Mode.ASYNC else call.accept
            raw["accept"] = choose_media_type(accept, None, offered, handle.schemas.accept_default)
        loaded = schemas.load(schema, raw)
        fields = schemas.instance(schema).fields
        not_files = {
            name: ["must be an uploaded file (multipart/form-data)"]
            for name, field in fields.items()
            if is_file_field(field) and name in raw and not isinstance(loaded.get(name), UploadedFile)
        }
        if not_files:
            raise InvalidArguments(not_files)
        return loaded

    async def call(
        self,
        call: Call,
        handle: ModelHandle | None = None,
        on_progress: ProgressCallback | None = None,
        save_to: str | None = None,
    ) -> Answer:
        """Run ``call``: a synchronous prediction's result, or the job it makes (the job
        owns ``call.uploads`` from then on). ``handle`` is what :meth:`target` resolved when
        the front looked before reading the arguments. A synchronous call tells
        ``on_progress`` what the plugin reports; a synchronous training (the CLI's local
        mode) saves the trained model to ``save_to`` (a version directory's URL) when given.
        Raises what :meth:`target` and :meth:`validate` raise, ``ShuttingDown`` (503) when
        the server must stop first, and what the prediction or the job runner raise.
        """
        if handle is None:
            handle = await self.target(call.model, call.kind)
        self.check_mode(handle, call.mode)
        kwargs = self.validate(handle, call)
        if call.kind == PREDICT and call.mode == Mode.SYNC:
            with self.drain:  # answered 503 if the server must stop first
                return Answer(handle, prediction=await handle.predict(kwargs, on_progress=on_progress))
        if call.mode == Mode.SYNC:  # a training waited for: the CLI's local mode
            output = await handle.train(kwargs, job_id=SYNC_TRAINING, on_progress=on_progress, save_to=save_to)
            return Answer(handle, output=output, arguments=kwargs)
        assert self.jobs is not None, "jobs need the job runner"
        upload_dir = call.uploads.take() if call.uploads is not None else None
        job = await self.jobs.submit(handle, call.kind, kwargs, upload_dir, call.owner, call.idempotency_key)
        return Answer(handle, job=job)

    # Reading jobs ------------------------------------------------------------------------

    def _runner(self) -> Jobs:
        assert self.jobs is not None, "jobs need the job runner"
        return self.jobs

    async def job(self, model: str, uuid: str, kind: Kind, visible_to: str | None) -> JobView:
        """Job ``uuid`` of ``model`` (of the API key hashed as ``visible_to``, when given).
        Raises ``ModelNotFound``, ``EndpointDisabled`` and ``JobNotFound``.
        """
        handle = await self.resolve(model, kind)
        return await self._runner().get(handle.name, uuid, kind, visible_to)

    async def jobs_of(self, model: str, kind: Kind, query: Mapping[str, Any], visible_to: str | None) -> list[JobView]:
        """Jobs of ``model`` as a listing's ``query`` (``schemas.ListingArgs``) asks."""
        handle = await self.resolve(model, kind)
        return await self._runner().list(handle.name, kind, **query, visible_to=visible_to)

    async def cancel(self, model: str, uuid: str, kind: Kind, visible_to: str | None) -> JobView:
        """Cancel job ``uuid`` of ``model`` (its worker is killed); returns it."""
        handle = await self.resolve(model, kind)
        return await self._runner().cancel(handle, uuid, kind, visible_to)

    async def follow(self, model: str, uuid: str, kind: Kind, visible_to: str | None) -> Feed:
        """The events of job ``uuid`` (``async with feed: async for event, data in feed``)."""
        handle = await self.resolve(model, kind)
        return await self._runner().follow(handle.name, uuid, kind, visible_to)

    async def result(self, job: JobView) -> Prediction | None:
        """The stored result of an asynchronous prediction (a file), or None."""
        return await self._runner().result(job)

    def document(self, job: JobView) -> dict[str, Any]:
        """The job as clients read it (the REST API's job object)."""
        return self._runner().document(job)

    # Model versions ----------------------------------------------------------------------

    @property
    def versions(self) -> ModelVersions:
        """The model versions; raises ``HookNotImplemented`` (501) where none are kept."""
        if self.router.versions is None:
            raise HookNotImplemented("this server keeps no model versions")
        return self.router.versions

    def sees_training(self, record: VersionRecord, caller: Caller) -> bool:
        """Whether ``caller`` may see the training that made ``record`` (as it may see that
        training's job): anyone without API keys; with them, its key and admin keys only.
        """
        if not self.keys:
            return True
        return caller.admin or (caller.key_hash is not None and caller.key_hash == record.api_key_hash)

    def require_admin(self, model: str, caller: Caller, action: str) -> None:
        """Raise ``Forbidden`` (403) unless ``caller`` may change what ``model`` serves: with
        API keys, only an admin key may (``action`` says what it tried, in the message).
        """
        if self.keys and not caller.admin:
            raise Forbidden(
                f"{action} changes what every client of {model} gets: it needs an admin key (--admin-token)"
            )

    def described(self, record: VersionRecord, caller: Caller) -> dict[str, Any]:
        """The version's document (:func:`version_document`) with its state on this server,
        as ``caller`` may see it.
        """
        state, message = self.versions.state(record.id)
        promoted = self.versions.promoted(record.model) == record.id
        return version_document(record, str(state), promoted, message, training=self.sees_training(record, caller))

    async def promote(self, model: str, number: int, caller: Caller) -> None:
        """Have ``model``'s name serve version ``number`` (see :meth:`ModelVersions.promote`)."""
        self.require_admin(model, caller, "promoting a version")
        await self.versions.promote(model, number)

    async def rollback(self, model: str, caller: Caller) -> None:
        """Undo ``model``'s latest promotion (see :meth:`ModelVersions.rollback`)."""
        self.require_admin(model, caller, "rolling back a promotion")
        await self.versions.rollback(model)

    async def delete_version(self, model: str, number: int, caller: Caller) -> VersionRecord:
        """Delete version ``number`` of ``model`` (see :meth:`ModelVersions.delete`); returns it."""
        self.require_admin(model, caller, "deleting a version")
        return await self.versions.delete(model, number)
