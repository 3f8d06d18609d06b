"""The aiohttp application: middlewares, error mapping, and the lifetime of what it serves
(opened by the server object, :mod:`deepaas_like.server`, when the application starts). The
routes are in ``api/routes.py``.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Protocol

from aiohttp import web
from aiohttp.typedefs import Handler
from aiohttp.web_middlewares import normalize_path_middleware

from deepaas_like.api import openapi
from deepaas_like.api.app_keys import (
    CALLS,
    DRAIN,
    JOBS,
    LINKS,
    LOG_BUFFER,
    MODEL_VERSIONS,
    MODELS,
    SETTINGS,
    SHUTTING_DOWN,
)
from deepaas_like.api.links import Links
from deepaas_like.api.metrics import METRICS, Metrics, metrics_middleware
from deepaas_like.api.responses import json_response
from deepaas_like.api.routes import ACCESS, ROUTES, add_routes
from deepaas_like.api.security import ROUTE_ACCESS, auth_middleware, request_id_middleware, setup_cors
from deepaas_like.exceptions import DeepaasLikeError, InvalidArguments, PluginError
from deepaas_like.jobs.service import Jobs
from deepaas_like.serving.calls import CallService
from deepaas_like.serving.draining import Drain
from deepaas_like.serving.model_versions import ModelVersions
from deepaas_like.serving.served import ServedModel
from deepaas_like.settings import Settings

__all__ = ["Opener", "Served", "create_app", "error_middleware"]

LOG = logging.getLogger(__name__)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error becomes JSON: ``{"message": ...}``, or ``{"field": [...]}`` for 422,
    with the status the exception class carries.
    """
    debug = request.app[SETTINGS].debug
    try:
        return await handler(request)
    except InvalidArguments as error:
        response = json_response(error.messages, status=error.status)
        if getattr(error, "close_connection", False):
            response.force_close()
        return response
    except DeepaasLikeError as error:
        if error.status >= 500 and not isinstance(error, PluginError):  # plugin errors: the worker logged them
            LOG.error("%s %s: %s", request.method, request.path, error.message)
        body = {"message": error.message}
        if debug and isinstance(error, PluginError) and error.traceback:
            body["traceback"] = error.traceback
        return json_response(body, status=error.status, headers=error.headers)
    except web.HTTPException as error:
        if error.status < 400:
            raise
        headers = {k: v for k, v in error.headers.items() if k.lower() in ("allow", "retry-after")}
        return json_response({"message": error.reason}, status=error.status, headers=headers)
    except asyncio.CancelledError:
        raise
    except Exception as error:  # noqa: BLE001 - the last line of defence: JSON, and keep serving
        LOG.exception("unhandled error on %s %s", request.method, request.path)
        body = {"message": f"internal server error: {type(error).__name__}"}
        if debug:
            body["traceback"] = traceback.format_exc()
        return json_response(body, status=500)


class Served(Protocol):
    """What the application serves, as the server object (:mod:`deepaas_like.server`) has it
    once open."""

    @property
    def models(self) -> dict[str, ServedModel]: ...

    @property
    def versions(self) -> ModelVersions: ...

    @property
    def jobs(self) -> Jobs: ...

    @property
    def drain(self) -> Drain: ...

    @property
    def calls(self) -> CallService: ...

    def shutting_down(self) -> None:
        """Stop taking calls; see :meth:`deepaas_like.server.Server.shutting_down`."""


#: Opens what the application serves when it starts (and closes it when it stops).
Opener = Callable[[], AbstractAsyncContextManager[Served]]


def _serving(open_server: Opener) -> Callable[[web.Application], AsyncIterator[None]]:
    """The cleanup context that opens the server: its models, versions, jobs, drain and
    call service become the application's for as long as it runs."""

    async def serving(app: web.Application) -> AsyncIterator[None]:
        async with open_server() as server:
            app[SERVED] = server
            app[MODELS] = server.models
            app[MODEL_VERSIONS] = server.versions
            app[JOBS] = server.jobs
            app[DRAIN] = server.drain
            app[CALLS] = server.calls
            settings = app[SETTINGS]
            server.versions.on_change = lambda: openapi.document_versions(app, server.versions, settings)
            if settings.doc_endpoint:
                openapi.document(app[_API_SPEC].spec, ROUTES, server.models, settings)
            yield

    return serving


async def _document_versions(app: web.Application) -> None:
    openapi.document_versions(app, app[MODEL_VERSIONS], app[SETTINGS])


async def _shutting_down(app: web.Application) -> None:
    # Runs before aiohttp waits for in-flight handlers: event streams end instead of
    # holding the shutdown for the whole grace period, and predictions that cannot finish
    # in it are answered 503 before it ends. gRPC stops taking calls, as HTTP does.
    app[SHUTTING_DOWN].set()
    if SERVED in app:
        app[SERVED].shutting_down()


_API_SPEC = web.AppKey("api_spec", openapi.AiohttpApiSpec)
SERVED: web.AppKey[Served] = web.AppKey("served")


class _BufferHandler(logging.Handler):
    def __init__(self, buffer: collections.deque[str]) -> None:
        super().__init__()
        self.buffer = buffer
        self.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        self.buffer.append(self.format(record))


def create_app(settings: Settings, open_server: Opener, metrics: Metrics) -> web.Application:
    """The aiohttp application of ``settings``: middlewares, routes, OpenAPI, CORS; what it
    serves is opened by ``open_server`` when it starts (see :func:`deepaas_like.server.http_app`),
    its requests counted in ``metrics``.
    """
    app = web.Application(
        middlewares=[
            request_id_middleware,
            metrics_middleware,
            error_middleware,
            auth_middleware,
            normalize_path_middleware(append_slash=True, redirect_class=web.HTTPPermanentRedirect),
        ],
        client_max_size=settings.client_max_size or 1024**4,
        client_max_fields=settings.max_form_parts,  # of urlencoded forms (0: none); multipart: api/arguments.py
    )
    app[SETTINGS] = settings
    app[LINKS] = Links(settings.base_path, settings.public_url, settings.trusted_proxies)
    app[ROUTE_ACCESS] = ACCESS
    app[SHUTTING_DOWN] = asyncio.Event()
    app.on_shutdown.append(_shutting_down)
    app[METRICS] = metrics
    metrics.app = app
    app.cleanup_ctx.append(_serving(open_server))
    add_routes(app, settings)
    if settings.debug_endpoint:
        app[LOG_BUFFER] = collections.deque(maxlen=2000)
        logging.getLogger().addHandler(_BufferHandler(app[LOG_BUFFER]))
    if settings.doc_endpoint:
        app[_API_SPEC] = openapi.setup_openapi(app, settings)
        app.on_startup.append(_document_versions)  # after the document is made (an on_startup too)
    if settings.cors_origins:
        setup_cors(app, settings.cors_origins)
    return app
