"""Every route of the HTTP API, in one table: its name, method and path, its handler, who
may call it, and the function that documents it in OpenAPI.

Paths are relative to ``--base-path`` and trailing-slash paths are canonical (the
slashless form redirects with 308). Links are built from the route names
(:meth:`deepaas_like.api.links.Links.url_for`); the API-key check reads each route's
:class:`Access`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

from aiohttp import web

from deepaas_like.api import openapi, probes, web_page
from deepaas_like.api import server_handlers as server
from deepaas_like.api.metrics import metrics_endpoint
from deepaas_like.api.security import Access
from deepaas_like.api.v2 import handlers, model_versions
from deepaas_like.settings import Settings

__all__ = ["ACCESS", "MODEL", "PREDICTIONS", "ROUTES", "Route", "TRAININGS", "MODEL_VERSIONS", "add_routes"]


@dataclasses.dataclass(frozen=True)
class Route:
    """One route. ``served`` says whether the server serves it with these settings;
    ``doc`` writes its OpenAPI operation (None: not in the document).
    """

    name: str
    method: str
    path: str
    handler: Callable[[web.Request], object]
    access: Access = Access.DOCS
    doc: openapi.Documenter | None = None
    served: Callable[[Settings], bool] = lambda settings: True


MODEL = "/v2/models/{model_name}/"
PREDICTIONS = MODEL + "predict/"
TRAININGS = MODEL + "train/"
MODEL_VERSIONS = MODEL + "versions/"

ROUTES: tuple[Route, ...] = (
    Route("versions", "GET", "/", handlers.api_versions, doc=openapi.versions),
    Route("version_v2", "GET", "/v2/", handlers.version_v2, doc=openapi.version_v2),
    Route("models", "GET", "/v2/models/", handlers.list_models, doc=openapi.list_models),
    Route("model", "GET", MODEL, handlers.get_model, doc=openapi.get_model),
    Route("protos", "GET", MODEL + "protos", handlers.protos, doc=openapi.protos, served=lambda s: s.doc_endpoint),
    Route("predict", "POST", PREDICTIONS, handlers.predict, Access.KEY, openapi.predict),
    Route("predictions", "GET", PREDICTIONS, handlers.list_predictions, Access.KEY, openapi.list_predictions),
    Route("prediction", "GET", PREDICTIONS + "{uuid}", handlers.get_prediction, Access.KEY, openapi.get_prediction),
    Route(
        "cancel_prediction",
        "DELETE",
        PREDICTIONS + "{uuid}",
        handlers.cancel_prediction,
        Access.KEY,
        openapi.cancel_prediction,
    ),
    Route(
        "prediction_events",
        "GET",
        PREDICTIONS + "{uuid}/events",
        handlers.prediction_events,
        Access.KEY,
        openapi.prediction_events,
    ),
    Route("train", "POST", TRAININGS, handlers.start_training, Access.KEY, openapi.start_training),
    Route("trainings", "GET", TRAININGS, handlers.list_trainings, Access.KEY, openapi.list_trainings),
    Route("training", "GET", TRAININGS + "{uuid}", handlers.get_training, Access.KEY, openapi.get_training),
    Route(
        "cancel_training", "DELETE", TRAININGS + "{uuid}", handlers.cancel_training, Access.KEY, openapi.cancel_training
    ),
    Route(
        "training_events",
        "GET",
        TRAININGS + "{uuid}/events",
        handlers.training_events,
        Access.KEY,
        openapi.training_events,
    ),
    Route("model_versions", "GET", MODEL_VERSIONS, model_versions.list_versions, doc=openapi.list_versions),
    Route("version", "GET", MODEL_VERSIONS + "{version}", model_versions.get_version, doc=openapi.get_version),
    Route(
        "delete_version",
        "DELETE",
        MODEL_VERSIONS + "{version}",
        model_versions.delete_version,
        Access.KEY,
        openapi.delete_version,
    ),
    Route(
        "promote_version",
        "POST",
        MODEL_VERSIONS + "{version}/promote",
        model_versions.promote_version,
        Access.KEY,
        openapi.promote_version,
    ),
    Route("rollback", "POST", MODEL + "rollback", model_versions.rollback, Access.KEY, openapi.rollback),
    Route("healthz", "GET", "/healthz", probes.healthz, Access.OPEN, openapi.healthz),
    Route("readyz", "GET", "/readyz", probes.readyz, Access.OPEN, openapi.readyz),
    Route("metrics", "GET", "/metrics", metrics_endpoint, doc=openapi.metrics),
    Route("openapi", "GET", "/openapi.json", server.openapi_document, served=lambda s: s.doc_endpoint),
    Route("ui", "GET", "/ui", server.redirect_to_ui, served=lambda s: s.doc_endpoint),
    # The web page is built in the browser from /openapi.json, so it is served with it. It
    # loads without a key (Access.OPEN) and asks for one before it shows any model.
    Route("web", "GET", "/web/", web_page.web_page, Access.OPEN, served=lambda s: s.doc_endpoint),
    Route(
        "web_asset",
        "GET",
        "/web/static/{path:.+}",
        web_page.web_asset,
        Access.OPEN,
        served=lambda s: s.doc_endpoint,
    ),
    Route("debug", "GET", "/debug", server.debug, Access.KEY, served=lambda s: s.debug_endpoint),
)


def add_routes(app: web.Application, settings: Settings) -> None:
    """Register every route the settings serve, under ``settings.base_path``, named."""
    app.router.add_routes(
        [
            web.route(route.method, settings.base_path + route.path, route.handler, name=route.name)  # type: ignore[arg-type]
            for route in ROUTES
            if route.served(settings)
        ]
    )


#: Route name -> who may call it.
ACCESS: dict[str, Access] = {route.name: route.access for route in ROUTES}
