"""Prediction results: what plugin code may return, the one rule that checks it, and the one
function that renders it for a client (the synchronous route, the job runner and the CLI).

A prediction is binary (``bytes``, or a :class:`FileResult`: a file on disk) or JSON data.
:func:`render` turns it into a :class:`Prediction`: the JSON document (wrapped as DEEPaaS
wraps it when the plugin has no ``schema``) or the bytes or file, with its media type.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import math
import os
import sys
from typing import Any

from deepaas_like.exceptions import PredictionNotJSON, ResultTooLarge
from deepaas_like.media import JSON, result_media_type

__all__ = ["FileResult", "Prediction", "check_prediction", "not_json", "render", "to_transport"]


@dataclasses.dataclass(frozen=True)
class FileResult:
    """A prediction that is a file on disk, sent to the client as its bytes; ``media_type``
    is the one the plugin declared for it (a ``ReturnedFile``'s ``content_type``), if any.

    ``temporary`` files were written by a worker for a result too large for its pipe; whoever
    consumes the result deletes them (:meth:`discard`). Other paths are the plugin's own.
    """

    path: str
    media_type: str | None = None
    temporary: bool = False

    def discard(self) -> None:
        """Delete the file if it is temporary (the file may stay open: its data lives on
        until closed)."""
        if self.temporary:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)


@dataclasses.dataclass(frozen=True)
class Prediction:
    """A prediction as a client receives it: ``document`` (JSON data) when ``media_type`` is
    JSON, else ``data`` (bytes) or ``file``.
    """

    media_type: str
    document: Any = None
    data: bytes | None = None
    file: FileResult | None = None

    @property
    def binary(self) -> bool:
        return self.data is not None or self.file is not None

    def discard(self) -> None:
        """Delete a temporary result file that will not be sent."""
        if self.file is not None:
            self.file.discard()


def render(result: Any, chosen: str | None, wrap: bool) -> Prediction:
    """``result`` (bytes, a :class:`FileResult` or JSON data, as the worker sent it) as the
    client receives it. ``chosen`` is the media type negotiated for the call (see
    :func:`deepaas_like.media.result_media_type`); JSON data is wrapped as
    ``{"status": "OK", "predictions": result}`` when ``wrap`` (the plugin has no ``schema``,
    as in DEEPaaS).
    """
    if isinstance(result, bytes):
        return Prediction(result_media_type(result, chosen), data=result)
    if isinstance(result, FileResult):
        return Prediction(result_media_type(result.path, chosen, result.media_type), file=result)
    return Prediction(JSON, document={"status": "OK", "predictions": result} if wrap else result)


def to_transport(result: Any) -> Any:
    """Make a hook's result safe to send between processes.

    Open binary files become their path (when they have one on disk) or their bytes;
    path-likes and DEEPaaS ``ReturnedFile`` tuples become :class:`FileResult`.
    """
    if isinstance(result, (bytes, bytearray, memoryview)):
        return bytes(result)
    if isinstance(result, os.PathLike):
        return FileResult(os.fspath(result))
    if type(result).__name__ == "ReturnedFile" and isinstance(getattr(result, "filename", None), str):
        # deepaas_like's or DEEPaaS's own (both are namedtuples of the same fields).
        return FileResult(result.filename, getattr(result, "content_type", None) or None)
    if hasattr(result, "read") and not inspect.isclass(result):
        name = getattr(result, "name", None)
        if isinstance(name, str) and os.path.isfile(name):
            result.close()
            return FileResult(name)
        data = result.read()
        result.close()
        return data.encode() if isinstance(data, str) else bytes(data)
    return result


# No check for circular references: a cycle is infinitely deep, and fails as such.
_ENCODER = json.JSONEncoder(allow_nan=False, check_circular=False)


def check_prediction(result: Any, model: str, max_size: int = 0) -> None:
    """Check what ``predict`` returned (after :func:`to_transport`): binary (``bytes``, a
    :class:`FileResult`) or JSON data, of at most ``max_size`` bytes (0: any).

    Raises :class:`PredictionNotJSON` naming the offending value and its type (NaN and
    Infinity, sets, arbitrary objects, nesting too deep), and :class:`ResultTooLarge`.
    Data nested deeper than a worker can pickle passes here and fails as it is sent back
    (see :func:`not_json`).
    """
    if isinstance(result, bytes):
        size = len(result)
    elif isinstance(result, FileResult):
        try:
            size = os.path.getsize(result.path) if max_size else 0
        except OSError:  # a missing file: the server says so when it opens it
            size = 0
    else:
        try:
            # Encoding in C finds every problem at once, and gives the size (ASCII:
            # json.dumps escapes the rest).
            size = len(_ENCODER.encode(result))
        except (TypeError, ValueError, RecursionError) as error:
            message = not_json(result, model)
            if message is None:
                message = f"the prediction of model {model!r} is not JSON: {type(error).__name__}: {error}"
            raise PredictionNotJSON(message) from None
    if max_size and size > max_size:
        raise ResultTooLarge(
            f"the prediction of model {model!r} is {size} bytes, more than this server sends "
            f"({max_size} bytes, --max-result-size)"
        )


def not_json(value: Any, model: str) -> str | None:
    """Why ``value`` is not a JSON prediction that can be sent back, as the message of a
    :class:`PredictionNotJSON`, or None.

    Besides what JSON lacks, nesting is bounded: pickle (which carries results from a worker)
    recurses about twice per level, up to the interpreter's recursion limit (1000 frames by
    default), so anything more than half the limit, less 100 levels to spare, is refused.
    """
    problem = _not_json(value, sys.getrecursionlimit() // 2 - 100)
    return None if problem is None else f"the prediction of model {model!r} is not JSON: {problem}"


def _not_json(value: Any, limit: int) -> str | None:
    """What makes ``value`` unfit for JSON (where, and what type), or None; ``limit``: the
    deepest nesting allowed. Iterative, so that no depth of nesting can exhaust the stack.
    """
    stack: list[tuple[Any, str, int]] = [(value, "", 0)]
    while stack:
        item, path, depth = stack.pop()
        where = path or "the prediction itself"
        if isinstance(item, float):
            if not math.isfinite(item):
                return f"{where} is {item!r} (a float; JSON has no NaN or Infinity)"
            continue
        if item is None or isinstance(item, (str, int)):  # bool is an int
            continue
        if isinstance(item, (list, tuple, dict)):
            if depth >= limit:
                return f"it is nested too deeply: a {type(item).__name__} more than {depth} lists or objects deep"
            children: list[tuple[Any, str, int]] = []
            if isinstance(item, dict):
                for key, child in item.items():
                    if not (key is None or isinstance(key, (str, int, float))):
                        return f"{where} has a key of type {_type_name(key)} (JSON keys are strings)"
                    if isinstance(key, float) and not math.isfinite(key):
                        return f"{where} has the key {key!r} (a float; JSON has no NaN or Infinity)"
                    children.append(
                        (child, f"{path}[{json.dumps(key if isinstance(key, str) else str(key))}]", depth + 1)
                    )
            else:
                children = [(child, f"{path}[{index}]", depth + 1) for index, child in enumerate(item)]
            stack.extend(reversed(children))  # first problem first
            continue
        return f"{where} is of type {_type_name(item)}, which JSON cannot represent"
    return None


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
