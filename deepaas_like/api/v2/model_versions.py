"""Handlers of the model version routes: list, read and delete the versions trainings made,
promote one to be what the model's name serves, and roll back. A version is named in the
path by its number (``3``) or its id (``text_classifier@3``).

With API keys configured, a version belongs to the key that owned the training that made
it: only that key and admin keys see the training's uuid and arguments in its document.
Promoting, rolling back and deleting change what every client gets: they take an admin key.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from deepaas_like.api.app_keys import CALLS, LINKS
from deepaas_like.api.documents import version_document
from deepaas_like.api.responses import json_response
from deepaas_like.api.security import caller
from deepaas_like.exceptions import VersionNotFound
from deepaas_like.registry.records import VersionRecord, parse_number, parse_version_id

__all__ = ["delete_version", "described", "get_version", "list_versions", "promote_version", "rollback"]


def described(request: web.Request, record: VersionRecord) -> dict[str, Any]:
    """The version's document (see :meth:`CallService.described`) with its links: itself as
    a model, and its predictions.
    """
    document = request.app[CALLS].described(record, caller(request))
    links = request.app[LINKS]
    document["links"] = [
        {
            "rel": "self",
            "type": "application/json",
            "href": links.url_for(request, "version", model_name=record.model, version=str(record.number)),
        },
        {"rel": "model", "type": "application/json", "href": links.url_for(request, "model", model_name=record.id)},
        {"rel": "predict", "href": links.url_for(request, "predict", model_name=record.id)},
    ]
    return document


def _number(request: web.Request) -> int:
    """The version the path names, by number or id; raises ``VersionNotFound`` (404) for a
    path segment that names no version of the model.
    """
    model, version = request.match_info["model_name"], request.match_info["version"]
    number = parse_number(version)
    if number is not None:
        return number
    parsed = parse_version_id(version)
    if parsed is None or parsed[0] != model:
        raise VersionNotFound(
            f"{version!r} names no version of model {model!r}: a version is named by its number (3) or id ({model}@3)"
        )
    return parsed[1]


def _serving(request: web.Request, model: str) -> dict[str, Any]:
    """What ``model``'s name serves: ``{"model", "promoted_version"}`` (None: the plugin)."""
    return {"model": model, "promoted_version": request.app[CALLS].router.promoted(model)}


async def list_versions(request: web.Request) -> web.Response:
    """``{"model", "promoted_version", "versions": [version, ...]}``, newest first."""
    model = request.match_info["model_name"]
    records = await request.app[CALLS].versions.list(model)
    return json_response({**_serving(request, model), "versions": [described(request, r) for r in records]})


async def get_version(request: web.Request) -> web.Response:
    record = await request.app[CALLS].versions.find(request.match_info["model_name"], _number(request))
    return json_response(described(request, record))


async def delete_version(request: web.Request) -> web.Response:
    """Delete the version (its workers, record and directory); answers what it was."""
    calls = request.app[CALLS]
    calls.require_admin(request.match_info["model_name"], caller(request), "deleting a version")
    record = await calls.delete_version(request.match_info["model_name"], _number(request), caller(request))
    return json_response({**version_document(record, "deleted", False), "links": []})


async def promote_version(request: web.Request) -> web.Response:
    """Have the model's name serve the version, once it loads here (409 naming the load
    error when it cannot); answers what the name serves now.
    """
    model = request.match_info["model_name"]
    request.app[CALLS].require_admin(model, caller(request), "promoting a version")
    await request.app[CALLS].promote(model, _number(request), caller(request))
    return json_response(_serving(request, model))


async def rollback(request: web.Request) -> web.Response:
    model = request.match_info["model_name"]
    await request.app[CALLS].rollback(model, caller(request))
    return json_response(_serving(request, model))
