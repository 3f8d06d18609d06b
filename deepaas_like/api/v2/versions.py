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

from deepaas_like.api.documents import version_document
from deepaas_like.api.keys import LINKS, SETTINGS, VERSIONS
from deepaas_like.api.responses import json_response
from deepaas_like.api.security import caller
from deepaas_like.exceptions import Forbidden, VersionNotFound
from deepaas_like.versions.records import VersionRecord, parse_number, parse_version_id


def described(request: web.Request, record: VersionRecord) -> dict[str, Any]:
    """The version's document (see :func:`version_document`) with its state on this server
    and its links: itself as a model, and its predictions.
    """
    versions = request.app[VERSIONS]
    state, message = versions.state(record.id)
    promoted = versions.promoted(record.model) == record.id
    document = version_document(record, str(state), promoted, message, training=_sees_training(request, record))
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


def _keys(request: web.Request) -> bool:
    settings = request.app[SETTINGS]
    return bool(settings.auth_tokens or settings.admin_tokens)


def _sees_training(request: web.Request, record: VersionRecord) -> bool:
    """Whether the caller may see the training that made ``record`` (as it may see that
    training's job): anyone without API keys; with them, its key and admin keys only.
    """
    if not _keys(request):
        return True
    who = caller(request)
    return who.admin or (who.key_hash is not None and who.key_hash == record.api_key_hash)


def _require_admin(request: web.Request, action: str) -> None:
    """Raise ``Forbidden`` (403) unless the caller may change what a model serves: with
    API keys configured, only an admin key may.
    """
    if _keys(request) and not caller(request).admin:
        model = request.match_info["model_name"]
        raise Forbidden(f"{action} changes what every client of {model} gets: it needs an admin key (--admin-token)")


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
    return {"model": model, "promoted_version": request.app[VERSIONS].promoted(model)}


async def list_versions(request: web.Request) -> web.Response:
    """``{"model", "promoted_version", "versions": [version, ...]}``, newest first."""
    model = request.match_info["model_name"]
    records = await request.app[VERSIONS].list(model)
    return json_response({**_serving(request, model), "versions": [described(request, r) for r in records]})


async def get_version(request: web.Request) -> web.Response:
    record = await request.app[VERSIONS].find(request.match_info["model_name"], _number(request))
    return json_response(described(request, record))


async def delete_version(request: web.Request) -> web.Response:
    """Delete the version (its workers, record and directory); answers what it was."""
    _require_admin(request, "deleting a version")
    record = await request.app[VERSIONS].delete(request.match_info["model_name"], _number(request))
    return json_response({**version_document(record, "deleted", False), "links": []})


async def promote_version(request: web.Request) -> web.Response:
    """Have the model's name serve the version, once it loads here (409 naming the load
    error when it cannot); answers what the name serves now.
    """
    _require_admin(request, "promoting a version")
    model = request.match_info["model_name"]
    await request.app[VERSIONS].promote(model, _number(request))
    return json_response(_serving(request, model))


async def rollback(request: web.Request) -> web.Response:
    _require_admin(request, "rolling back a promotion")
    model = request.match_info["model_name"]
    await request.app[VERSIONS].rollback(model)
    return json_response(_serving(request, model))
