"""The ``Idempotency-Key`` request header (IETF httpapi draft
draft-ietf-httpapi-idempotency-key-header): a client names a job-creating POST, and a retry
with the same key gets the first job instead of a second one.
"""

from __future__ import annotations

import re

from aiohttp import web

from deepaas_like.exceptions import InvalidIdempotencyKey

HEADER = "Idempotency-Key"
MAX_LENGTH = 255
_PRINTABLE = re.compile(r"^[\x20-\x7e]+$")


def idempotency_key(request: web.Request) -> str | None:
    """The request's idempotency key, or None without the header.

    The draft defines the value as a Structured Field String (RFC 8941: ``"..."`` with
    ``\\"`` and ``\\\\`` escapes); a bare token is accepted as well, as many clients send
    one. Raises :class:`InvalidIdempotencyKey` (400) unless it is 1 to 255 printable ASCII
    characters, or when sent twice.
    """
    values = request.headers.getall(HEADER, [])
    if not values:
        return None
    if len(values) > 1:
        raise InvalidIdempotencyKey(f"send one {HEADER} header, not {len(values)}")
    value = values[0].strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    if not (1 <= len(value) <= MAX_LENGTH and _PRINTABLE.match(value)):
        raise InvalidIdempotencyKey(f"{HEADER} must be 1 to {MAX_LENGTH} printable ASCII characters")
    return value
