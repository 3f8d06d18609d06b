"""API keys, CORS, and request ids.

API keys: ``Authorization: Bearer <key>`` or ``X-API-Key: <key>`` on the predict and train
routes and on ``/debug`` (and on every route but health when ``auth-docs`` is on); 401 JSON
otherwise. A job belongs to the key that created it; admin keys (``admin-token``) see
every job.
"""

from __future__ import annotations

import dataclasses
import enum
import hashlib
import hmac
import itertools
import re
import uuid

import aiohttp_cors
from aiohttp import web
from aiohttp.typedefs import Handler

from deepaas_like.api.keys import SETTINGS
from deepaas_like.exceptions import DeepaasLikeError
from deepaas_like.logs import request_id

REQUEST_ID_HEADER = "X-Request-ID"
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")


class Access(enum.Enum):
    """Who may call a route when the server has API keys (``--auth-token``); each route of
    ``api/routes.py`` says which.
    """

    OPEN = "open"  # anyone, always: the probes
    DOCS = "docs"  # anyone, unless --auth-docs: metadata, documents, metrics (and unknown paths)
    KEY = "key"  # only with a key: predictions, trainings, their jobs, /debug


#: Route name -> who may call it (see ``api/routes.py``).
ROUTE_ACCESS = web.AppKey("route_access", dict[str, Access])

# Request ids: a random prefix per process and a counter, 32 hex characters, unique per
# server without a system call per request (uuid4 reads the OS's random source).
_ID_PREFIX = uuid.uuid4().hex[:16]
_ID_COUNTER = itertools.count()


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who sent a request, as far as jobs are concerned: ``key_hash`` is the SHA-256 (hex)
    of the API key it presented (None when the server has no API keys), ``admin`` whether
    that key is an admin key.
    """

    key_hash: str | None = None
    admin: bool = False

    @property
    def visible_to(self) -> str | None:
        """The key hash whose jobs alone this caller may see, or None for every job."""
        return None if self.admin else self.key_hash


#: The request's :class:`Caller` (set by :func:`auth_middleware`).
CALLER = web.RequestKey("caller", Caller)
NOBODY = Caller()


def key_hash(key: str) -> str:
    """What is stored of an API key: its SHA-256 in hex (the key itself never is)."""
    return hashlib.sha256(key.encode()).hexdigest()


def caller(request: web.Request) -> Caller:
    """The request's caller; :data:`NOBODY` (sees every job) when no API keys are set."""
    return request.get(CALLER, NOBODY)


class Unauthorized(DeepaasLikeError):
    """No valid API key on a protected route."""

    status = 401
    headers = {"WWW-Authenticate": 'Bearer realm="deepaas_like"'}


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Take the client's ``X-Request-ID`` (if well-formed) or make one; log lines of the
    request, in the server and in the worker, carry it, and the response echoes it.
    """
    given = request.headers.get(REQUEST_ID_HEADER, "")
    value = given if _VALID_REQUEST_ID.match(given) else f"{_ID_PREFIX}{next(_ID_COUNTER):016x}"
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


def _protected(request: web.Request) -> bool:
    if request.method == "OPTIONS":  # CORS preflight
        return False
    access = request.app[ROUTE_ACCESS].get(request.match_info.route.name or "", Access.DOCS)
    return access is Access.KEY or (access is Access.DOCS and request.app[SETTINGS].auth_docs)


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Check the API key on protected routes when API keys are configured, and note who
    the caller is (:data:`CALLER`) for job ownership.
    """
    settings = request.app[SETTINGS]
    tokens, admins = settings.auth_tokens, settings.admin_tokens
    if (tokens or admins) and _protected(request):
        presented = request.headers.get("X-API-Key", "")
        scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() == "bearer":
            presented = credentials.strip()
        # Every key is compared, in constant time, whichever matches.
        user = [hmac.compare_digest(presented.encode(), token.encode()) for token in tokens]
        admin = [hmac.compare_digest(presented.encode(), token.encode()) for token in admins]
        if not any(user) and not any(admin):
            raise Unauthorized("a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
        request[CALLER] = Caller(key_hash(presented), admin=any(admin))
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
