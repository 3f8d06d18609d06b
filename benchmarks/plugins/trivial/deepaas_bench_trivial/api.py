"""DEEPaaS V2 hooks of the trivial benchmark plugin (entry point ``trivial``).

Written for both DEEPaaS 2.6.0 (webargs 5) and deepaas_like: one integer argument with a
default, and a predict that returns a small dict at once.
"""

from __future__ import annotations

from typing import Any

from marshmallow import fields


def get_metadata() -> dict[str, Any]:
    return {"name": "trivial", "description": "Returns its argument doubled; no model at all."}


def get_predict_args() -> dict[str, fields.Field]:
    """One optional integer ``n`` (form field or query string)."""
    return {"n": fields.Int(load_default=1, metadata={"description": "A number to double."})}


def predict(**kwargs: Any) -> dict[str, Any]:
    """Return ``{"n": n, "double": 2 * n}``."""
    n = int(kwargs.get("n", 1))
    return {"n": n, "double": 2 * n}
