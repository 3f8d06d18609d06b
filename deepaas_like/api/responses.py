"""Turn a prediction into an HTTP response in the negotiated media type."""

from __future__ import annotations

import json
import mimetypes
import os
from typing import Any

from aiohttp import web

from deepaas_like.api.negotiation import is_json
from deepaas_like.exceptions import InvalidPrediction
from deepaas_like.model.plugin import FileResult

OCTET_STREAM = "application/octet-stream"


def prediction_response(result: Any, media_type: str | None, wrap: bool) -> web.StreamResponse:
    """``bytes`` and files are sent as ``media_type`` with a ``Content-Disposition`` file
    name; anything else as JSON, wrapped as ``{"status": "OK", "predictions": ...}``
    when ``wrap`` (the plugin has no ``schema``, as in DEEPaaS).
    """
    if isinstance(result, bytes):
        content_type = media_type if media_type and not is_json(media_type) else OCTET_STREAM
        return web.Response(body=result, headers=_download_headers(content_type, "prediction"))
    if isinstance(result, FileResult):
        guessed = mimetypes.guess_type(result.path)[0]
        content_type = media_type if media_type and not is_json(media_type) else guessed or OCTET_STREAM
        name = os.path.splitext(os.path.basename(result.path))[0] or "prediction"
        return web.FileResponse(result.path, headers=_download_headers(content_type, name))
    body = {"status": "OK", "predictions": result} if wrap else result
    try:
        text = json.dumps(body)
    except (TypeError, ValueError) as error:
        raise InvalidPrediction({"predictions": [f"not JSON-serialisable: {error}"]}) from error
    return web.Response(text=text, content_type="application/json")


def _download_headers(content_type: str, stem: str) -> dict[str, str]:
    extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    return {
        "Content-Type": content_type,
        "Content-Disposition": f'attachment; filename="{stem}{extension}"',
    }
