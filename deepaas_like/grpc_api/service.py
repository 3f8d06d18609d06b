"""The gRPC service of one model: its handlers decode a request message into a call of the
call service (:class:`~deepaas_like.serving.calls.CallService`), as the HTTP handlers do,
and encode its answer as a message.

Every call checks the API key (metadata ``authorization: Bearer <key>`` or ``x-api-key``),
carries a request id (``x-request-id``, else a fresh one) into the worker's log lines, is
counted in the metrics, and ends with the gRPC status its error maps to
(:mod:`deepaas_like.grpc_api.status`). A client that cancels, or whose deadline passes,
cancels the call: a prediction still waiting for a worker leaves the queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError, Message

from deepaas_like import api_keys
from deepaas_like.exceptions import DeepaasLikeError, JobNotFound, MalformedRequest, PluginError
from deepaas_like.grpc_api.messages import Messages
from deepaas_like.grpc_api.status import bounded, status_of
from deepaas_like.kinds import PREDICT, TRAIN, Kind
from deepaas_like.logs import new_request_id, request_id
from deepaas_like.protos.model_protos import SIGNATURES, ModelProtos
from deepaas_like.registry.records import version_id
from deepaas_like.serving import schemas
from deepaas_like.serving.calls import Call, CallService, Mode
from deepaas_like.serving.idempotency import idempotency_key
from deepaas_like.serving.model_versions import version_document
from deepaas_like.serving.served import ServedModel
from deepaas_like.serving.uploads import Uploads
from deepaas_like.settings import Settings

__all__ = [
    "ACCESS_LOG",
    "ECHOED",
    "IDEMPOTENCY_KEY",
    "UUID",
    "CallObserver",
    "Incoming",
    "ModelService",
    "Shared",
    "access_line",
    "caller_of",
    "metadata_of",
]

LOG = logging.getLogger(__name__)
#: Where access lines go, HTTP's and gRPC's.
ACCESS_LOG = logging.getLogger("deepaas_like.access")
_ACCESS_TEMPLATE = '%s "gRPC %s" %s %.6f "%s" %s'
_ACCESS_FIELDS = ("remote_address", "path", "status", "seconds", "user_agent", "request_id")
#: Called after each call with (model, method, gRPC code name, seconds).
CallObserver = Callable[[str, str, str, float], None]
#: A job's uuid: ``uuid4().hex``, 32 lower-case hexadecimal digits.
UUID = re.compile("[0-9a-f]{32}")
#: Characters of a request's value that an error message repeats.
ECHOED = 64
#: The metadata that names a job-creating call (as the HTTP header ``Idempotency-Key``).
IDEMPOTENCY_KEY = "idempotency-key"


@dataclasses.dataclass(frozen=True)
class Shared:
    """What every model's service shares with the HTTP front: the settings (API keys,
    listening), the call service (models, versions, jobs, uploads, the shutdown drain) and
    the metrics' ``on_call``.
    """

    settings: Settings
    calls: CallService
    on_call: CallObserver | None = None


def access_line(peer: str, path: str, code: str, seconds: float, user_agent: str) -> None:
    """Log one gRPC call's access line, beside the HTTP ones (logger ``deepaas_like.access``)::

        127.0.0.1:50412 "gRPC /deepaas_like.demo.Demo/Predict" OK 0.012031 "grpc-python/1.76.0" 9c4791ce...

    the client's address (gRPC's peer without its ``ipv4:``/``ipv6:`` prefix), the method's
    path, the status code's name, seconds, User-Agent and the call's request id. With
    ``--log-json`` the values are also fields: ``remote_address``, ``method`` (``gRPC``),
    ``path``, ``status`` (the code's name), ``seconds``, ``user_agent``, ``request_id``.
    """
    address = peer.split(":", 1)[1] if peer.startswith(("ipv4:", "ipv6:", "unix:")) else peer
    values = (address, path, code, seconds, user_agent, request_id.get())
    extra = dict(zip(_ACCESS_FIELDS, values, strict=True)) | {"method": "gRPC"}
    ACCESS_LOG.info(_ACCESS_TEMPLATE, *values, extra=extra)


def metadata_of(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's metadata (text values), by lower-case key."""
    return {key.lower(): value for key, value in context.invocation_metadata() or () if isinstance(value, str)}


def caller_of(metadata: dict[str, str], settings: Settings) -> api_keys.Caller:
    """Who calls, by the API key in ``authorization: Bearer <key>`` or ``x-api-key``; raises
    :class:`~deepaas_like.exceptions.Unauthorized` when the server has keys and this is none.
    """
    presented = api_keys.presented_key(metadata.get("authorization"), metadata.get("x-api-key"))
    return api_keys.authenticate(presented, settings.auth_tokens, settings.admin_tokens)


@dataclasses.dataclass(frozen=True)
class _Jobs:
    """How a kind of jobs shows in a model's service: ``Get<method>``, ``List<method>s``...;
    the job's ``message``, a listing's message and field, an event's field."""

    method: str
    message: str
    listing: str
    listed: str
    field: str


_JOBS = {
    TRAIN: _Jobs("Training", "Training", "ListTrainingsResponse", "trainings", "training"),
    PREDICT: _Jobs("Prediction", "PredictionJob", "ListPredictionJobsResponse", "predictions", "prediction"),
}


@dataclasses.dataclass(frozen=True)
class Incoming:
    """Who calls (``caller``), and the values of its ``idempotency-key`` metadata (``keys``)."""

    caller: api_keys.Caller
    keys: tuple[str, ...] = ()

    def idempotency_key(self) -> str | None:
        """The call's idempotency key, checked as the HTTP header is; raises
        :class:`~deepaas_like.exceptions.InvalidIdempotencyKey` (INVALID_ARGUMENT)."""
        return idempotency_key(list(self.keys), f"{IDEMPOTENCY_KEY} metadata")


class ModelService:
    """The handlers of one model's service (see ``protos.SIGNATURES`` for its methods)."""

    def __init__(self, model: ServedModel, protos: ModelProtos, messages: Messages, shared: Shared) -> None:
        self.model = model
        self.protos = protos
        self.messages = messages
        self.shared = shared

    def handler(self) -> grpc.GenericRpcHandler:
        """The service's methods, for ``server.add_generic_rpc_handlers``."""
        behaviours: dict[str, Any] = {
            "Predict": self._predict,
            "PredictVersion": self._predict_version,
            "Train": self._train,
            "SubmitPrediction": self._submit_prediction,
            "ListVersions": self._list_versions,
            "GetVersion": self._get_version,
            "PromoteVersion": self._promote_version,
            "RollbackVersion": self._rollback_version,
            "DeleteVersion": self._delete_version,
        }
        for kind, jobs in _JOBS.items():
            behaviours[f"Get{jobs.method}"] = functools.partial(self._get_job, kind)
            behaviours[f"List{jobs.method}s"] = functools.partial(self._list_jobs, kind)
            behaviours[f"Cancel{jobs.method}"] = functools.partial(self._cancel_job, kind)
            behaviours[f"Watch{jobs.method}"] = functools.partial(self._watch_job, kind)
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in self.protos.methods:
            request, response, streaming = SIGNATURES[method]
            make = grpc.unary_stream_rpc_method_handler if streaming else grpc.unary_unary_rpc_method_handler
            wrap = self._stream if streaming else self._unary
            handlers[method] = make(
                wrap(method, self.messages.of(request), behaviours[method]),
                # No deserializer: grpcio would answer bytes that are not the message with
                # UNKNOWN and a traceback in the log; the call parses them (see _parsed).
                response_serializer=self.messages.of(response).SerializeToString,
            )
        return grpc.method_handlers_generic_handler(self.protos.service, handlers)

    # The calls -------------------------------------------------------------------------

    async def _predict(self, request: Message, incoming: Incoming, name: str | None = None) -> Message:
        """A synchronous prediction of the model, or of its version ``name`` (``name@n``)."""
        calls = self.shared.calls
        model = await calls.target(name or self.model.name, PREDICT)
        with calls.uploads() as uploads:
            arguments = self.messages.arguments(request, uploads)
            call = Call(model.name, PREDICT, arguments, uploads, owner=incoming.caller.key_hash)
            prediction = (await calls.call(call, model)).prediction
            assert prediction is not None  # a synchronous prediction
            # Read while the uploads exist: a plugin may return one of them.
            try:
                data = prediction.data
                if prediction.file is not None:
                    data = await asyncio.to_thread(Path(prediction.file.path).read_bytes)
            finally:
                prediction.discard()
            return self.messages.predict_response(prediction, data)

    async def _predict_version(self, request: Message, incoming: Incoming) -> Message:
        version = version_id(self.model.name, request.version)  # type: ignore[attr-defined]
        return await self._predict(request.arguments, incoming, version)  # type: ignore[attr-defined]

    async def _submit(self, kind: Kind, request: Message, incoming: Incoming) -> Message:
        """A job (a training, an asynchronous prediction), or the first of its idempotency key."""
        calls = self.shared.calls
        model = await calls.target(self.model.name, kind)
        key = incoming.idempotency_key()  # before the files: a malformed key leaves no upload behind
        with calls.uploads() as uploads:
            arguments = self.messages.arguments(request, uploads)
            # The job owns the uploads from here, and deletes them when it ends.
            call = Call(model.name, kind, arguments, uploads, None, incoming.caller.key_hash, key, Mode.ASYNC)
            answer = await calls.call(call, model)
        assert answer.job is not None
        return self.messages.job(calls.document(answer.job), _JOBS[kind].message)

    async def _train(self, request: Message, incoming: Incoming) -> Message:
        return await self._submit(TRAIN, request, incoming)

    async def _submit_prediction(self, request: Message, incoming: Incoming) -> Message:
        return await self._submit(PREDICT, request, incoming)

    async def _get_job(self, kind: Kind, request: Message, incoming: Incoming) -> Message:
        calls = self.shared.calls
        await calls.resolve(self.model.name, kind)  # a disabled endpoint before a malformed uuid
        job = await calls.job(self.model.name, self._uuid(request, kind), kind, incoming.caller.visible_to)
        return self.messages.job(calls.document(job), _JOBS[kind].message)

    async def _list_jobs(self, kind: Kind, request: Message, incoming: Incoming) -> Message:
        calls, jobs = self.shared.calls, _JOBS[kind]
        await calls.resolve(self.model.name, kind)  # a disabled endpoint before invalid arguments
        query = schemas.load(schemas.ListingArgs, self.messages.arguments(request, Uploads()))
        found = await calls.jobs_of(self.model.name, kind, query, incoming.caller.visible_to)
        response = self.messages.of(jobs.listing)()
        getattr(response, jobs.listed).extend(self.messages.job(calls.document(job), jobs.message) for job in found)
        return response

    async def _cancel_job(self, kind: Kind, request: Message, incoming: Incoming) -> Message:
        calls = self.shared.calls
        await calls.resolve(self.model.name, kind)  # a disabled endpoint before a malformed uuid
        job = await calls.cancel(self.model.name, self._uuid(request, kind), kind, incoming.caller.visible_to)
        return self.messages.job(calls.document(job), _JOBS[kind].message)

    async def _watch_job(self, kind: Kind, request: Message, incoming: Incoming) -> AsyncIterator[Message]:
        """The events of the REST event stream: ``job`` with the job at each change, then
        ``end`` with its status; the stream ends when the server stops."""
        calls, jobs = self.shared.calls, _JOBS[kind]
        await calls.resolve(self.model.name, kind)  # a disabled endpoint before a malformed uuid
        feed = await calls.follow(self.model.name, self._uuid(request, kind), kind, incoming.caller.visible_to)
        event_class = self.messages.of(f"{jobs.message}Event")
        async with feed:
            async for event, data in feed:
                document = json.loads(data)
                if event == "job":
                    yield event_class(event=event, **{jobs.field: self.messages.job(document, jobs.message)})
                else:
                    yield event_class(event=event, status=document.get("status", ""))

    async def _list_versions(self, request: Message, incoming: Incoming) -> Message:
        calls = self.shared.calls
        records = await calls.versions.list(self.model.name)
        versions = [calls.described(record, incoming.caller) for record in records]
        document = {"promoted_version": calls.router.promoted(self.model.name), "versions": versions}
        return self.messages.job(document, "ListVersionsResponse")

    async def _get_version(self, request: Message, incoming: Incoming) -> Message:
        calls = self.shared.calls
        record = await calls.versions.find(self.model.name, request.version)  # type: ignore[attr-defined]
        return self.messages.job(calls.described(record, incoming.caller), "ModelVersion")

    async def _promote_version(self, request: Message, incoming: Incoming) -> Message:
        calls = self.shared.calls
        await calls.promote(self.model.name, request.version, incoming.caller)  # type: ignore[attr-defined]
        return self._serving()

    async def _rollback_version(self, request: Message, incoming: Incoming) -> Message:
        await self.shared.calls.rollback(self.model.name, incoming.caller)
        return self._serving()

    async def _delete_version(self, request: Message, incoming: Incoming) -> Message:
        calls = self.shared.calls
        record = await calls.delete_version(self.model.name, request.version, incoming.caller)  # type: ignore[attr-defined]
        return self.messages.job(version_document(record, "deleted", False), "ModelVersion")

    def _serving(self) -> Message:
        promoted = self.shared.calls.router.promoted(self.model.name)
        return self.messages.job({"model": self.model.name, "promoted_version": promoted}, "Serving")

    def _uuid(self, request: Message, kind: Kind = TRAIN) -> str:
        """The job's uuid a request names. Raises :class:`JobNotFound`, repeating at most
        :data:`ECHOED` characters of it, when it is no uuid at all."""
        uuid: str = request.uuid  # type: ignore[attr-defined]
        if UUID.fullmatch(uuid) is None:
            shown = repr(bounded(uuid, ECHOED))
            what = "training" if kind == TRAIN else "prediction"
            raise JobNotFound(f"no {what} {shown} for model {self.model.name!r}: a uuid is 32 hexadecimal digits")
        return uuid

    # What every call does ----------------------------------------------------------------

    def _unary(
        self,
        method: str,
        request_class: type[Message],
        behaviour: Callable[[Message, Incoming], Awaitable[Message]],
    ) -> Callable[[bytes, grpc.aio.ServicerContext], Awaitable[Message]]:
        async def call(data: bytes, context: grpc.aio.ServicerContext) -> Message:
            async with self._call(method, context) as caller:
                return await behaviour(_parsed(request_class, data), caller)
            raise AssertionError("unreachable: _call aborts the call on errors")  # pragma: no cover

        return call

    def _stream(
        self,
        method: str,
        request_class: type[Message],
        behaviour: Callable[[Message, Incoming], AsyncIterator[Message]],
    ) -> Callable[[bytes, grpc.aio.ServicerContext], AsyncIterator[Message]]:
        async def call(data: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
            async with self._call(method, context) as caller:
                async for message in behaviour(_parsed(request_class, data), caller):
                    yield message

        return call

    @contextlib.asynccontextmanager
    async def _call(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[Incoming]:
        """Check the API key, then run the call with its request id; map its error to a
        status, count it in the metrics."""
        metadata = metadata_of(context)
        # Each call runs in a task of its own: the id is the call's alone, and ends with it.
        request_id.set(new_request_id(metadata.get("x-request-id")))
        started = time.perf_counter()
        code = "OK"
        try:
            keys = tuple(
                v for k, v in context.invocation_metadata() or () if k.lower() == IDEMPOTENCY_KEY and isinstance(v, str)
            )
            yield Incoming(caller_of(metadata, self.shared.settings), keys)
        except DeepaasLikeError as error:
            status = status_of(error)
            code = status.code.name
            if error.status >= 500 and not isinstance(error, PluginError):  # plugin errors: the worker logged them
                LOG.error("gRPC %s/%s: %s", self.protos.service, method, error.message)
            await context.abort(status.code, status.details, status.trailing_metadata)
        except asyncio.CancelledError:
            code = "CANCELLED"
            raise
        except Exception as error:  # noqa: BLE001 - the last line of defence: a status, and keep serving
            if isinstance(error, grpc.aio.AbortError):
                raise
            code = "INTERNAL"
            LOG.exception("unhandled error in gRPC %s/%s", self.protos.service, method)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal server error: {type(error).__name__}")
        finally:
            seconds = time.perf_counter() - started
            if self.shared.on_call is not None:
                self.shared.on_call(self.model.name, method, code, seconds)
            if self.shared.settings.access_log and ACCESS_LOG.isEnabledFor(logging.INFO):
                path = f"/{self.protos.service}/{method}"
                access_line(context.peer() or "-", path, code, seconds, metadata.get("user-agent", "-"))


def _parsed(request_class: type[Message], data: bytes) -> Message:
    """The request message in ``data``. Raises :class:`MalformedRequest` (INVALID_ARGUMENT)
    when the bytes are not one."""
    try:
        return request_class.FromString(data)
    except DecodeError as error:
        raise MalformedRequest(f"the request is not a {request_class.DESCRIPTOR.name} message: {error}") from None
