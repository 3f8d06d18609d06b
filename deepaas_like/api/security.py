"""API keys, CORS, and request ids on HTTP routes.

API keys: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` on the predict and train
routes and on ``/debug`` (and on every route but health when ``auth-docs`` is on); 401 JSON
otherwise. The check itself, shared with gRPC, is :mod:`deepaas_like.api_keys`.
"""

from __future__ import annotations

import contextlib
import enum

import aiohttp_cors
from aiohttp import web
from aiohttp.typedefs import Handler

from deepaas_like.api.app_keys import SETTINGS
from deepaas_like.api_keys import NOBODY, Caller, authenticate, presented_key
from deepaas_like.exceptions import Unauthorized
from deepaas_like.logs import new_request_id, request_id
from deepaas_like.settings import Settings

__all__ = [
    "Access",
    "CALLER",
    "REQUEST_ID_HEADER",
    "ROUTE_ACCESS",
    "auth_middleware",
    "caller",
    "needs_key",
    "request_id_middleware",
    "setup_cors",
]

REQUEST_ID_HEADER = "X-Request-ID"


class Access(enum.Enum):
    """Who may call a route when the server has API keys (``--auth-token``); each route of
    ``api/routes.py`` says which.
    """

    OPEN = "open"  # anyone, always: the probes
    DOCS = "docs"  # anyone, unless --auth-docs: metadata, documents, metrics (and unknown paths)
    KEY = "key"  # only with a key: predictions, trainings, their jobs, /debug


#: Route name -> who may call it (see ``api/routes.py``).
ROUTE_ACCESS = web.AppKey("route_access", dict[str, Access])

#: The request's :class:`Caller` (set by :func:`auth_middleware`).
CALLER = web.RequestKey("caller", Caller)


def caller(request: web.Request) -> Caller:
    """The request's caller; :data:`NOBODY` (sees every job) when no API keys are set."""
    return request.get(CALLER, NOBODY)


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take the client's ``X-Request-ID`` (if well-formed) or make one; log lines of the
    request, in the server and in the worker, carry it, and the response echoes it.
    """
    value = new_request_id(request.headers.get(REQUEST_ID_HEADER))
    token = request_id.set(value)
    try:
        response = await handler(request)
    except web.HTTPException as error:
        error.headers[REQUEST_ID_HEADER] = value
        raise
    finally:
        request_id.reset(token)
    response.headers[REQUEST_ID_HEADER] = value
    return response


def needs_key(access: Access, settings: Settings) -> bool:
    """Whether a route of ``access`` answers 401 without a valid key when the server has
    keys: :attr:`Access.KEY` routes, and with ``--auth-docs`` the :attr:`Access.DOCS` ones.
    The middleware checks by it and the OpenAPI document declares security by it.
    """
    return access is Access.KEY or (settings.auth_docs and access is Access.DOCS)


def _protected(request: web.Request) -> bool:
    if request.method == "OPTIONS":  # CORS preflight
        return False
    access = request.app[ROUTE_ACCESS].get(request.match_info.route.name or "", Access.DOCS)
    return needs_key(access, request.app[SETTINGS])


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the API key on protected routes when API keys are configured, and note who
    the caller is (:data:`CALLER`) for job ownership. On the other routes a valid key
    presented still names the caller (a version's document shows its training to the
    training's key); a wrong one counts as none.
    """
    settings = request.app[SETTINGS]
    if settings.auth_tokens or settings.admin_tokens:
        presented = presented_key(request.headers.get("Authorization"), request.headers.get("X-API-Key"))
        if _protected(request):
            request[CALLER] = authenticate(presented, settings.auth_tokens, settings.admin_tokens)
        elif presented:
            with contextlib.suppress(Unauthorized):
                request[CALLER] = authenticate(presented, settings.auth_tokens, settings.admin_tokens)
    return await handler(request)


def setup_cors(app: web.Application, origins: tuple[str, ...]) -> None:
    """Allow cross-origin requests from ``origins`` (``*`` for any) on every route."""
    defaults = {
        origin: aiohttp_cors.ResourceOptions(
            allow_credentials=False, expose_headers="*", allow_headers="*", allow_methods="*"
        )
        for origin in origins
    }
    cors = aiohttp_cors.setup(app, defaults=defaults)
    for route in list(app.router.routes()):
        cors.add(route)
