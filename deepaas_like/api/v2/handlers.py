"""Handlers of the DEEPaaS V2 routes: parse, call the serving layer, respond."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web
from aiohttp_sse import sse_response
from marshmallow import ValidationError, fields

from deepaas_like import grpc_api
from deepaas_like.api.arguments import Limits, Negotiation, listing_arguments, parse_arguments
from deepaas_like.api.documents import job_document
from deepaas_like.api.idempotency import idempotency_key
from deepaas_like.api.keys import DRAIN, JOBS, LINKS, MODELS, SETTINGS, VERSIONS
from deepaas_like.api.negotiation import JSON, best_match, is_json
from deepaas_like.api.responses import json_response, prediction_response
from deepaas_like.api.security import caller
from deepaas_like.api.v2.versions import described
from deepaas_like.exceptions import EndpointDisabled, HookNotImplemented, InvalidArguments, ModelNotFound, PluginError
from deepaas_like.jobs.states import DONE
from deepaas_like.kinds import PREDICT, TRAIN
from deepaas_like.serving.served import ServedModel
from deepaas_like.serving.uploads import Uploads
from deepaas_like.serving.versions import ServedVersion

#: A model as the routes see it: a served model, or one of its versions (``name@n``).
Model = ServedModel | ServedVersion


async def _model(request: web.Request, kind: str | None = None) -> Model:
    """The model the path names (a model version by its id, ``name@n``); with a ``kind``,
    one whose endpoint is on and that has the hook. Raises ``ModelNotFound`` (404, also for
    a version that does not exist), ``EndpointDisabled`` (402) and ``HookNotImplemented`` (501).
    """
    name = request.match_info["model_name"]
    models: dict[str, ServedModel] = request.app[MODELS]
    model: Model | None = models.get(name)
    if model is None:
        model = await request.app[VERSIONS].resolve(name)
    if model is None:
        raise ModelNotFound(f"model {name!r} not found; served: {', '.join(models)}")
    if kind is not None and not request.app[SETTINGS].endpoint_on(kind):
        raise EndpointDisabled(f"the {kind} endpoint is disabled on this server")
    return model


async def _callable(request: web.Request, kind: str) -> Model:
    model = await _model(request, kind)
    model.require(kind)
    return model


def _limits(request: web.Request) -> Limits:
    settings = request.app[SETTINGS]
    return Limits(settings.client_max_size, settings.body_timeout or None, settings.max_form_parts)


def _uploads(request: web.Request) -> Uploads:
    settings = request.app[SETTINGS]
    return Uploads(settings.upload_dir, settings.database_url)


def _version(request: web.Request) -> dict[str, Any]:
    href = request.app[LINKS].url_for(request, "version_v2")
    return {"version": "stable", "id": "v2", "links": [{"rel": "self", "type": "application/json", "href": href}]}


def _metadata(request: web.Request, model: Model) -> dict[str, Any]:
    """The model's metadata; a model that makes versions says which one its name serves
    (``promoted_version``, None: the plugin itself), a version describes itself
    (``model_version``, see :func:`version_document`).
    """
    metadata = model.metadata()
    href = request.app[LINKS].url_for(request, "model", model_name=model.name)
    metadata.setdefault("links", [{"rel": "self", "type": "application/json", "href": href}])
    if isinstance(model, ServedVersion):
        metadata["model_version"] = described(request, model.record)
    elif model.makes_versions:
        metadata["promoted_version"] = request.app[VERSIONS].promoted(model.name)
    return metadata


async def versions(request: web.Request) -> web.Response:
    links = []
    if request.app[SETTINGS].doc_endpoint:
        links = [
            {"rel": "help", "type": "text/html", "href": request.app[LINKS].url(request, "/api")},
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
    versions = request.app[VERSIONS]
    served: list[Model] = list(request.app[MODELS].values())
    served += [ServedVersion(versions, request.app[MODELS][v.model], v) for v in versions.known.values()]
    return json_response({"models": [_listed(request, m) for m in served]})


def _listed(request: web.Request, model: Model) -> dict[str, Any]:
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
    return json_response(_metadata(request, await _model(request)))


async def protos(request: web.Request) -> web.Response:
    """The ``.proto`` file of the model's gRPC service (as ``--grpc-port`` serves it)."""
    model = await _model(request)
    name, text = grpc_api.proto_file(model.base if isinstance(model, ServedVersion) else model)
    headers = {hdrs.CONTENT_DISPOSITION: f'inline; filename="{name}"'}
    return web.Response(text=text, content_type="text/plain", headers=headers)


async def predict(request: web.Request) -> web.StreamResponse:
    model = await _callable(request, PREDICT)
    as_job = _wants_async(request)
    if as_job and isinstance(model, ServedVersion):
        raise HookNotImplemented(
            f"{model.name} is a model version: it answers synchronous predictions only "
            f"(promote it to have {model.base.name} answer asynchronous ones)"
        )
    # A job's POST answers with the job (JSON): its Accept header does not pick the result.
    negotiation = Negotiation(
        model.accept_choices, model.accept_default, None if as_job else request.headers.get(hdrs.ACCEPT)
    )
    # Checked before the body is read: a malformed key must not leave an upload behind.
    key = idempotency_key(request) if as_job else None
    with _uploads(request) as uploads:
        kwargs = await parse_arguments(request, model.predict_schema, uploads, _limits(request), negotiation)  # type: ignore[arg-type]
        if as_job:
            owner = caller(request).key_hash
            job = await request.app[JOBS].submit(model, PREDICT, kwargs, uploads.take(), owner, key)
            location = request.app[LINKS].url_for(request, "prediction", model_name=model.name, uuid=job.uuid)
            headers = {hdrs.LOCATION: location, "Preference-Applied": "respond-async"}
            return json_response(job_document(job), status=202, headers=headers)
        with request.app[DRAIN]:  # answered 503 if the server must stop first
            prediction = await model.predict(kwargs)
        return prediction_response(prediction)


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
    model = await _callable(request, TRAIN)
    key = idempotency_key(request)  # before the body: a malformed key must not leave an upload behind
    with _uploads(request) as uploads:
        kwargs = await parse_arguments(request, model.train_schema, uploads, _limits(request))  # type: ignore[arg-type]
        owner = caller(request).key_hash
        # The job owns the uploads from here, and deletes them when it ends.
        job = await request.app[JOBS].submit(model, TRAIN, kwargs, uploads.take(), owner, key)
    return json_response(job_document(job))


async def get_prediction(request: web.Request) -> web.StreamResponse:
    """The asynchronous prediction's job object; once done, its result in the media type
    the ``Accept`` header prefers when that is the stored result's type.
    """
    model = await _model(request, PREDICT)
    job = await request.app[JOBS].get(model.name, request.match_info["uuid"], PREDICT, caller(request).visible_to)
    if job.status == DONE and job.media_type and not is_json(job.media_type):
        accept = request.headers.get(hdrs.ACCEPT, "")
        if accept and best_match(accept, [JSON, job.media_type]) == job.media_type:
            stored = await request.app[JOBS].result(job)  # a file, streamed as it is read
            if stored is not None:
                return prediction_response(stored)
    return json_response(job_document(job))


async def get_training(request: web.Request) -> web.Response:
    return await _get(request, TRAIN)


async def _get(request: web.Request, kind: str) -> web.Response:
    model = await _model(request, kind)
    job = await request.app[JOBS].get(model.name, request.match_info["uuid"], kind, caller(request).visible_to)
    return json_response(job_document(job))


async def cancel_prediction(request: web.Request) -> web.Response:
    return await _cancel(request, PREDICT)


async def cancel_training(request: web.Request) -> web.Response:
    return await _cancel(request, TRAIN)


async def _cancel(request: web.Request, kind: str) -> web.Response:
    model = await _model(request, kind)
    job = await request.app[JOBS].cancel(model, request.match_info["uuid"], kind, caller(request).visible_to)
    return json_response(job_document(job))


async def list_predictions(request: web.Request) -> web.Response:
    return await _list(request, PREDICT)


async def list_trainings(request: web.Request) -> web.Response:
    return await _list(request, TRAIN)


async def _list(request: web.Request, kind: str) -> web.Response:
    model = await _model(request, kind)
    query = await listing_arguments(request)
    jobs = await request.app[JOBS].list(model.name, kind, **query, visible_to=caller(request).visible_to)
    return json_response([job_document(job) for job in jobs])


async def training_events(request: web.Request) -> web.StreamResponse:
    return await _events(request, TRAIN)


async def prediction_events(request: web.Request) -> web.StreamResponse:
    return await _events(request, PREDICT)


async def _events(request: web.Request, kind: str) -> web.StreamResponse:
    """Server-Sent Events: a ``job`` event with the job object whenever its status,
    progress or messages change, then an ``end`` event once it has ended. Streams end
    when the server stops (the client reconnects elsewhere).
    """
    model = await _model(request, kind)
    uuid = request.match_info["uuid"]
    # 404 before the stream starts. Every stream of one job shares one reader of it.
    feed = await request.app[JOBS].follow(model.name, uuid, kind, caller(request).visible_to)
    async with feed, sse_response(request) as stream:
        async for event, data in feed:
            await stream.send(data, event=event)
    return stream
