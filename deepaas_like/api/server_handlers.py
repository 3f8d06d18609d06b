"""Handlers of the server's own routes (beside the DEEPaaS V2 ones): the OpenAPI document,
the Swagger UI redirect and the recent log lines.
"""

from __future__ import annotations

import collections

from aiohttp import web
from aiohttp_apigami.constants import SWAGGER_DICT

from deepaas_like.api.app_keys import LINKS, LOG_BUFFER
from deepaas_like.api.responses import json_response

__all__ = ["debug", "openapi_document", "redirect_to_ui"]


async def openapi_document(request: web.Request) -> web.StreamResponse:
    return json_response(request.app[SWAGGER_DICT])


async def redirect_to_ui(request: web.Request) -> web.StreamResponse:
    raise web.HTTPFound(request.app[LINKS].url(request, "/api"))


async def debug(request: web.Request) -> web.Response:
    lines: collections.deque[str] = request.app[LOG_BUFFER]
    return web.Response(text="\n".join(lines), content_type="text/plain")
