"""HTTP responses: JSON documents, and predictions in the negotiated media type."""

from __future__ import annotations

import json
import mimetypes
import os
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from deepaas_like.exceptions import PredictionNotJSON
from deepaas_like.media import result_media_type
from deepaas_like.model.plugin import FileResult


def json_response(document: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """``document`` as ``application/json``, ending with a newline (so that a terminal's
    prompt, after ``curl``, starts on a line of its own).
    """
    return web.Response(text=json.dumps(document) + "\n", status=status, headers=headers, content_type="application/json")


def prediction_response(result: Any, media_type: str | None) -> web.StreamResponse:
    """A prediction as HTTP: ``bytes`` and files in their media type (see
    :func:`deepaas_like.media.result_media_type`; ``media_type`` is the negotiated one)
    with a ``Content-Disposition`` file name; anything else as JSON.

    Raises :class:`PredictionNotJSON` when a JSON prediction cannot be serialised (workers
    check predictions first, so this is a last line of defence).
    """
    if isinstance(result, bytes):
        content_type = result_media_type(result, media_type)
        return web.Response(body=result, headers=_download_headers(content_type, "prediction"))
    if isinstance(result, FileResult):
        content_type = result_media_type(result.path, media_type, result.media_type)
        stem = "prediction" if result.temporary else os.path.splitext(os.path.basename(result.path))[0] or "prediction"
        # Opened now, while it exists: the file may be one of the request's uploads, whose
        # folder is deleted as soon as the handler returns; the open file outlives that.
        # aiohttp streams it from a thread, then closes it.
        body = open(result.path, "rb")
        result.discard()  # a worker's temporary file: its data lives on until sent
        return web.Response(body=body, headers=_download_headers(content_type, stem))
    try:
        return json_response(result)
    except (TypeError, ValueError, RecursionError) as error:
        raise PredictionNotJSON(f"the prediction is not JSON: {type(error).__name__}: {error}") from error


def _download_headers(content_type: str, stem: str) -> dict[str, str]:
    extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    return {
        "Content-Type": content_type,
        "Content-Disposition": f'attachment; filename="{stem}{extension}"',
    }
