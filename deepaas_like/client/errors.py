"""The client's exceptions, one per thing a caller may want to catch: every error answer
of the server (its JSON ``{"message"}``, or the field messages of a 422), a server that
cannot be reached, and a followed job that did not end ``done``.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArgumentsError",
    "AuthenticationError",
    "ClientError",
    "JobCancelled",
    "NotFoundError",
    "ServerError",
    "TransportError",
    "error_for",
]


class ClientError(Exception):
    """An error answer of the server, or a failed call.

    ``status`` is the HTTP status (0 when no answer came: :class:`TransportError`);
    ``message`` the server's message; ``fields`` the field messages of a 422
    (``{"argument": ["message", ...]}``), else None; ``job`` the job object of a followed
    job that ended in ``error`` or ``cancelled``, else None.
    """

    def __init__(
        self, status: int, message: str, fields: dict[str, list[str]] | None = None, job: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.fields = fields
        self.job = job

    def __str__(self) -> str:
        return f"{self.status}: {self.message}" if self.status else self.message


class ArgumentsError(ClientError):
    """422: the arguments were refused; ``fields`` maps each argument (or ``_body``, or the
    ``Idempotency-Key`` header) to its messages.
    """


class AuthenticationError(ClientError):
    """401 (no API key, or a wrong one) or 403 (the key may not do this: promoting,
    rolling back and deleting versions take an admin key)."""


class NotFoundError(ClientError):
    """404: no such model, job, version or path (or a job of another API key)."""


class ServerError(ClientError):
    """5xx: the plugin raised (500), lacks the hook (501), the server is busy or loading
    (503, retried first when it says ``Retry-After``), the prediction overran (504) or is
    too large (507). Also a followed job that ended in ``error``: then ``status`` is 500,
    ``message`` the job's message and ``job`` the job object.
    """


class JobCancelled(ClientError):
    """A followed job ended ``cancelled`` (status 409); ``job`` is the job object."""


class TransportError(ClientError):
    """No answer: the server could not be reached, the connection dropped, or no answer
    came within the client's ``timeout`` (status 0), after the retries the call allows.
    """


def _message(status: int, body: Any, text: str) -> tuple[str, dict[str, list[str]] | None]:
    """The message and field messages of an error answer's body (JSON, or ``text``)."""
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return body["message"], None
    if status == 422 and isinstance(body, dict) and body:
        fields = {str(name): _strings(messages) for name, messages in body.items()}
        summary = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in fields.items())
        return f"invalid arguments: {summary}", fields
    return text.strip() or f"HTTP {status}", None


def _strings(messages: Any) -> list[str]:
    """A field's messages as a flat list of strings (marshmallow nests them for lists and
    nested fields: ``{"0": ["..."]}``)."""
    if isinstance(messages, str):
        return [messages]
    if isinstance(messages, dict):
        return [f"{key}: {text}" for key, value in messages.items() for text in _strings(value)]
    if isinstance(messages, list):
        return [text for item in messages for text in _strings(item)]
    return [str(messages)]


def error_for(status: int, body: Any, text: str) -> ClientError:
    """The exception for an error answer: ``status`` (>= 400), its body parsed as JSON (None
    when it is not JSON) and its text.
    """
    message, fields = _message(status, body, text)
    if status == 422:
        return ArgumentsError(status, message, fields or {})
    if status in (401, 403):
        return AuthenticationError(status, message)
    if status == 404:
        return NotFoundError(status, message)
    if status >= 500:
        return ServerError(status, message)
    return ClientError(status, message)
