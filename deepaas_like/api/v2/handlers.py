"""Handlers of the DEEPaaS V2 routes: parse, call the model layer, respond."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web
from aiohttp_sse import sse_response
from marshmallow import EXCLUDE, Schema, ValidationError, fields, validate

from deepaas_like.api.arguments import Uploads, load_arguments, parser, read_arguments
from deepaas_like.api.idempotency import idempotency_key
from deepaas_like.api.keys import DRAIN, JOBS, LINKS, MODELS, SETTINGS
from deepaas_like.api.negotiation import JSON, best_match, choose_media_type, is_json
from deepaas_like.api.responses import json_response, prediction_response
from deepaas_like.api.security import caller
from deepaas_like.exceptions import EndpointDisabled, HookNotImplemented, InvalidArguments, ModelNotFound
from deepaas_like.jobs.models import DONE, PREDICT, STATES, TRAIN
from deepaas_like.model.wrapper import ModelWrapper


def _model(request: web.Request) -> ModelWrapper:
    name = request.match_info["model_name"]
    try:
        return request.app[MODELS][name]
    except KeyError:
        raise ModelNotFound(f"model {name!r} not found; served: {', '.join(request.app[MODELS])}") from None


def _url(request: web.Request, path: str) -> str:
    return request.app[LINKS].url(request, path)


def _version(request: web.Request) -> dict[str, Any]:
    return {
        "version": "stable",
        "id": "v2",
        "links": [{"rel": "self", "type": "application/json", "href": _url(request, "/v2/")}],
    }


def _metadata(request: web.Request, model: ModelWrapper) -> dict[str, Any]:
    metadata = model.metadata()
    metadata.setdefault(
        "links", [{"rel": "self", "type": "application/json", "href": _url(request, f"/v2/models/{model.name}/")}]
    )
    return metadata


async def versions(request: web.Request) -> web.Response:
    links = []
    if request.app[SETTINGS].doc_endpoint:
        links = [
            {"rel": "help", "type": "text/html", "href": _url(request, "/api")},
            {"rel": "describedby", "type": "application/json", "href": _url(request, "/swagger.json")},
        ]
    return json_response({"versions": [_version(request)], "links": links})


async def version_v2(request: web.Request) -> web.Response:
    return json_response(_version(request))


async def list_models(request: web.Request) -> web.Response:
    return json_response({"models": [_metadata(request, m) for m in request.app[MODELS].values()]})


async def get_model(request: web.Request) -> web.Response:
    return json_response(_metadata(request, _model(request)))


async def predict(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    model = _model(request)
    if not settings.predict_endpoint:
        raise EndpointDisabled("the predict endpoint is disabled on this server")
    if model.predict_schema is None:
        raise HookNotImplemented(f"model {model.name!r} does not implement predict()")
    uploads = Uploads(settings.upload_dir, settings.database_url)
    handed_over = False
    as_job = _wants_async(request)
    try:
        raw = await read_arguments(request, uploads, settings.client_max_size, settings.body_timeout or None)
        sent = raw.get("accept")
        media_type = choose_media_type(
            # A job's POST answers with the job (JSON); its Accept does not pick the result.
            None if as_job else request.headers.get(hdrs.ACCEPT),
            sent if isinstance(sent, str) else None,
            model.accept_choices,
            model.accept_default,
        )
        if model.accept_choices and sent is None:
            raw["accept"] = media_type
        kwargs = await load_arguments(request, raw, model.predict_schema)
        if as_job:
            job = await request.app[JOBS].submit(
                model, PREDICT, kwargs, uploads.directory, caller(request).key_hash, idempotency_key(request)
            )
            handed_over = True
            location = _url(request, f"/v2/models/{model.name}/predict/{job['uuid']}")
            headers = {hdrs.LOCATION: location, "Preference-Applied": "respond-async"}
            return json_response(job, status=202, headers=headers)
        with request.app[DRAIN]:  # answered 503 if the server must stop first
            result = await model.predict(kwargs)
        return prediction_response(result, kwargs.get("accept", media_type))
    finally:
        if not handed_over:
            uploads.cleanup()


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


async def get_prediction(request: web.Request) -> web.StreamResponse:
    """The asynchronous prediction's job object; once done, its result in the media type
    the ``Accept`` header prefers when that is the stored result's type.
    """
    model = _model(request)
    job = await request.app[JOBS].get(model.name, request.match_info["uuid"], PREDICT, caller(request).visible_to)
    if job.status == DONE and job.media_type and not is_json(job.media_type):
        accept = request.headers.get(hdrs.ACCEPT, "")
        if accept and best_match(accept, [JSON, job.media_type]) == job.media_type:
            stored = await request.app[JOBS].result(job)  # a file, streamed as it is read
            return prediction_response(stored, job.media_type)
    return json_response(job.to_dict())


async def cancel_prediction(request: web.Request) -> web.Response:
    model = _model(request)
    return json_response(await request.app[JOBS].cancel(model, request.match_info["uuid"], PREDICT, caller(request).visible_to))


def _check_train_endpoint(request: web.Request) -> ModelWrapper:
    model = _model(request)
    if not request.app[SETTINGS].train_endpoint:
        raise EndpointDisabled("the train endpoint is disabled on this server")
    return model


async def start_training(request: web.Request) -> web.Response:
    settings = request.app[SETTINGS]
    model = _check_train_endpoint(request)
    if model.train_schema is None:
        raise HookNotImplemented(f"model {model.name!r} does not implement train()")
    uploads = Uploads(settings.upload_dir, settings.database_url)
    try:
        raw = await read_arguments(request, uploads, settings.client_max_size, settings.body_timeout or None)
        kwargs = await load_arguments(request, raw, model.train_schema)
        # The job owns the uploads once it is recorded, and deletes them when it ends.
        job = await request.app[JOBS].submit(
            model, TRAIN, kwargs, uploads.directory, caller(request).key_hash, idempotency_key(request)
        )
    except BaseException:
        uploads.cleanup()
        raise
    return json_response(job)


MAX_OFFSET = 2**63 - 1  # the largest a database's 64-bit integer holds


class ListingArgs(Schema):
    """Query string of job listings: filter by ``status``, page with ``limit``/``offset``."""

    status = fields.Str(validate=validate.OneOf(STATES))
    limit = fields.Int(validate=validate.Range(min=1, max=10_000))
    offset = fields.Int(load_default=0, validate=validate.Range(min=0, max=MAX_OFFSET))


async def _list(request: web.Request, model: ModelWrapper, kind: str) -> web.Response:
    query = await parser.parse(ListingArgs(), request, location="query", unknown=EXCLUDE)
    return json_response(await request.app[JOBS].list(model.name, kind, **query, visible_to=caller(request).visible_to))


async def list_trainings(request: web.Request) -> web.Response:
    return await _list(request, _check_train_endpoint(request), TRAIN)


async def list_predictions(request: web.Request) -> web.Response:
    return await _list(request, _model(request), PREDICT)


async def get_training(request: web.Request) -> web.Response:
    model = _check_train_endpoint(request)
    job = await request.app[JOBS].get(model.name, request.match_info["uuid"], TRAIN, caller(request).visible_to)
    return json_response(job.to_dict())


async def cancel_training(request: web.Request) -> web.Response:
    model = _check_train_endpoint(request)
    return json_response(await request.app[JOBS].cancel(model, request.match_info["uuid"], TRAIN, caller(request).visible_to))


async def training_events(request: web.Request) -> web.StreamResponse:
    return await _events(request, _check_train_endpoint(request), TRAIN)


async def prediction_events(request: web.Request) -> web.StreamResponse:
    return await _events(request, _model(request), PREDICT)


async def _events(request: web.Request, model: ModelWrapper, kind: str) -> web.StreamResponse:
    """Server-Sent Events: a ``job`` event with the job object whenever its status,
    progress or messages change, then an ``end`` event once it has ended. Streams end
    when the server stops (the client reconnects elsewhere).
    """
    uuid = request.match_info["uuid"]
    # 404 before the stream starts. Every stream of one job shares one reader of it.
    feed = await request.app[JOBS].follow(model.name, uuid, kind, caller(request).visible_to)
    async with feed, sse_response(request) as stream:
        async for event, data in feed:
            await stream.send(data, event=event)
    return stream
