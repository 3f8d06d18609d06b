"""The gRPC service of one model: its handlers parse a request message, call the serving
layer (or the job runner) as the HTTP handlers do, and answer with a message.

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
from deepaas_like.exceptions import DeepaasLikeError, EndpointDisabled, JobNotFound, MalformedRequest, PluginError
from deepaas_like.grpc_api.messages import Messages
from deepaas_like.grpc_api.protos import SIGNATURES, ModelProtos
from deepaas_like.grpc_api.status import bounded, status_of
from deepaas_like.jobs.service import Jobs
from deepaas_like.kinds import PREDICT, TRAIN
from deepaas_like.logs import new_request_id, request_id
from deepaas_like.serving import schemas
from deepaas_like.serving.draining import Drain
from deepaas_like.serving.served import ServedModel
from deepaas_like.serving.uploads import Uploads
from deepaas_like.settings import Settings

LOG = logging.getLogger(__name__)
#: Called after each call with (model, method, gRPC code name, seconds).
CallObserver = Callable[[str, str, str, float], None]
#: A job's uuid: ``uuid4().hex``, 32 lower-case hexadecimal digits.
UUID = re.compile("[0-9a-f]{32}")
#: Characters of a request's value that an error message repeats.
ECHOED = 64


@dataclasses.dataclass(frozen=True)
class Shared:
    """What every model's service shares with the HTTP front: the settings (API keys, upload
    folder, endpoints), the job runner, the shutdown drain (``with drain:`` around a
    prediction; it answers :class:`~deepaas_like.exceptions.ShuttingDown` when the server
    cannot wait for it) and the metrics' ``on_call``.
    """

    settings: Settings
    jobs: Jobs
    drain: Drain
    on_call: CallObserver | None = None


def metadata_of(context: grpc.aio.ServicerContext) -> dict[str, str]:
    """The call's metadata (text values), by lower-case key."""
    return {key.lower(): value for key, value in context.invocation_metadata() or () if isinstance(value, str)}


def caller_of(metadata: dict[str, str], settings: Settings) -> api_keys.Caller:
    """Who calls, by the API key in ``authorization: Bearer <key>`` or ``x-api-key``; raises
    :class:`~deepaas_like.exceptions.Unauthorized` when the server has keys and this is none.
    """
    presented = api_keys.presented_key(metadata.get("authorization"), metadata.get("x-api-key"))
    return api_keys.authenticate(presented, settings.auth_tokens, settings.admin_tokens)


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
            "Train": self._train,
            "GetTraining": self._get_training,
            "ListTrainings": self._list_trainings,
            "CancelTraining": self._cancel_training,
            "WatchTraining": self._watch_training,
        }
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

    async def _predict(self, request: Message, caller: api_keys.Caller) -> Message:
        self._check_endpoint(PREDICT)
        settings = self.shared.settings
        with Uploads(settings.upload_dir, settings.database_url) as uploads:
            raw = self.messages.arguments(request, uploads)
            if self.model.accept_choices and "accept" not in raw:
                raw["accept"] = self.model.default_accept
            kwargs = schemas.load(self.model.predict_schema, raw)  # type: ignore[arg-type]
            with self.shared.drain:
                prediction = await self.model.predict(kwargs)
            # Read while the uploads exist: a plugin may return one of them.
            try:
                data = prediction.data
                if prediction.file is not None:
                    data = await asyncio.to_thread(Path(prediction.file.path).read_bytes)
            finally:
                prediction.discard()
            return self.messages.predict_response(prediction, data)

    async def _train(self, request: Message, caller: api_keys.Caller) -> Message:
        self._check_endpoint(TRAIN)
        settings = self.shared.settings
        with Uploads(settings.upload_dir, settings.database_url) as uploads:
            kwargs = schemas.load(self.model.train_schema, self.messages.arguments(request, uploads))  # type: ignore[arg-type]
            # The job owns the uploads from here, and deletes them when it ends.
            job = await self.shared.jobs.submit(self.model, TRAIN, kwargs, uploads.take(), caller.key_hash)
        return self.messages.training(self.shared.jobs.document(job))

    async def _get_training(self, request: Message, caller: api_keys.Caller) -> Message:
        self._check_endpoint(TRAIN)
        job = await self.shared.jobs.get(self.model.name, self._uuid(request), TRAIN, caller.visible_to)
        return self.messages.training(self.shared.jobs.document(job))

    async def _list_trainings(self, request: Message, caller: api_keys.Caller) -> Message:
        self._check_endpoint(TRAIN)
        query = schemas.load(schemas.ListingArgs, self.messages.arguments(request, Uploads()))
        jobs = await self.shared.jobs.list(self.model.name, TRAIN, **query, visible_to=caller.visible_to)
        response = self.messages.of("ListTrainingsResponse")()
        response.trainings.extend(self.messages.training(self.shared.jobs.document(job)) for job in jobs)  # type: ignore[attr-defined]
        return response

    async def _cancel_training(self, request: Message, caller: api_keys.Caller) -> Message:
        self._check_endpoint(TRAIN)
        job = await self.shared.jobs.cancel(self.model, self._uuid(request), TRAIN, caller.visible_to)
        return self.messages.training(self.shared.jobs.document(job))

    async def _watch_training(self, request: Message, caller: api_keys.Caller) -> AsyncIterator[Message]:
        """The events of the REST event stream: ``job`` with the training at each change,
        then ``end`` with its status; the stream ends when the server stops."""
        self._check_endpoint(TRAIN)
        feed = await self.shared.jobs.follow(self.model.name, self._uuid(request), TRAIN, caller.visible_to)
        event_class = self.messages.of("TrainingEvent")
        async with feed:
            async for event, data in feed:
                document = json.loads(data)
                if event == "job":
                    yield event_class(event=event, training=self.messages.training(document))
                else:
                    yield event_class(event=event, status=document.get("status", ""))

    def _check_endpoint(self, kind: str) -> None:
        if not self.shared.settings.endpoint_on(kind):
            raise EndpointDisabled(f"the {kind} endpoint is disabled on this server")

    def _uuid(self, request: Message) -> str:
        """The training's uuid a ``TrainingRequest`` names. Raises :class:`JobNotFound`,
        repeating at most :data:`ECHOED` characters of it, when it is no uuid at all."""
        uuid: str = request.uuid  # type: ignore[attr-defined]
        if UUID.fullmatch(uuid) is None:
            shown = repr(bounded(uuid, ECHOED))
            raise JobNotFound(f"no training {shown} for model {self.model.name!r}: a uuid is 32 hexadecimal digits")
        return uuid

    # What every call does ----------------------------------------------------------------

    def _unary(
        self,
        method: str,
        request_class: type[Message],
        behaviour: Callable[[Message, api_keys.Caller], Awaitable[Message]],
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
        behaviour: Callable[[Message, api_keys.Caller], AsyncIterator[Message]],
    ) -> Callable[[bytes, grpc.aio.ServicerContext], AsyncIterator[Message]]:
        async def call(data: bytes, context: grpc.aio.ServicerContext) -> AsyncIterator[Message]:
            async with self._call(method, context) as caller:
                async for message in behaviour(_parsed(request_class, data), caller):
                    yield message

        return call

    @contextlib.asynccontextmanager
    async def _call(self, method: str, context: grpc.aio.ServicerContext) -> AsyncIterator[api_keys.Caller]:
        """Check the API key, then run the call with its request id; map its error to a
        status, count it in the metrics."""
        metadata = metadata_of(context)
        # Each call runs in a task of its own: the id is the call's alone, and ends with it.
        request_id.set(new_request_id(metadata.get("x-request-id")))
        started = time.perf_counter()
        code = "OK"
        try:
            yield caller_of(metadata, self.shared.settings)
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
            if self.shared.on_call is not None:
                self.shared.on_call(self.model.name, method, code, time.perf_counter() - started)


def _parsed(request_class: type[Message], data: bytes) -> Message:
    """The request message in ``data``. Raises :class:`MalformedRequest` (INVALID_ARGUMENT)
    when the bytes are not one."""
    try:
        return request_class.FromString(data)
    except DecodeError as error:
        raise MalformedRequest(f"the request is not a {request_class.DESCRIPTOR.name} message: {error}") from None
