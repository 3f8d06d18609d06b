"""API keys (``--auth-token``, ``--admin-token``): the check every front runs (HTTP headers,
gRPC metadata), who presented a key, and what is stored of it.

A job belongs to the key that created it; admin keys see every job.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
from collections.abc import Sequence

from deepaas_like.exceptions import Unauthorized

__all__ = ["Caller", "HOW_TO_SEND", "NOBODY", "authenticate", "key_hash", "presented_key"]

#: What a client is told when its key is missing or wrong.
HOW_TO_SEND = "a valid API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'"


@dataclasses.dataclass(frozen=True)
class Caller:
    """Who sent a request, as far as jobs are concerned: ``key_hash`` is the SHA-256 (hex)
    of the API key it presented (None when the server has no API keys), ``admin`` whether
    that key is an admin key.
    """

    key_hash: str | None = None
    admin: bool = False

    @property
    def visible_to(self) -> str | None:
        """The key hash whose jobs alone this caller may see, or None for every job."""
        return None if self.admin else self.key_hash


#: The caller of a server without API keys: sees every job.
NOBODY = Caller()


def key_hash(key: str) -> str:
    """What is stored of an API key: its SHA-256 in hex (the key itself never is)."""
    return hashlib.sha256(key.encode()).hexdigest()


def presented_key(authorization: str | None, x_api_key: str | None) -> str:
    """The key a request presents: the credentials of ``Authorization: Bearer <key>``, else
    the ``X-API-Key`` value, else "" (header names are the same in gRPC metadata, lower case).
    """
    scheme, _, credentials = (authorization or "").partition(" ")
    if scheme.lower() == "bearer":
        return credentials.strip()
    return x_api_key or ""


def authenticate(presented: str, tokens: Sequence[str], admins: Sequence[str]) -> Caller:
    """The :class:`Caller` presenting ``presented`` when the server accepts ``tokens`` and
    ``admins`` (no keys at all: :data:`NOBODY`). Raises :class:`Unauthorized` for a key that
    is neither.
    """
    if not tokens and not admins:
        return NOBODY
    # Every key is compared, in constant time, whichever matches.
    user = [hmac.compare_digest(presented.encode(), token.encode()) for token in tokens]
    admin = [hmac.compare_digest(presented.encode(), token.encode()) for token in admins]
    if not any(user) and not any(admin):
        raise Unauthorized(HOW_TO_SEND)
    return Caller(key_hash(presented), admin=any(admin))
