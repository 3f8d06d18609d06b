"""The ``Idempotency-Key`` request header (IETF httpapi draft
draft-ietf-httpapi-idempotency-key-header): a client names a job-creating POST, and a retry
with the same key gets the first job instead of a second one. Checked as every front checks
it (:mod:`deepaas_like.serving.idempotency`).
"""

from __future__ import annotations

from aiohttp import web

from deepaas_like.serving import idempotency

__all__ = ["HEADER", "idempotency_key"]

HEADER = "Idempotency-Key"


def idempotency_key(request: web.Request) -> str | None:
    """The request's idempotency key, or None without the header. Raises
    :class:`~deepaas_like.exceptions.InvalidIdempotencyKey` (400), see
    :func:`deepaas_like.serving.idempotency.idempotency_key`.
    """
    return idempotency.idempotency_key(request.headers.getall(HEADER, []), f"{HEADER} header")
