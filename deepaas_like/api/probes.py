"""Liveness and readiness probes."""

from __future__ import annotations

from aiohttp import web

from deepaas_like.api.app_keys import JOBS, MODEL_VERSIONS, MODELS
from deepaas_like.api.responses import json_response
from deepaas_like.serving.served import ServedModel

__all__ = ["healthz", "readyz"]


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: every model has a live, warmed worker, no model's name serves a promoted
    version that failed to load here, and the job database answers (and takes writes);
    503 naming the models that cannot serve, and the database's problem.
    """
    problems = {name: model.unavailable() for name, model in request.app[MODELS].items() if model.unavailable()}
    versions = request.app.get(MODEL_VERSIONS)
    if versions is not None:
        problems.update(versions.unservable())
    database = await request.app[JOBS].database_problem()
    if problems or database:
        body = {"status": "unavailable", "models": problems}
        if database:
            body["database"] = database
        return json_response(body, status=503)
    models: dict[str, ServedModel] = request.app[MODELS]
    return json_response({"status": "ready", "models": list(models)})
