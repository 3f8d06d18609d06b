"""JSON text that every client can parse: what the server writes to HTTP clients (answers,
event streams) and to the job database (PostgreSQL's ``json`` type refuses ``NaN``).

Python's ``json`` writes a float that is NaN or infinite as a bare ``NaN`` or ``Infinity``,
which is not JSON (RFC 8259 section 6): browsers' ``JSON.parse`` and most other parsers
refuse the whole document. Such a number, from a plugin's result or metadata or from a job
stored before requests were checked, is written as ``null`` instead, as JavaScript's
``JSON.stringify`` and orjson write it.
"""

from __future__ import annotations

import json
import math
from typing import Any

__all__ = ["dumps", "finite"]

# No check for circular references: documents are trees, and a cycle fails as too deep.
_STRICT = json.JSONEncoder(allow_nan=False, check_circular=False)
_STRICT_OR_TEXT = json.JSONEncoder(allow_nan=False, check_circular=False, default=str)


def dumps(document: Any, *, text_for_others: bool = False) -> str:
    """``document`` as JSON text, with every float that is NaN or infinite as ``null``;
    with ``text_for_others``, a value JSON lacks is written as its ``str()`` (as the job
    database stores a date in a training's result).

    Raises ``TypeError`` for a value JSON lacks (a set, an object) otherwise, as
    ``json.dumps`` does.
    """
    encoder = _STRICT_OR_TEXT if text_for_others else _STRICT
    try:
        return encoder.encode(document)  # in C; the walk below only when a number is not finite
    except ValueError:
        return encoder.encode(finite(document))


def finite(value: Any) -> Any:
    """JSON data ``value`` with every NaN and infinite float replaced by None (JSON null);
    such a float as a dict key becomes the string Python's ``json`` writes for it (``"NaN"``)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {_key(key): finite(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(item) for item in value]
    return value


def _key(key: Any) -> Any:
    return json.dumps(key) if isinstance(key, float) and not math.isfinite(key) else key
