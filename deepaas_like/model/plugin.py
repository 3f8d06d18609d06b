"""One loaded plugin: its hooks, called the same way in a worker process or the CLI."""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import math
import os
import sys
import traceback
from multiprocessing.reduction import ForkingPickler
from typing import Any

import marshmallow
from marshmallow import fields

from deepaas_like.exceptions import HookNotImplemented, PredictionNotJSON, ResultTooLarge
from deepaas_like.model import args as model_args
from deepaas_like.model import deepaas_compat
from deepaas_like.model.base import BaseModel
from deepaas_like.model.files import UploadedFile
from deepaas_like.model.loading import DEFAULT_NAMESPACE, load_plugin

LOG = logging.getLogger(__name__)
HOOKS = ("predict", "train", "predict_batch")


def _marshmallow_missing() -> Any:
    return marshmallow.missing


# marshmallow tests ``value is missing``; a plain pickle would unpickle a different
# object, so a description sent from a worker pickles ``missing`` by reference.
ForkingPickler.register(type(marshmallow.missing), lambda _: (_marshmallow_missing, ()))


@dataclasses.dataclass
class ModelDescription:
    """What the server needs to know of a plugin without importing it (it is pickled).

    ``predict_args``/``train_args`` are None when the plugin lacks ``predict``/``train``.
    """

    name: str
    metadata: dict[str, Any]
    predict_args: dict[str, fields.Field] | None
    train_args: dict[str, fields.Field] | None
    response_fields: dict[str, fields.Field] | None
    batch: bool = False


class Plugin:
    """A plugin module or class instance, with its optional hooks looked up by name."""

    def __init__(self, name: str, target: Any, upload_class: type = UploadedFile) -> None:
        self.name = name
        self.target = target
        #: What uploads are handed over as: DEEPaaS's ``UploadedFile`` where the ``deepaas``
        #: package is installed (plugins check ``isinstance`` against it).
        self.upload_class = upload_class

    @classmethod
    def load(cls, name: str, namespace: str = DEFAULT_NAMESPACE) -> "Plugin":
        """Import plugin ``name`` from ``namespace``; raises ``PluginLoadError``."""
        target = load_plugin(name, namespace)
        return cls(name, target, deepaas_compat.upload_class())

    def hook(self, hook: str) -> Any:
        """The callable for ``hook``, or None when the plugin does not define it."""
        function = getattr(self.target, hook, None)
        if not callable(function):
            return None
        # A BaseModel subclass that inherits the base ``train`` has no training.
        base = getattr(BaseModel, hook, None)
        if base is not None and getattr(type(self.target), hook, None) is base:
            return None
        return function

    def warm(self) -> None:
        """Call the plugin's ``warm()`` if it has one."""
        warm = self.hook("warm")
        if warm is not None:
            warm()

    def describe(self) -> ModelDescription:
        """Metadata, argument fields and response fields, as :class:`ModelDescription`."""
        get_metadata = self.hook("get_metadata")
        metadata = dict(get_metadata() or {}) if get_metadata else {}
        return ModelDescription(
            name=self.name,
            metadata=metadata,
            predict_args=self._arguments("predict"),
            train_args=self._arguments("train"),
            response_fields=model_args.schema_fields(getattr(self.target, "schema", None)),
            batch=self.hook("predict_batch") is not None,
        )

    def _arguments(self, hook: str) -> dict[str, fields.Field] | None:
        if self.hook(hook) is None:
            return None
        get_args = self.hook(f"get_{hook}_args")
        arguments = (get_args() or {}) if get_args else {}
        return {name: model_args.unbound(field) for name, field in arguments.items()}

    def call(self, hook: str, kwargs: dict[str, Any]) -> Any:
        """Run ``hook(**kwargs)`` (``predict_batch`` takes the list of kwargs).

        Raises :class:`HookNotImplemented` when the plugin lacks the hook; whatever the
        plugin raises propagates.
        """
        function = self.hook(hook) if hook in HOOKS else None
        if function is None:
            raise HookNotImplemented(f"model {self.name!r} does not implement {hook}()")
        if hook == "predict_batch":
            return function([self._uploads_as_expected(one) for one in kwargs["batch"]])
        return function(**self._uploads_as_expected(kwargs))

    def _uploads_as_expected(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.upload_class is UploadedFile:
            return kwargs
        return {
            key: deepaas_compat.as_upload(value, self.upload_class) if isinstance(value, UploadedFile) else value
            for key, value in kwargs.items()
        }

    def outcome(self, hook: str, kwargs: dict[str, Any], max_result_size: int = 0) -> tuple:
        """Run a hook and report how it went, in a form that crosses processes:
        ``("ok", result)``, ``("invalid", {"field": [...]})`` for a marshmallow
        ValidationError, or ``("error", type_name, message, traceback)``.
        ``predict_batch`` reports ``("ok", [outcome, ...])``, one outcome per request.

        A prediction must be binary or JSON data (see :func:`check_prediction`), of at most
        ``max_result_size`` bytes (0: any size): else ``("not_json", message)`` or
        ``("too_large", message)``.
        """
        if hook == "predict_batch":
            return ("ok", self._batch_outcomes(kwargs["batch"], max_result_size))
        try:
            result = to_transport(self.call(hook, kwargs))
        except marshmallow.ValidationError as error:
            messages = error.normalized_messages()
            return ("invalid", messages if isinstance(messages, dict) else {"_schema": messages})
        except Exception as error:  # noqa: BLE001 - plugin errors go back to the caller
            # Logged here, where the traceback is, as DEEPaaS logs it: operators read the
            # server's log, clients get the message.
            LOG.exception("%s() of model %r failed: %s: %s", hook, self.name, type(error).__name__, error)
            return ("error", type(error).__name__, str(error), traceback.format_exc())
        if hook != "predict":
            return ("ok", result)
        return self._checked(result, max_result_size)

    def _checked(self, result: Any, max_result_size: int) -> tuple:
        try:
            check_prediction(result, self.name, max_result_size)
        except PredictionNotJSON as error:
            LOG.error("%s", error.message)
            return ("not_json", error.message)
        except ResultTooLarge as error:
            LOG.error("%s", error.message)
            return ("too_large", error.message)
        except Exception as error:  # noqa: BLE001 - e.g. a dict subclass that fails to iterate
            LOG.exception("the prediction of model %r cannot be checked", self.name)
            return ("error", type(error).__name__, f"the prediction cannot be checked: {error}", traceback.format_exc())
        return ("ok", result)

    def _batch_outcomes(self, batch: list[dict[str, Any]], max_result_size: int) -> list[tuple]:
        # A batch that fails as a whole is run again one request at a time, so that only
        # the request at fault fails.
        try:
            results = self.call("predict_batch", {"batch": batch})
            if len(results) != len(batch):
                raise ValueError(f"predict_batch returned {len(results)} results for {len(batch)} requests")
        except Exception:  # noqa: BLE001
            LOG.warning("predict_batch() of model %r failed for a batch of %d; running its requests one by one",
                        self.name, len(batch), exc_info=True)
            return [self.outcome("predict", kwargs, max_result_size) for kwargs in batch]
        outcomes = []
        for result in results:
            if isinstance(result, Exception):
                LOG.error("predict_batch() of model %r failed for one request: %s: %s", self.name, type(result).__name__, result)
                outcomes.append(("error", type(result).__name__, str(result), ""))
            else:
                outcomes.append(self._checked(to_transport(result), max_result_size))
        return outcomes


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
            if isinstance(item, dict):
                children = []
                for key, child in item.items():
                    if not (key is None or isinstance(key, (str, int, float))):
                        return f"{where} has a key of type {_type_name(key)} (JSON keys are strings)"
                    if isinstance(key, float) and not math.isfinite(key):
                        return f"{where} has the key {key!r} (a float; JSON has no NaN or Infinity)"
                    children.append((child, f"{path}[{json.dumps(key if isinstance(key, str) else str(key))}]", depth + 1))
            else:
                children = [(child, f"{path}[{index}]", depth + 1) for index, child in enumerate(item)]
            stack.extend(reversed(children))  # first problem first
            continue
        return f"{where} is of type {_type_name(item)}, which JSON cannot represent"
    return None


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else f"{kind.__module__}.{kind.__qualname__}"
