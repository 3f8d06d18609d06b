"""One loaded plugin: its hooks, called the same way in a worker process or the CLI."""

from __future__ import annotations

import dataclasses
import inspect
import os
import traceback
from multiprocessing.reduction import ForkingPickler
from typing import Any

import marshmallow
from marshmallow import fields

from deepaas_like.exceptions import HookNotImplemented
from deepaas_like.model import args as model_args
from deepaas_like.model.base import BaseModel
from deepaas_like.model.loading import DEFAULT_NAMESPACE, load_plugin

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

    def __init__(self, name: str, target: Any) -> None:
        self.name = name
        self.target = target

    @classmethod
    def load(cls, name: str, namespace: str = DEFAULT_NAMESPACE) -> "Plugin":
        """Import plugin ``name`` from ``namespace``; raises ``PluginLoadError``."""
        return cls(name, load_plugin(name, namespace))

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
        return dict(get_args() or {}) if get_args else {}

    def call(self, hook: str, kwargs: dict[str, Any]) -> Any:
        """Run ``hook(**kwargs)`` (``predict_batch`` takes the list of kwargs).

        Raises :class:`HookNotImplemented` when the plugin lacks the hook; whatever the
        plugin raises propagates.
        """
        function = self.hook(hook) if hook in HOOKS else None
        if function is None:
            raise HookNotImplemented(f"model {self.name!r} does not implement {hook}()")
        if hook == "predict_batch":
            return function(kwargs["batch"])
        return function(**kwargs)

    def outcome(self, hook: str, kwargs: dict[str, Any]) -> tuple:
        """Run a hook and report how it went, in a form that crosses processes:
        ``("ok", result)``, ``("invalid", {"field": [...]})`` for a marshmallow
        ValidationError, or ``("error", type_name, message, traceback)``.
        ``predict_batch`` reports ``("ok", [outcome, ...])``, one outcome per request.
        """
        if hook == "predict_batch":
            return ("ok", self._batch_outcomes(kwargs["batch"]))
        try:
            return ("ok", to_transport(self.call(hook, kwargs)))
        except marshmallow.ValidationError as error:
            messages = error.normalized_messages()
            return ("invalid", messages if isinstance(messages, dict) else {"_schema": messages})
        except Exception as error:  # noqa: BLE001 - plugin errors go back to the caller
            return ("error", type(error).__name__, str(error), traceback.format_exc())

    def _batch_outcomes(self, batch: list[dict[str, Any]]) -> list[tuple]:
        # A batch that fails as a whole is run again one request at a time, so that only
        # the request at fault fails.
        try:
            results = self.call("predict_batch", {"batch": batch})
            if len(results) != len(batch):
                raise ValueError(f"predict_batch returned {len(results)} results for {len(batch)} requests")
        except Exception:  # noqa: BLE001
            return [self.outcome("predict", kwargs) for kwargs in batch]
        return [
            ("error", type(r).__name__, str(r), "") if isinstance(r, Exception) else ("ok", to_transport(r))
            for r in results
        ]


def to_transport(result: Any) -> Any:
    """Make a hook's result safe to send between processes.

    Open binary files become their path (when they have one on disk) or their bytes;
    path-likes become :class:`str` paths tagged as :class:`FileResult`.
    """
    if isinstance(result, (bytes, bytearray, memoryview)):
        return bytes(result)
    if isinstance(result, os.PathLike):
        return FileResult(os.fspath(result))
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
    """A prediction that is a file on disk, sent to the client as its bytes."""

    path: str
