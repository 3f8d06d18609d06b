"""Handlers of the DEEPaaS V2 routes: decode a request into a call of the call service
(:class:`~deepaas_like.serving.calls.CallService`), encode its answer."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web
from aiohttp_sse import sse_response
from marshmallow import ValidationError, fields

from deepaas_like.api.app_keys import CALLS, LINKS, SETTINGS
from deepaas_like.api.arguments import Limits, decode_arguments, listing_arguments
from deepaas_like.api.documents import job_document
from deepaas_like.api.idempotency import idempotency_key
from deepaas_like.api.responses import json_response, prediction_response
from deepaas_like.api.security import caller
from deepaas_like.api.v2.model_versions import described
from deepaas_like.exceptions import InvalidArguments, PluginError
from deepaas_like.jobs.states import DONE
from deepaas_like.kinds import PREDICT, TRAIN, Kind
from deepaas_like.negotiation import JSON, best_match, is_json
from deepaas_like.protos import proto_file
from deepaas_like.serving.calls import Call, Mode
from deepaas_like.serving.router import ModelHandle

__all__ = [
    "cancel_prediction",
    "cancel_training",
    "get_model",
    "get_prediction",
    "get_training",
    "list_models",
    "list_predictions",
    "list_trainings",
    "predict",
    "prediction_events",
    "protos",
    "start_training",
    "training_events",
    "version_v2",
    "api_versions",
]


def _name(request: web.Request) -> str:
    return request.match_info["model_name"]


def _limits(request: web.Request) -> Limits:
    settings = request.app[SETTINGS]
    return Limits(settings.client_max_size, settings.body_timeout or None, settings.max_form_parts)


def _version(request: web.Request) -> dict[str, Any]:
    href = request.app[LINKS].url_for(request, "version_v2")
    return {"version": "stable", "id": "v2", "links": [{"rel": "self", "type": "application/json", "href": href}]}


def _metadata(request: web.Request, model: ModelHandle) -> dict[str, Any]:
    """The model's metadata; a model that makes versions says which one its name serves
    (``promoted_version``, None: the plugin itself), a version describes itself
    (``model_version``, see :func:`version_document`).
    """
    metadata = model.metadata()
    href = request.app[LINKS].url_for(request, "model", model_name=model.name)
    metadata.setdefault("links", [{"rel": "self", "type": "application/json", "href": href}])
    if model.version is not None:
        metadata["model_version"] = described(request, model.version)
    elif model.makes_versions:
        metadata["promoted_version"] = request.app[CALLS].router.promoted(model.name)
    return metadata


async def api_versions(request: web.Request) -> web.Response:
    links = []
    if request.app[SETTINGS].doc_endpoint:
        links = [
            {"rel": "help", "type": "text/html", "href": request.app[LINKS].url(request, "/api")},
            {"rel": "alternate", "type": "text/html", "href": request.app[LINKS].url(request, "/web/")},
            {
                "rel": "describedby",
                "type": "application/json",
                "href": request.app[LINKS].url(request, "/swagger.json"),
            },
        ]
    return json_response({"versions": [_version(request)], "links": links})


async def version_v2(request: web.Request) -> web.Response:
    return json_response(_version(request))


async def list_models(request: web.Request) -> web.Response:
    """Every served model, then every version of them (as last read from the database)."""
    served = request.app[CALLS].router.listed()
    return json_response({"models": [_listed(request, m) for m in served]})


def _listed(request: web.Request, model: ModelHandle) -> dict[str, Any]:
    """The model's metadata in the listing; for one whose ``get_metadata`` failed, its id,
    name and links with ``error``: ``{"status", "message"}`` as its own route answers them
    (DEEPaaS answers 500 for the whole list then, hiding every other model).
    """
    try:
        return _metadata(request, model)
    except PluginError as error:
        href = request.app[LINKS].url_for(request, "model", model_name=model.name)
        return {
            "id": model.name,
            "name": model.name,
            "links": [{"rel": "self", "type": "application/json", "href": href}],
            "error": {"status": error.status, "message": error.message},
        }


async def get_model(request: web.Request) -> web.Response:
    return json_response(_metadata(request, await request.app[CALLS].resolve(_name(request))))


async def protos(request: web.Request) -> web.Response:
    """The ``.proto`` file of the model's gRPC service (as ``--grpc-port`` serves it)."""
    model = await request.app[CALLS].resolve(_name(request))
    name, text = proto_file(model.schemas)
    headers = {hdrs.CONTENT_DISPOSITION: f'inline; filename="{name}"'}
    return web.Response(text=text, content_type="text/plain", headers=headers)


async def predict(request: web.Request) -> web.StreamResponse:
    calls = request.app[CALLS]
    model = await calls.target(_name(request), PREDICT)
    mode = Mode.ASYNC if _wants_async(request) else Mode.SYNC
    calls.check_mode(model, mode)
    # Checked before the body is read: a malformed key must not leave an upload behind.
    key = idempotency_key(request) if mode == Mode.ASYNC else None
    with calls.uploads() as uploads:
        assert model.schemas.predict is not None  # target() checked the hook
        arguments = await decode_arguments(
            request, model.schemas.predict, uploads, _limits(request), negotiated=bool(model.schemas.accept_choices)
        )
        # A job's POST answers with the job (JSON): its Accept header does not pick the result.
        call = Call(
            _name(request),
            PREDICT,
            arguments,
            uploads,
            request.headers.get(hdrs.ACCEPT),
            caller(request).key_hash,
            key,
            mode,
        )
        answer = await calls.call(call, model)
        if answer.job is not None:
            location = request.app[LINKS].url_for(request, "prediction", model_name=model.name, uuid=answer.job.uuid)
            headers = {hdrs.LOCATION: location, "Preference-Applied": "respond-async"}
            return json_response(job_document(answer.job), status=202, headers=headers)
        assert answer.prediction is not None
        # Encoded while the uploads exist: a plugin may return one of them.
        return prediction_response(answer.prediction)


_BOOLEAN = fields.Boolean()


def _wants_async(request: web.Request) -> bool:
    """``Prefer: respond-async`` (RFC 7240) or ``?async=true``; raises ``InvalidArguments``
    for an ``async`` value that is not a boolean.
    """
    preferences = {
        item.split(";")[0].split("=")[0].strip().lower()
        for header in request.headers.getall("Prefer", [])
        for item in header.split(",")
    }
    flag = False
    if "async" in request.query:
        try:
            flag = _BOOLEAN.deserialize(request.query["async"])
        except ValidationError as error:
            raise InvalidArguments({"async": error.messages}) from None
    return "respond-async" in preferences or flag


async def start_training(request: web.Request) -> web.Response:
    calls = request.app[CALLS]
    model = await calls.target(_name(request), TRAIN)
    key = idempotency_key(request)  # before the body: a malformed key must not leave an upload behind
    with calls.uploads() as uploads:
        assert model.schemas.train is not None  # target() checked the hook
        arguments = await decode_arguments(request, model.schemas.train, uploads, _limits(request))
        # The job owns the uploads from here, and deletes them when it ends.
        call = Call(_name(request), TRAIN, arguments, uploads, None, caller(request).key_hash, key, Mode.ASYNC)
        answer = await calls.call(call, model)
    assert answer.job is not None
    return json_response(job_document(answer.job))


async def get_prediction(request: web.Request) -> web.StreamResponse:
    """The asynchronous prediction's job object; once done, its result in the media type
    the ``Accept`` header prefers when that is the stored result's type.
    """
    calls = request.app[CALLS]
    job = await calls.job(_name(request), request.match_info["uuid"], PREDICT, caller(request).visible_to)
    if job.status == DONE and job.media_type and not is_json(job.media_type):
        accept = request.headers.get(hdrs.ACCEPT, "")
        if accept and best_match(accept, [JSON, job.media_type]) == job.media_type:
            stored = await calls.result(job)  # a file, streamed as it is read
            if stored is not None:
                return prediction_response(stored)
    return json_response(job_document(job))


async def get_training(request: web.Request) -> web.Response:
    return await _get(request, TRAIN)


async def _get(request: web.Request, kind: Kind) -> web.Response:
    job = await request.app[CALLS].job(_name(request), request.match_info["uuid"], kind, caller(request).visible_to)
    return json_response(job_document(job))


async def cancel_prediction(request: web.Request) -> web.Response:
    return await _cancel(request, PREDICT)


async def cancel_training(request: web.Request) -> web.Response:
    return await _cancel(request, TRAIN)


async def _cancel(request: web.Request, kind: Kind) -> web.Response:
    calls = request.app[CALLS]
    job = await calls.cancel(_name(request), request.match_info["uuid"], kind, caller(request).visible_to)
    return json_response(job_document(job))


async def list_predictions(request: web.Request) -> web.Response:
    return await _list(request, PREDICT)


async def list_trainings(request: web.Request) -> web.Response:
    return await _list(request, TRAIN)


async def _list(request: web.Request, kind: Kind) -> web.Response:
    calls = request.app[CALLS]
    await calls.resolve(_name(request), kind)  # 404 and 402 before the query's 422
    query = await listing_arguments(request)
    jobs = await calls.jobs_of(_name(request), kind, query, caller(request).visible_to)
    return json_response([job_document(job) for job in jobs])


async def training_events(request: web.Request) -> web.StreamResponse:
    return await _events(request, TRAIN)


async def prediction_events(request: web.Request) -> web.StreamResponse:
    return await _events(request, PREDICT)


async def _events(request: web.Request, kind: Kind) -> web.StreamResponse:
    """Server-Sent Events: a ``job`` event with the job object whenever its status,
    progress or messages change, then an ``end`` event once it has ended. Streams end
    when the server stops (the client reconnects elsewhere).
    """
    uuid = request.match_info["uuid"]
    # 404 before the stream starts. Every stream of one job shares one reader of it.
    feed = await request.app[CALLS].follow(_name(request), uuid, kind, caller(request).visible_to)
    async with feed, sse_response(request) as stream:
        async for event, data in feed:
            await stream.send(data, event=event)
    return stream
