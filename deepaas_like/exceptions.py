"""The project's exceptions. Each carries the HTTP status it maps to (see ``api.app``)."""

from __future__ import annotations

__all__ = [
    "ClusterUnavailable",
    "DatabaseUnavailable",
    "DeepaasLikeError",
    "EndpointDisabled",
    "ExtraNotInstalled",
    "Forbidden",
    "HookNotImplemented",
    "IdempotencyKeyReused",
    "InvalidArguments",
    "InvalidIdempotencyKey",
    "InvalidPrediction",
    "JobNotFound",
    "JobResultMissing",
    "MalformedRequest",
    "ModelNotFound",
    "ModelUnavailable",
    "PluginDeclarationError",
    "PluginError",
    "PluginLoadError",
    "PredictTimeout",
    "PredictionNotJSON",
    "QueueFull",
    "ResultTooLarge",
    "ShuttingDown",
    "StartupError",
    "Unauthorized",
    "VersionConflict",
    "VersionNotFound",
    "VersionUnavailable",
    "WorkerDied",
]


class DeepaasLikeError(Exception):
    """Base class: a message a user can act on, and the HTTP status that reports it."""

    status: int = 500
    #: Extra response headers (e.g. ``Retry-After``).
    headers: dict[str, str] = {}

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ModelNotFound(DeepaasLikeError):
    """No model of that name is served."""

    status = 404


class VersionNotFound(ModelNotFound):
    """No version of that number exists for the model (or it was deleted)."""


class VersionConflict(DeepaasLikeError):
    """The model's versions are not in a state that allows this (a promoted version cannot
    be deleted; there is no promotion to roll back; a version that cannot load cannot be
    promoted).
    """

    status = 409


class JobNotFound(DeepaasLikeError):
    """No training (or other job) of that uuid exists for the model."""

    status = 404


class JobResultMissing(DeepaasLikeError):
    """A finished job's stored result file is not in the results directory."""

    status = 500


class InvalidIdempotencyKey(DeepaasLikeError):
    """An ``Idempotency-Key`` header that is not 1 to 255 printable ASCII characters."""

    status = 400


class MalformedRequest(DeepaasLikeError):
    """A request's bytes are not what its format says: a gRPC call whose bytes are not its
    protobuf message."""

    status = 400


class Unauthorized(DeepaasLikeError):
    """No valid API key on a protected route."""

    status = 401
    headers = {"WWW-Authenticate": 'Bearer realm="deepaas_like"'}


class Forbidden(DeepaasLikeError):
    """The API key is valid but may not do this (changing what a model serves needs an admin key)."""

    status = 403


class EndpointDisabled(DeepaasLikeError):
    """The endpoint was switched off by configuration (DEEPaaS answers 402)."""

    status = 402


class ExtraNotInstalled(DeepaasLikeError):
    """A feature needs an optional extra of deepaas_like that is not installed (``--grpc-port``
    and the .proto files need ``deepaas_like[grpc]``)."""

    status = 501


class HookNotImplemented(DeepaasLikeError):
    """The plugin does not define the hook the route needs (``predict``, ``train``)."""

    status = 501


class InvalidArguments(DeepaasLikeError):
    """Request arguments failed validation; ``messages`` is ``{"field": ["message", ...]}``."""

    status = 422

    def __init__(self, messages: dict) -> None:
        details = "; ".join(
            f"{field}: {_text(text)}" for field, text in sorted(messages.items(), key=lambda item: str(item[0]))
        )
        super().__init__(f"invalid arguments: {details}")
        self.messages = messages


class IdempotencyKeyReused(InvalidArguments):
    """An ``Idempotency-Key`` sent again with other arguments than its first request's
    (the IETF httpapi draft answers 422); reported as the ``Idempotency-Key`` field's error.
    """

    def __init__(self, message: str) -> None:
        super().__init__({"Idempotency-Key": [message]})


class PluginError(DeepaasLikeError):
    """Plugin code raised; ``error_type`` is the exception's class name, ``status`` the HTTP
    status the plugin chose (an aiohttp ``HTTPException`` it raised; else 500).
    """

    status = 500

    def __init__(self, error_type: str, message: str, traceback: str = "", status: int = 500) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.traceback = traceback
        self.status = status


class InvalidPrediction(DeepaasLikeError):
    """The plugin's prediction does not match its own ``schema``."""

    status = 500

    def __init__(self, messages: dict) -> None:
        super().__init__("prediction does not match the model's schema: " + str(messages))
        self.messages = messages


class PredictionNotJSON(InvalidPrediction):
    """The plugin's prediction is neither binary nor JSON data: NaN or Infinity, a value of
    a type JSON lacks (a set, an object), or nesting deeper than JSON results may go.
    """

    def __init__(self, message: str) -> None:
        DeepaasLikeError.__init__(self, message)
        self.messages = {"predictions": [message]}


class ResultTooLarge(DeepaasLikeError):
    """The plugin's result is larger than the server accepts (``--max-result-size``), or
    there is no room left to store it.
    """

    status = 507


class WorkerDied(DeepaasLikeError):
    """The worker process running the call exited before answering."""

    status = 500


class ModelUnavailable(DeepaasLikeError):
    """The model has no worker able to take work (it failed to start or warm)."""

    status = 503


class ClusterUnavailable(ModelUnavailable):
    """The Ray cluster the model's workers run on cannot be reached right now (its head is
    lost, or its replicas are being placed again after it came back).
    """

    headers = {"Retry-After": "5"}


class VersionUnavailable(ModelUnavailable):
    """The model version is loading, or failed to load (its ``load`` raised, its directory is missing)."""

    headers = {"Retry-After": "5"}


class PredictTimeout(DeepaasLikeError):
    """A prediction overran the model's timeout; its worker was killed and replaced."""

    status = 504


class QueueFull(DeepaasLikeError):
    """Too many requests already wait for the model's workers."""

    status = 503
    headers = {"Retry-After": "1"}


class DatabaseUnavailable(DeepaasLikeError):
    """The job database cannot be reached or written right now (stopped, unreachable,
    locked by another writer). The message names the reason, never an SQL statement.
    """

    status = 503
    headers = {"Retry-After": "5"}


class ShuttingDown(DeepaasLikeError):
    """The server is stopping and cannot finish this request within its shutdown timeout."""

    status = 503
    headers = {"Retry-After": "1"}


class StartupError(DeepaasLikeError):
    """The server cannot start: a resource it needs (job database, upload directory) is
    unusable. The message names the resource and the reason, on one line.
    """


class PluginLoadError(StartupError):
    """A plugin is not installed or failed to import; raised at start-up."""


class PluginDeclarationError(PluginLoadError):
    """A plugin declares its arguments or its ``schema`` wrongly (not marshmallow fields, a
    default its field cannot read); raised at start-up, naming the hook and the field.
    """


def _text(messages: object) -> str:
    if isinstance(messages, (list, tuple)):
        return " ".join(map(_text, messages))
    if isinstance(messages, dict):
        return "; ".join(f"{key}: {_text(value)}" for key, value in messages.items())
    return str(messages)
