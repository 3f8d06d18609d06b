"""The OpenAPI 3 document: aiohttp-apigami for the fixed routes, plus one set of paths per
model built from the plugin's own argument and response schemas.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp_apigami import AiohttpApiSpec, OpenApiVersion
from apispec import APISpec
from marshmallow import fields, validate

import deepaas_like
from deepaas_like.media import is_json
from deepaas_like.api import probes
from deepaas_like.api.metrics import metrics_endpoint
from deepaas_like.api.v2 import handlers
from deepaas_like.jobs.models import STATES
from deepaas_like.model.args import is_file_field
from deepaas_like.model.wrapper import ModelWrapper
from deepaas_like.settings import Settings

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
        "result": {"type": "object"},
    },
    "required": ["uuid", "date", "args", "status"],
}


_LISTING = [
    {"in": "query", "name": "status", "schema": {"type": "string", "enum": list(STATES)}},
    {"in": "query", "name": "limit", "schema": {"type": "integer", "minimum": 1, "maximum": 10000}},
    {"in": "query", "name": "offset", "schema": {"type": "integer", "minimum": 0, "maximum": handlers.MAX_OFFSET, "default": 0}},
]
_IDEMPOTENCY_KEY = {
    "in": "header",
    "name": "Idempotency-Key",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "a retry with the same key returns the first job (IETF httpapi idempotency-key draft)",
}
_ASYNC = [
    {"in": "header", "name": "Prefer", "schema": {"type": "string"}, "description": "`respond-async` (RFC 7240) queues the prediction as a job: 202"},
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
    converter = api_spec.spec.plugins[0].converter
    converter.add_attribute_function(file_field_property)
    converter.add_attribute_function(exclusive_range_property)


def setup_openapi(app: web.Application, settings: Settings) -> AiohttpApiSpec:
    """Serve the document at ``/swagger.json`` and ``/openapi.json`` and Swagger UI at ``/api``."""
    prefix = settings.base_path
    api_spec = AiohttpApiSpec(
        url=f"{prefix}/swagger.json",
        app=app,
        swagger_path=f"{prefix}/api",
        static_path=f"{prefix}/static/swagger",
        title="deepaas_like",
        version=deepaas_like.__version__,
        openapi_version=OpenApiVersion.V303,
        info={"description": "Model serving API (DEEPaaS V2 compatible)."},
    )
    add_attribute_functions(api_spec)
    return api_spec


def _json(schema: Any, description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*codes: int) -> dict[str, Any]:
    reasons = {
        400: "a malformed Idempotency-Key",
        401: "an API key is required",
        402: "endpoint disabled",
        404: "unknown model or training",
        408: "the body stopped arriving",
        413: "request body too large",
        422: "invalid arguments",
        500: "the plugin failed",
        501: "the plugin lacks the hook",
        503: "the model has no worker, its queue is full, the job database is away, or the server is stopping",
        504: "the prediction overran its timeout",
        507: "the prediction is larger than max-result-size",
    }
    return {str(code): _json(_FIELD_ERRORS if code == 422 else _FAILURE, reasons[code]) for code in codes}


def _request_body(schema: Any, arguments: dict[str, fields.Field]) -> dict[str, Any]:
    content = {"multipart/form-data": {"schema": schema}}
    if not any(is_file_field(field) for field in arguments.values()):
        content["application/json"] = {"schema": schema}
    # A body is required when an argument is (``accept`` is never: the server supplies it).
    required = any(field.required for name, field in arguments.items() if name != "accept")
    return {"content": content, "required": required}


def add_server_paths(spec: APISpec, settings: Settings) -> None:
    """Document the routes that belong to no model: versions, the model list, probes, metrics."""
    prefix = settings.base_path
    links = {"type": "array", "items": {"type": "object"}}
    version = {"type": "object", "properties": {"version": {"type": "string"}, "id": {"type": "string"}, "links": links}}
    tags = ["server"]
    _add(spec, prefix + "/", "get", handlers.versions, {"tags": tags, "summary": "API versions", "responses": {"200": _json({"type": "object", "properties": {"versions": {"type": "array", "items": version}, "links": links}}, "versions")}})
    _add(spec, prefix + "/v2/", "get", handlers.version_v2, {"tags": tags, "summary": "The v2 API version", "responses": {"200": _json(version, "the version")}})
    _add(spec, prefix + "/v2/models/", "get", handlers.list_models, {"tags": tags, "summary": "Metadata of every served model", "responses": {"200": _json({"type": "object", "properties": {"models": {"type": "array", "items": {"type": "object"}}}}, "models")}})
    _add(spec, prefix + "/healthz", "get", probes.healthz, {"tags": tags, "summary": "Liveness probe", "responses": {"200": _json({"type": "object"}, "alive")}})
    _add(
        spec,
        prefix + "/readyz",
        "get",
        probes.readyz,
        {"tags": tags, "summary": "Readiness probe", "responses": {"200": _json({"type": "object"}, "every model can serve"), "503": _json({"type": "object"}, "a model has no worker")}},
    )
    _add(
        spec,
        prefix + "/metrics",
        "get",
        metrics_endpoint,
        {"tags": tags, "summary": "Prometheus metrics", "responses": {"200": {"description": "text format 0.0.4", "content": {"text/plain": {"schema": {"type": "string"}}}}}},
    )


def _add(spec: APISpec, path: str, method: str, handler: Any, operation: dict[str, Any], **kwargs: Any) -> None:
    # The handler carries no apigami docs, so the plugin keeps ``operation`` as given; the
    # marshmallow plugin still turns its schema classes into components.
    spec.path(path=path, operations={method: operation}, method=method, handler=handler, **kwargs)


def add_model_paths(spec: APISpec, settings: Settings, model: ModelWrapper) -> None:
    """Document ``model``'s metadata, predict and train routes with its own schemas."""
    base = f"{settings.base_path}/v2/models/{model.name}"
    tags = [model.name]
    _add(
        spec,
        f"{base}/",
        "get",
        handlers.get_model,
        {"tags": tags, "summary": f"Metadata of {model.name}", "responses": {"200": _json({"type": "object"}, "metadata"), **_errors(401, 404, 503)}},
    )
    description = model.description
    if settings.predict_endpoint and model.predict_schema is not None:
        prediction: Any = model.response_schema or {
            "type": "object",
            "properties": {"status": {"type": "string"}, "predictions": {}},
        }
        content = {"application/json": {"schema": prediction}}
        for media_type in model.accept_choices:
            if not is_json(media_type):
                content[media_type] = {"schema": {"type": "string", "format": "binary"}}
        _add(
            spec,
            f"{base}/predict/",
            "post",
            handlers.predict,
            {
                "tags": tags,
                "summary": f"Predict with {model.name}",
                "description": "Media type: the `accept` argument if given, else the `Accept` header.",
                "parameters": _ASYNC,
                "requestBody": _request_body(model.predict_schema, description.predict_args or {}),
                "responses": {
                    "200": {"description": "the prediction", "content": content},
                    "202": {**_json(_JOB, "the queued prediction job"), "headers": {"Location": {"schema": {"type": "string"}}}},
                    **_errors(400, 401, 404, 408, 413, 422, 500, 503, 504, 507),
                },
            },
        )
        predictions = f"{base}/predict/"
        _add(
            spec,
            predictions,
            "get",
            handlers.list_predictions,
            {"tags": tags, "summary": "Asynchronous predictions, newest first", "parameters": _LISTING, "responses": {"200": _json({"type": "array", "items": _JOB}, "jobs"), **_errors(401, 404, 422, 503)}},
        )
        job_parameter = [{"in": "path", "name": "uuid", "required": True, "schema": {"type": "string"}}]
        job_content = {"application/json": {"schema": _JOB}}
        for media_type in content:
            if media_type != "application/json":
                job_content[media_type] = content[media_type]
        _add(
            spec,
            predictions + "{uuid}",
            "get",
            handlers.get_prediction,
            {
                "tags": tags,
                "summary": "An asynchronous prediction; once done, its result when `Accept` asks for the result's media type",
                "responses": {"200": {"description": "the job, or its binary result", "content": job_content}, **_errors(401, 404, 503)},
            },
            parameters=job_parameter,
        )
        _add(
            spec,
            predictions + "{uuid}",
            "delete",
            handlers.cancel_prediction,
            {"tags": tags, "summary": "Cancel an asynchronous prediction", "responses": {"200": _json(_JOB, "the job"), **_errors(401, 404, 503)}},
        )
        _add(
            spec,
            predictions + "{uuid}/events",
            "get",
            handlers.prediction_events,
            {"tags": tags, "summary": "Progress of an asynchronous prediction", "parameters": job_parameter, "responses": {**_EVENTS, **_errors(401, 404, 503)}},
        )
    if settings.train_endpoint and model.train_schema is not None:
        trainings = f"{base}/train/"
        _add(
            spec,
            trainings,
            "post",
            handlers.start_training,
            {
                "tags": tags,
                "summary": f"Start a training of {model.name}",
                "requestBody": _request_body(model.train_schema, description.train_args or {}),
                "parameters": [_IDEMPOTENCY_KEY],
                "responses": {"200": _json(_JOB, "the training, pending or running"), **_errors(400, 401, 404, 408, 413, 422, 501, 503)},
            },
        )
        _add(
            spec,
            trainings,
            "get",
            handlers.list_trainings,
            {
                "tags": tags,
                "summary": f"Trainings of {model.name}, newest first",
                "parameters": _LISTING,
                "responses": {"200": _json({"type": "array", "items": _JOB}, "trainings"), **_errors(401, 404, 422, 503)},
            },
        )
        uuid_parameter = {"in": "path", "name": "uuid", "required": True, "schema": {"type": "string"}}
        training = trainings + "{uuid}"
        _add(
            spec,
            training,
            "get",
            handlers.get_training,
            {"tags": tags, "summary": "A training", "responses": {"200": _json(_JOB, "the training"), **_errors(401, 404, 503)}},
            parameters=[uuid_parameter],
        )
        _add(
            spec,
            training,
            "delete",
            handlers.cancel_training,
            {"tags": tags, "summary": "Cancel a training", "responses": {"200": _json(_JOB, "the training, cancelled"), **_errors(401, 404, 503)}},
        )
        _add(
            spec,
            training + "/events",
            "get",
            handlers.training_events,
            {"tags": tags, "summary": "Progress of a training", "parameters": [uuid_parameter], "responses": {**_EVENTS, **_errors(401, 404, 503)}},
        )
