"""Handlers of the DEEPaaS V2 routes: parse, call the model layer, respond."""

from __future__ import annotations

from typing import Any

from aiohttp import hdrs, web
from aiohttp_apigami import docs

from deepaas_like.api.arguments import Uploads, parse_arguments
from deepaas_like.api.keys import MODELS, SETTINGS, TRAININGS
from deepaas_like.api.negotiation import choose_media_type
from deepaas_like.api.responses import prediction_response
from deepaas_like.exceptions import EndpointDisabled, HookNotImplemented, ModelNotFound
from deepaas_like.model.args import accept_default
from deepaas_like.model.wrapper import ModelWrapper


def _model(request: web.Request) -> ModelWrapper:
    name = request.match_info["model_name"]
    try:
        return request.app[MODELS][name]
    except KeyError:
        raise ModelNotFound(f"model {name!r} not found; served: {', '.join(request.app[MODELS])}") from None


def _url(request: web.Request, path: str) -> str:
    return str(request.url.with_path(request.app[SETTINGS].base_path + path).with_query(None))


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


@docs(tags=["versions"], summary="API versions")
async def versions(request: web.Request) -> web.Response:
    links = []
    if request.app[SETTINGS].doc_endpoint:
        links = [
            {"rel": "help", "type": "text/html", "href": _url(request, "/api")},
            {"rel": "describedby", "type": "application/json", "href": _url(request, "/swagger.json")},
        ]
    return web.json_response({"versions": [_version(request)], "links": links})


@docs(tags=["versions"], summary="The v2 API version")
async def version_v2(request: web.Request) -> web.Response:
    return web.json_response(_version(request))


@docs(tags=["models"], summary="Every served model's metadata")
async def list_models(request: web.Request) -> web.Response:
    return web.json_response({"models": [_metadata(request, m) for m in request.app[MODELS].values()]})


async def get_model(request: web.Request) -> web.Response:
    return web.json_response(_metadata(request, _model(request)))


async def predict(request: web.Request) -> web.StreamResponse:
    settings = request.app[SETTINGS]
    model = _model(request)
    if not settings.predict_endpoint:
        raise EndpointDisabled("the predict endpoint is disabled on this server")
    if model.predict_schema is None:
        raise HookNotImplemented(f"model {model.name!r} does not implement predict()")
    uploads = Uploads(settings.upload_dir)
    try:
        kwargs, sent = await parse_arguments(request, model.predict_schema, uploads, settings.client_max_size)
        offered = model.accept_choices
        media_type = choose_media_type(
            request.headers.get(hdrs.ACCEPT),
            kwargs.get("accept") if "accept" in sent else None,
            offered,
            accept_default(model.description.predict_args or {}),
        )
        if offered:
            kwargs["accept"] = media_type
        result = await model.predict(kwargs)
        return prediction_response(result, media_type, wrap=model.response_schema is None)
    finally:
        uploads.cleanup()


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
    uploads = Uploads(settings.upload_dir)
    try:
        kwargs, _ = await parse_arguments(request, model.train_schema, uploads, settings.client_max_size)
    except BaseException:
        uploads.cleanup()
        raise
    # The training owns its uploads from here and deletes them when it ends.
    training = await request.app[TRAININGS].start(model, kwargs, uploads.cleanup)
    return web.json_response(training)


async def list_trainings(request: web.Request) -> web.Response:
    model = _check_train_endpoint(request)
    return web.json_response(await request.app[TRAININGS].list(model.name))


async def get_training(request: web.Request) -> web.Response:
    model = _check_train_endpoint(request)
    return web.json_response(await request.app[TRAININGS].get(model.name, request.match_info["uuid"]))


async def cancel_training(request: web.Request) -> web.Response:
    model = _check_train_endpoint(request)
    return web.json_response(await request.app[TRAININGS].cancel(model, request.match_info["uuid"]))
