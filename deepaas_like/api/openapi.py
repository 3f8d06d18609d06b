"""The OpenAPI 3 document, one operation per route of :mod:`deepaas_like.api.routes`: the
function named after each route writes it (for model routes, once per model, from the
plugin's own argument and response schemas). aiohttp-apigami serves the document; Swagger
UI is this server's page (:func:`deepaas_like.api.server_handlers.swagger_ui`) on the files
aiohttp-apigami ships. The error answers of an operation are made from the exception classes
it may raise: their ``status``, and the first line of their docstring. With API keys, the
document declares how a key is sent (:data:`SECURITY_SCHEMES`) and which operations need
one, so that Swagger UI's Authorize sends it.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from aiohttp import web
from aiohttp_apigami import AiohttpApiSpec, OpenApiVersion
from aiohttp_apigami.constants import SWAGGER_DICT
from aiohttp_apigami.swagger_ui import NAME_SWAGGER_DOCS, NAME_SWAGGER_STATIC, SWAGGER_UI_STATIC_FILES
from apispec import APISpec
from marshmallow import fields, validate

import deepaas_like
from deepaas_like import exceptions
from deepaas_like.api import server_handlers
from deepaas_like.api.arguments import BodyTimeout, BodyTooLarge, TooManyParts, UnsupportedEncoding
from deepaas_like.api.security import needs_key
from deepaas_like.jobs.states import OLDEST_FIRST, ORDERS, STATES
from deepaas_like.kinds import PREDICT, TRAIN
from deepaas_like.media import is_json
from deepaas_like.model.args import is_file_field
from deepaas_like.serving.schemas import MAX_LIMIT, MAX_OFFSET
from deepaas_like.serving.served import ServedModel
from deepaas_like.settings import Settings

__all__ = [
    "KEY_REQUIRED",
    "SECURITY_SCHEMES",
    "Documenter",
    "add_attribute_functions",
    "cancel_prediction",
    "cancel_training",
    "delete_version",
    "document",
    "document_versions",
    "errors",
    "exclusive_range_property",
    "file_field_property",
    "get_model",
    "get_prediction",
    "get_training",
    "get_version",
    "healthz",
    "list_models",
    "list_predictions",
    "list_trainings",
    "list_versions",
    "metrics",
    "predict",
    "prediction_events",
    "promote_version",
    "protos",
    "readyz",
    "rollback",
    "setup_openapi",
    "start_training",
    "training_events",
    "version_v2",
    "versions",
]

#: Writes the OpenAPI operation of one route (of ``model``, for model routes), or None when
#: the route is not served for it.
Documenter = Callable[[ServedModel | None, Settings], dict[str, Any] | None]

#: How a client sends an API key (``--auth-token``, ``--admin-token``), as
#: :func:`deepaas_like.api_keys.presented_key` reads it: either header, the same key.
SECURITY_SCHEMES: dict[str, dict[str, str]] = {
    "bearer": {
        "type": "http",
        "scheme": "bearer",
        "description": "An API key of this server (`--auth-token` or `--admin-token`), sent as "
        "`Authorization: Bearer <key>`.",
    },
    "apiKey": {
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
        "description": "The same API key, sent as `X-API-Key: <key>` instead. Authorize one of the two "
        "(with both, the bearer key is the one read).",
    },
}
#: An operation's ``security``: either scheme (OpenAPI 3.0.3, Security Requirement Object).
KEY_REQUIRED: list[dict[str, list[str]]] = [{name: []} for name in SECURITY_SCHEMES]

_FAILURE = {"type": "object", "properties": {"message": {"type": "string"}}, "required": ["message"]}
_FIELD_ERRORS = {
    "type": "object",
    "description": "messages per argument name",
    "additionalProperties": {"type": "array", "items": {"type": "string"}},
}
_JOB = {
    "type": "object",
    "properties": {
        "uuid": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "date": {"type": "string"},
        "finish_date": {"type": "string"},
        "args": {"type": "object"},
        "status": {"type": "string", "enum": list(STATES)},
        "message": {"type": "string"},
        "progress": {"type": "number", "minimum": 0, "maximum": 1},
        "events": {"type": "array", "items": {"type": "object"}},
        "metrics": {"type": "object", "additionalProperties": {"type": "number", "nullable": True}},
        "metric_history": {
            "type": "object",
            "description": "every reported value of each metric by step, [[step, value], ...] in step order "
            "(at most 1000 points per metric: past it the older half is thinned to every other point)",
            "additionalProperties": {
                "type": "array",
                "items": {"type": "array", "items": {"type": "number", "nullable": True}, "minItems": 2, "maxItems": 2},
            },
        },
        "result": {"type": "object"},
    },
    "required": ["uuid", "date", "args", "status"],
}


_LISTING = [
    {"in": "query", "name": "status", "schema": {"type": "string", "enum": list(STATES)}},
    {
        "in": "query",
        "name": "order",
        "schema": {"type": "string", "enum": list(ORDERS), "default": OLDEST_FIRST},
        "description": "by creation: `asc`, oldest first (as DEEPaaS lists trainings), or `desc`, newest first",
    },
    {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}},
    {"in": "query", "name": "offset", "schema": {"type": "integer", "minimum": 0, "maximum": MAX_OFFSET, "default": 0}},
]
_IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "a retry with the same key returns the first job (IETF httpapi idempotency-key draft)",
}
_ASYNC = [
    {
        "in": "header",
        "name": "Prefer",
        "schema": {"type": "string"},
        "description": "`respond-async` (RFC 7240) queues the prediction as a job: 202",
    },
    {"in": "query", "name": "async", "schema": {"type": "boolean"}, "description": "same as `Prefer: respond-async`"},
    _IDEMPOTENCY_KEY,
]
# One Server-Sent Event, as OpenAPI 3.2 describes an event stream's items.
_EVENT = {
    "type": "object",
    "properties": {"event": {"type": "string", "enum": ["job", "end"]}, "data": {"type": "string"}},
    "required": ["event", "data"],
}
_EVENTS = {
    "200": {
        "description": "Server-Sent Events: `job` (the job object, JSON) on every change, then `end`",
        "content": {"text/event-stream": {"schema": _EVENT}},
    }
}


def file_field_property(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:  # noqa: ARG001
    """apispec attribute function: DEEPaaS file arguments are binary strings in OpenAPI 3."""
    return {"type": "string", "format": "binary"} if is_file_field(field) else {}


def exclusive_range_property(self: Any, field: fields.Field, **kwargs: Any) -> dict[str, Any]:  # noqa: ARG001
    """apispec attribute function: a ``Range(min_inclusive=False)`` bound is exclusive, which
    OpenAPI 3.0 writes ``exclusiveMinimum: true`` beside ``minimum`` (apispec omits it).
    """
    ranges = [v for v in field.validators if isinstance(v, validate.Range)]
    found: dict[str, Any] = {}
    if any(v.min is not None and not v.min_inclusive for v in ranges):
        found["exclusiveMinimum"] = True
    if any(v.max is not None and not v.max_inclusive for v in ranges):
        found["exclusiveMaximum"] = True
    return found


def add_attribute_functions(api_spec: AiohttpApiSpec) -> None:
    """Teach apispec's marshmallow converter DEEPaaS file arguments and exclusive ranges."""
    converter = api_spec.spec.plugins[0].converter  # type: ignore[attr-defined]  # the MarshmallowPlugin
    converter.add_attribute_function(file_field_property)
    converter.add_attribute_function(exclusive_range_property)


def setup_openapi(app: web.Application, settings: Settings) -> AiohttpApiSpec:
    """Serve the document at ``/swagger.json`` and ``/openapi.json`` and Swagger UI at
    ``/api`` (its files under ``/static/swagger/``).
    """
    prefix = settings.base_path
    # aiohttp-apigami's own Swagger UI page takes no configuration: ours (same files) does.
    app.router.add_static(f"{prefix}/static/swagger", SWAGGER_UI_STATIC_FILES, name=NAME_SWAGGER_STATIC)
    app.router.add_get(f"{prefix}/api", server_handlers.swagger_ui, name=NAME_SWAGGER_DOCS)
    api_spec = AiohttpApiSpec(
        url=f"{prefix}/swagger.json",
        app=app,
        title="deepaas_like",
        version=deepaas_like.__version__,
        openapi_version=OpenApiVersion.V303,
        # Swagger UI shows it as Markdown; the link is relative to its page (<base-path>/api).
        info={
            "description": "Model serving API (DEEPaaS V2 compatible). Forms for every model, answers shown "
            "as what they are, and trainings with live charts: [the web page](web/)."
        },
    )
    add_attribute_functions(api_spec)
    return api_spec


def _json(schema: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*raised: type[exceptions.DeepaasLikeError]) -> dict[str, Any]:
    """The error answers of an operation that may raise ``raised``: per status, the first
    lines of the exceptions' docstrings; 422 carries messages per argument.
    """
    by_status: dict[int, list[str]] = {}
    for error in raised:
        reason = (error.__doc__ or error.__name__).strip().splitlines()[0].rstrip(".")
        by_status.setdefault(error.status, []).append(reason[:1].lower() + reason[1:])
    return {
        str(status): _json(_FIELD_ERRORS if status == 422 else _FAILURE, "; ".join(reasons))
        for status, reasons in sorted(by_status.items())
    }


# What every route of a model, and every route that reads jobs, may answer.
_MODEL_ERRORS = (exceptions.ModelNotFound,)
_JOB_ERRORS = (exceptions.ModelNotFound, exceptions.JobNotFound, exceptions.DatabaseUnavailable)
_PREDICT_ERRORS = (
    exceptions.ModelNotFound,
    exceptions.EndpointDisabled,
    exceptions.InvalidIdempotencyKey,
    BodyTimeout,
    BodyTooLarge,
    TooManyParts,
    UnsupportedEncoding,
    exceptions.InvalidArguments,
    exceptions.PluginError,
    exceptions.ModelUnavailable,
    exceptions.QueueFull,
    exceptions.DatabaseUnavailable,
    exceptions.ShuttingDown,
    exceptions.PredictTimeout,
    exceptions.ResultTooLarge,
)
_TRAIN_ERRORS = (
    exceptions.ModelNotFound,
    exceptions.EndpointDisabled,
    exceptions.InvalidIdempotencyKey,
    BodyTimeout,
    BodyTooLarge,
    TooManyParts,
    UnsupportedEncoding,
    exceptions.InvalidArguments,
    exceptions.HookNotImplemented,
    exceptions.DatabaseUnavailable,
)


def _request_body(schema: Any, arguments: dict[str, fields.Field]) -> dict[str, Any]:
    content = {"multipart/form-data": {"schema": schema}}
    if not any(is_file_field(field) for field in arguments.values()):
        content["application/json"] = {"schema": schema}
    # A body is required when an argument is (``accept`` is never: the server supplies it).
    required = any(field.required for name, field in arguments.items() if name != "accept")
    return {"content": content, "required": required}


_LINKS = {"type": "array", "items": {"type": "object"}}
_VERSION = {"type": "object", "properties": {"version": {"type": "string"}, "id": {"type": "string"}, "links": _LINKS}}
_SERVER = ["server"]


def versions(model: ServedModel | None, settings: Settings) -> dict[str, Any]:
    versions = {"type": "object", "properties": {"versions": {"type": "array", "items": _VERSION}, "links": _LINKS}}
    return {"tags": _SERVER, "summary": "API versions", "responses": {"200": _json(versions, "versions")}}


def version_v2(model: ServedModel | None, settings: Settings) -> dict[str, Any]:
    return {"tags": _SERVER, "summary": "The v2 API version", "responses": {"200": _json(_VERSION, "the version")}}


def list_models(model: ServedModel | None, settings: Settings) -> dict[str, Any]:
    models = {"type": "object", "properties": {"models": {"type": "array", "items": {"type": "object"}}}}
    return {"tags": _SERVER, "summary": "Metadata of every served model", "responses": {"200": _json(models, "models")}}


def healthz(model: ServedModel | None, settings: Settings) -> dict[str, Any]:
    return {"tags": _SERVER, "summary": "Liveness probe", "responses": {"200": _json({"type": "object"}, "alive")}}


def readyz(model: ServedModel | None, settings: Settings) -> dict[str, Any]:
    return {
        "tags": _SERVER,
        "summary": "Readiness probe",
        "responses": {
            "200": _json({"type": "object"}, "every model can serve"),
            "503": _json({"type": "object"}, "a model has no worker, or the job database is away"),
        },
    }


def metrics(model: ServedModel | None, settings: Settings) -> dict[str, Any]:
    text = {"description": "text format 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {"tags": _SERVER, "summary": "Prometheus metrics", "responses": {"200": text}}


def get_model(model: ServedModel | None, settings: Settings) -> dict[str, Any] | None:
    assert model is not None
    return {
        "tags": [model.name],
        "summary": f"Metadata of {model.name}",
        "responses": {"200": _json({"type": "object"}, "metadata"), **errors(*_MODEL_ERRORS)},
    }


def protos(model: ServedModel | None, settings: Settings) -> dict[str, Any] | None:
    assert model is not None
    text = {"description": "the .proto file", "content": {"text/plain": {"schema": {"type": "string"}}}}
    return {
        "tags": [model.name],
        "summary": f"The .proto file of {model.name}'s gRPC service",
        "description": "Compile it with protoc (grpc_tools.protoc) to call the model over gRPC (--grpc-port).",
        "responses": {"200": text, **errors(*_MODEL_ERRORS, exceptions.ExtraNotInstalled)},
    }


def _versioned(operation: Callable[[ServedModel], dict[str, Any]]) -> Documenter:
    """Document a version route only for models whose trainings make versions."""

    def documenter(model: ServedModel | None, settings: Settings) -> dict[str, Any] | None:
        if model is None or not model.makes_versions:
            return None
        return {"tags": [model.name], **operation(model)}

    return documenter


_MODEL_VERSION = {
    "type": "object",
    "properties": {
        "id": {"type": "string", "description": "callable as a model name: /v2/models/{id}/predict/"},
        "model": {"type": "string"},
        "version": {"type": "integer", "minimum": 1},
        "parent": {"type": "string"},
        "training": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "arguments": {"type": "object"},
        "metrics": {"type": "object", "additionalProperties": {"type": "number"}},
        "created": {"type": "string"},
        "state": {"type": "string", "enum": ["loaded", "loading", "unloaded", "unavailable", "deleted"]},
        "message": {"type": "string"},
        "promoted": {"type": "boolean"},
        "mlflow_run_id": {"type": "string"},
        "links": _LINKS,
    },
    # training, arguments and mlflow_run_id only for the training's API key and admin keys.
    "required": ["id", "model", "version", "created", "state", "promoted"],
}
_SERVING: dict[str, Any] = {
    "type": "object",
    "properties": {"model": {"type": "string"}, "promoted_version": {"type": "string", "nullable": True}},
    "required": ["model", "promoted_version"],
}
_VERSION_ERRORS = (
    exceptions.ModelNotFound,
    exceptions.VersionNotFound,
    exceptions.HookNotImplemented,
    exceptions.DatabaseUnavailable,
)


@_versioned
def list_versions(served: ServedModel) -> dict[str, Any]:
    listing = {
        **_SERVING,
        "properties": {**_SERVING["properties"], "versions": {"type": "array", "items": _MODEL_VERSION}},
    }
    return {
        "summary": f"Versions of {served.name} made by its trainings, newest first",
        "responses": {"200": _json(listing, "the versions"), **errors(*_VERSION_ERRORS)},
    }


@_versioned
def get_version(served: ServedModel) -> dict[str, Any]:
    return {
        "summary": "A version: its training, arguments, metrics and state on this server",
        "responses": {
            "200": _json(_MODEL_VERSION, "the version"),
            **errors(*_VERSION_ERRORS),
        },
    }


@_versioned
def delete_version(served: ServedModel) -> dict[str, Any]:
    return {
        "summary": "Delete a version (its record, workers and directory; its number is not used again)",
        "responses": {
            "200": _json(_MODEL_VERSION, "the deleted version"),
            **errors(*_VERSION_ERRORS, exceptions.VersionConflict, exceptions.Forbidden),
        },
    }


@_versioned
def promote_version(served: ServedModel) -> dict[str, Any]:
    return {
        "summary": f"Have {served.name} serve this version (on every instance), once it loads here",
        "responses": {
            "200": _json(_SERVING, "what the model's name serves now"),
            **errors(*_VERSION_ERRORS, exceptions.VersionConflict, exceptions.Forbidden, exceptions.VersionUnavailable),
        },
    }


@_versioned
def rollback(served: ServedModel) -> dict[str, Any]:
    return {
        "summary": f"Undo the latest promotion of {served.name}",
        "responses": {
            "200": _json(_SERVING, "what the model's name serves now"),
            **errors(*_VERSION_ERRORS, exceptions.VersionConflict, exceptions.Forbidden),
        },
    }


def document_versions(app: web.Application, versions: Any, settings: Settings) -> None:
    """Give every known model version (``name@n``) the operations of its model's metadata and
    predict routes in the served document (it changes as versions come and go).
    """
    swagger = app.get(SWAGGER_DICT)
    if swagger is None:
        return  # no document (--doc-endpoint off), or not made yet: made with the versions then
    paths = swagger.setdefault("paths", {})
    for path in [p for p, item in paths.items() if any("x-model-version" in op for op in item.values())]:
        del paths[path]
    for record in versions.known.values():
        base = f"{settings.base_path}/v2/models/{record.model}/"
        for suffix in ("", "predict/"):
            item = paths.get(base + suffix)
            if item is None:
                continue
            operations = {}
            for method, operation in item.items():
                if method not in ("get", "post"):
                    continue
                operations[method] = {
                    **copy.deepcopy(operation),
                    "summary": f"{operation.get('summary', '')} (version {record.id})".strip(),
                    "x-model-version": record.id,
                }
                if suffix == "predict/":
                    operations[method]["parameters"] = []  # versions answer synchronously
                    operations[method]["responses"].pop("202", None)
            paths[f"{settings.base_path}/v2/models/{record.id}/{suffix}"] = operations


def _served_for(kind: str) -> Callable[[Callable[[ServedModel], dict[str, Any]]], Documenter]:
    """Document a route of ``kind`` (predictions or trainings) only where its endpoint is on
    and the plugin has the hook; the operation is tagged with the model's name.
    """
    endpoint = "predict_endpoint" if kind == PREDICT else "train_endpoint"

    def decorate(operation: Callable[[ServedModel], dict[str, Any]]) -> Documenter:
        def documenter(model: ServedModel | None, settings: Settings) -> dict[str, Any] | None:
            if model is None or not getattr(settings, endpoint) or not model.accepts(kind):
                return None
            return {"tags": [model.name], **operation(model)}

        return documenter

    return decorate


def _prediction_content(model: ServedModel) -> dict[str, Any]:
    prediction: Any = model.schemas.response or {
        "type": "object",
        "properties": {"status": {"type": "string"}, "predictions": {}},
    }
    content = {"application/json": {"schema": prediction}}
    for media_type in model.schemas.accept_choices:
        if not is_json(media_type):
            content[media_type] = {"schema": {"type": "string", "format": "binary"}}
    return content


@_served_for(PREDICT)
def predict(served: ServedModel) -> dict[str, Any]:
    return {
        "summary": f"Predict with {served.name}",
        "description": "Media type: the `accept` argument if given, else the `Accept` header.",
        "parameters": _ASYNC,
        "requestBody": _request_body(served.schemas.predict, served.schemas.description.predict_args or {}),
        "responses": {
            "200": {"description": "the prediction", "content": _prediction_content(served)},
            "202": {
                **_json(_JOB, "the queued prediction job"),
                "headers": {"Location": {"schema": {"type": "string"}}},
            },
            **errors(*_PREDICT_ERRORS),
        },
    }


def _listing(what: str) -> dict[str, Any]:
    return {
        "parameters": _LISTING,
        "responses": {
            "200": _json({"type": "array", "items": _JOB}, what),
            **errors(*_JOB_ERRORS, exceptions.InvalidArguments),
        },
    }


def _job(summary: str, what: str, *raised: type[exceptions.DeepaasLikeError]) -> dict[str, Any]:
    return {"summary": summary, "responses": {"200": _json(_JOB, what), **errors(*_JOB_ERRORS, *raised)}}


def _events(summary: str) -> dict[str, Any]:
    return {"summary": summary, "responses": {**_EVENTS, **errors(*_JOB_ERRORS)}}


@_served_for(PREDICT)
def list_predictions(served: ServedModel) -> dict[str, Any]:
    return {"summary": "Asynchronous predictions, oldest first unless `order=desc`", **_listing("jobs")}


@_served_for(PREDICT)
def get_prediction(served: ServedModel) -> dict[str, Any]:
    content = {"application/json": {"schema": _JOB}}
    content.update(
        {media_type: schema for media_type, schema in _prediction_content(served).items() if not is_json(media_type)}
    )
    return {
        "summary": "An asynchronous prediction; once done, its result when `Accept` asks for the result's media type",
        "responses": {
            "200": {"description": "the job, or its binary result", "content": content},
            **errors(*_JOB_ERRORS, exceptions.JobResultMissing),
        },
    }


@_served_for(PREDICT)
def cancel_prediction(served: ServedModel) -> dict[str, Any]:
    return _job("Cancel an asynchronous prediction", "the job")


@_served_for(PREDICT)
def prediction_events(served: ServedModel) -> dict[str, Any]:
    return _events("Progress of an asynchronous prediction")


@_served_for(TRAIN)
def start_training(served: ServedModel) -> dict[str, Any]:
    return {
        "summary": f"Start a training of {served.name}",
        "parameters": [_IDEMPOTENCY_KEY],
        "requestBody": _request_body(served.schemas.train, served.schemas.description.train_args or {}),
        "responses": {"200": _json(_JOB, "the training, pending or running"), **errors(*_TRAIN_ERRORS)},
    }


@_served_for(TRAIN)
def list_trainings(served: ServedModel) -> dict[str, Any]:
    return {"summary": f"Trainings of {served.name}, oldest first unless `order=desc`", **_listing("trainings")}


@_served_for(TRAIN)
def get_training(served: ServedModel) -> dict[str, Any]:
    return _job("A training", "the training")


@_served_for(TRAIN)
def cancel_training(served: ServedModel) -> dict[str, Any]:
    return _job("Cancel a training", "the training, cancelled")


@_served_for(TRAIN)
def training_events(served: ServedModel) -> dict[str, Any]:
    return _events("Progress of a training")


_UUID = {"in": "path", "name": "uuid", "required": True, "schema": {"type": "string"}}
_VERSION_PARAMETER = {
    "in": "path",
    "name": "version",
    "required": True,
    "schema": {"type": "string"},
    "description": "the version's number (3) or id (name@3)",
}


def document(spec: APISpec, routes: Any, models: dict[str, ServedModel], settings: Settings) -> None:
    """Add the operation of every documented, served route to ``spec``: model routes once
    per model. Routes that need an API key (or every route but the probes, with
    ``--auth-docs``) also answer 401; when the server has keys, the document declares
    :data:`SECURITY_SCHEMES` and those operations :data:`KEY_REQUIRED` (the others none).
    """
    keys = bool(settings.auth_tokens or settings.admin_tokens)
    if keys:
        for name, scheme in SECURITY_SCHEMES.items():
            spec.components.security_scheme(name, scheme)
    for route in routes:
        if route.doc is None or not route.served(settings):
            continue
        targets = list(models.values()) if "{model_name}" in route.path else [None]
        for model in targets:
            operation = route.doc(model, settings)
            if operation is None:
                continue
            if needs_key(route.access, settings):
                operation["responses"].update(errors(exceptions.Unauthorized))
                if keys:
                    operation["security"] = copy.deepcopy(KEY_REQUIRED)
            path = settings.base_path + (
                route.path if model is None else route.path.replace("{model_name}", model.name)
            )
            parameters = [_UUID] if "{uuid}" in path else [_VERSION_PARAMETER] if "{version}" in path else []
            # The handler carries no apigami docs, so the plugin keeps ``operation`` as
            # given; the marshmallow plugin still turns its schema classes into components.
            method = route.method.lower()
            spec.path(
                path=path, operations={method: operation}, method=method, handler=route.handler, parameters=parameters
            )
