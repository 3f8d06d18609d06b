"""HTTP responses: JSON documents, and predictions in the negotiated media type."""

from __future__ import annotations

import mimetypes
import os
from collections.abc import Mapping
from typing import Any

from aiohttp import web

from deepaas_like import json_text
from deepaas_like.exceptions import PredictionNotJSON
from deepaas_like.results import Prediction

__all__ = ["json_response", "prediction_response"]


def json_response(document: Any, status: int = 200, headers: Mapping[str, str] | None = None) -> web.Response:
    """``document`` as ``application/json``, ending with a newline (so that a terminal's
    prompt, after ``curl``, starts on a line of its own). A float that is NaN or infinite
    is written ``null`` (see :mod:`deepaas_like.json_text`): one such number must not make
    a whole listing unparseable.
    """
    return web.Response(
        text=json_text.dumps(document) + "\n", status=status, headers=headers, content_type="application/json"
    )


def prediction_response(prediction: Prediction) -> web.StreamResponse:
    """A prediction as HTTP: binary data or a file in its media type, with a
    ``Content-Disposition`` file name; JSON as JSON.

    Raises :class:`PredictionNotJSON` when a JSON prediction cannot be serialised (workers
    check predictions first, so this is a last line of defence).
    """
    if prediction.data is not None:
        return web.Response(body=prediction.data, headers=_download_headers(prediction.media_type, "prediction"))
    if prediction.file is not None:
        file = prediction.file
        stem = "prediction" if file.temporary else os.path.splitext(os.path.basename(file.path))[0] or "prediction"
        # Opened now, while it exists: the file may be one of the request's uploads, whose
        # folder is deleted as soon as the handler returns; the open file outlives that.
        # aiohttp streams it from a thread, then closes it.
        body = open(file.path, "rb")
        file.discard()  # a worker's temporary file: its data lives on until sent
        return web.Response(body=body, headers=_download_headers(prediction.media_type, stem))
    try:
        return json_response(prediction.document)
    except (TypeError, ValueError, RecursionError) as error:
        raise PredictionNotJSON(f"the prediction is not JSON: {type(error).__name__}: {error}") from error


def _download_headers(content_type: str, stem: str) -> dict[str, str]:
    extension = mimetypes.guess_extension(content_type.split(";")[0].strip()) or ".bin"
    return {
        "Content-Type": content_type,
        "Content-Disposition": f'attachment; filename="{stem}{extension}"',
    }
