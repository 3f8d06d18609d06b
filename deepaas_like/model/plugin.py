"""One loaded plugin: its hooks, called the same way in a worker process or the CLI.

This runs beside the plugin (in the worker). How a call's outcome is reported to the
server is the workers' protocol (``deepaas_like.workers.execution``).
"""

from __future__ import annotations

import copyreg
import dataclasses
import inspect
from typing import Any

import marshmallow
from marshmallow import fields

from deepaas_like.exceptions import HookNotImplemented
from deepaas_like.model import args as model_args
from deepaas_like.model import deepaas_compat
from deepaas_like.model.base import BaseModel
from deepaas_like.model.failures import HookFailure, failure_of
from deepaas_like.model.files import UploadedFile
from deepaas_like.model.loading import DEFAULT_NAMESPACE, load_plugin

__all__ = ["HOOKS", "ModelDescription", "Plugin"]

HOOKS = ("predict", "train", "predict_batch", "save", "load")
#: Hooks a plugin module must define itself (not import): common names of other libraries.
_OWN_HOOKS = ("save", "load")


def _marshmallow_missing() -> Any:
    return marshmallow.missing


# marshmallow tests ``value is missing``; a plain pickle would unpickle a different
# object, so a description sent from a worker pickles ``missing`` by reference (in every
# pickler of the process: copyreg's table is also ForkingPickler's).
copyreg.pickle(type(marshmallow.missing), lambda _: (_marshmallow_missing, ()))


@dataclasses.dataclass
class ModelDescription:
    """What the server needs to know of a plugin without importing it (it is pickled).

    ``predict_args``/``train_args`` are None when the plugin lacks ``predict``/``train``.
    ``metadata_error`` is what ``get_metadata`` raised (the model is served; its metadata
    answers that error).
    """

    name: str
    metadata: dict[str, Any]
    predict_args: dict[str, fields.Field] | None
    train_args: dict[str, fields.Field] | None
    response_fields: dict[str, fields.Field] | None
    batch: bool = False
    #: The plugin has ``save`` and ``load``: each successful training makes a model version.
    versions: bool = False
    metadata_error: HookFailure | None = None


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
        if hook in _OWN_HOOKS and inspect.ismodule(self.target) and function.__module__ != self.target.__name__:
            return None  # e.g. ``from torch import save, load``: not the plugin's hooks
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
        """Metadata, argument fields and response fields, as :class:`ModelDescription`.

        A ``get_metadata`` that raises is described (``metadata_error``), not raised: the
        model is served. Raises ``PluginDeclarationError`` for arguments or a ``schema``
        that are not marshmallow fields (or have a default their field cannot read).
        """
        metadata, metadata_error = self._metadata()
        where = f"the schema attribute of model {self.name!r}"
        return ModelDescription(
            name=self.name,
            metadata=metadata,
            predict_args=self._arguments("predict"),
            train_args=self._arguments("train"),
            response_fields=model_args.schema_fields(getattr(self.target, "schema", None), where),
            batch=self.hook("predict_batch") is not None,
            versions=self.hook("save") is not None and self.hook("load") is not None,
            metadata_error=metadata_error,
        )

    def _metadata(self) -> tuple[dict[str, Any], HookFailure | None]:
        get_metadata = self.hook("get_metadata")
        if get_metadata is None:
            return {}, None
        try:
            return dict(get_metadata() or {}), None
        except Exception as error:  # noqa: BLE001 - the model is served; its metadata answers the error
            return {}, failure_of(error)[0]

    def _arguments(self, hook: str) -> dict[str, fields.Field] | None:
        if self.hook(hook) is None:
            return None
        get_args = self.hook(f"get_{hook}_args")
        arguments = (get_args() or {}) if get_args else {}
        return model_args.checked_fields(arguments, f"get_{hook}_args() of model {self.name!r}")

    def call(self, hook: str, kwargs: dict[str, Any]) -> Any:
        """Run ``hook(**kwargs)`` (``predict_batch`` takes the list of kwargs; ``save`` and
        ``load`` take the version directory, ``{"path": ...}``, as their one argument).

        Raises :class:`HookNotImplemented` when the plugin lacks the hook; whatever the
        plugin raises propagates.
        """
        function = self.hook(hook) if hook in HOOKS else None
        if function is None:
            raise HookNotImplemented(f"model {self.name!r} does not implement {hook}()")
        if hook == "predict_batch":
            return function([self._uploads_as_expected(one) for one in kwargs["batch"]])
        if hook in ("save", "load"):
            return function(kwargs["path"])
        return function(**self._uploads_as_expected(kwargs))

    def _uploads_as_expected(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        if self.upload_class is UploadedFile:
            return kwargs
        return {
            key: deepaas_compat.as_upload(value, self.upload_class) if isinstance(value, UploadedFile) else value
            for key, value in kwargs.items()
        }
