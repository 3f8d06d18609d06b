"""Liveness and readiness probes."""

from __future__ import annotations

from aiohttp import web

from deepaas_like.api.keys import MODELS
from deepaas_like.api.responses import json_response


async def healthz(request: web.Request) -> web.Response:
    """Liveness: the process answers."""
    return json_response({"status": "ok"})


async def readyz(request: web.Request) -> web.Response:
    """Readiness: every model has a live, warmed worker; 503 naming those that have none."""
    problems = {name: model.unavailable() for name, model in request.app[MODELS].items() if model.unavailable()}
    if problems:
        return json_response({"status": "unavailable", "models": problems}, status=503)
    return json_response({"status": "ready", "models": list(request.app[MODELS])})
