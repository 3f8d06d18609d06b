"""Idempotency keys (IETF httpapi draft draft-ietf-httpapi-idempotency-key-header): a client
names a job-creating call, and a retry with the same key gets the first job instead of a
second one. The HTTP front reads the key from the ``Idempotency-Key`` header, the gRPC
front from the ``idempotency-key`` metadata; both check it here, the same way.
"""

from __future__ import annotations

import re

from deepaas_like.exceptions import InvalidIdempotencyKey

__all__ = ["MAX_LENGTH", "idempotency_key"]

MAX_LENGTH = 255
_PRINTABLE = re.compile(r"^[\x20-\x7e]+$")


def idempotency_key(values: list[str], sent_as: str = "Idempotency-Key header") -> str | None:
    """The idempotency key among ``values`` (every value the client sent of it), or None
    when it sent none.

    The draft defines the value as a Structured Field String (RFC 8941: ``"..."`` with
    ``\\"`` and ``\\\\`` escapes); a bare token is accepted as well, as many clients send
    one. Raises :class:`InvalidIdempotencyKey` (400; gRPC INVALID_ARGUMENT) unless it is 1
    to 255 printable ASCII characters, or when sent twice (``sent_as`` names how, in the
    message).
    """
    if not values:
        return None
    name = sent_as.split()[0]
    if len(values) > 1:
        raise InvalidIdempotencyKey(f"send one {sent_as}, not {len(values)}")
    value = values[0].strip()
    if len(value) >= 2 and value[0] == value[-1] == '"':
        value = re.sub(r"\\(.)", r"\1", value[1:-1])
    if not (1 <= len(value) <= MAX_LENGTH and _PRINTABLE.match(value)):
        raise InvalidIdempotencyKey(f"{name} must be 1 to {MAX_LENGTH} printable ASCII characters")
    return value
