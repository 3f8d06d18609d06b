"""Plugin discovery through a setuptools entry-point namespace, with stevedore."""

from __future__ import annotations

import inspect
from typing import Any

from stevedore import NamedExtensionManager

from deepaas_like.exceptions import PluginLoadError
from deepaas_like.model import deepaas_compat

__all__ = ["DEFAULT_NAMESPACE", "installed_models", "load_plugin", "resolve_model_names"]

DEFAULT_NAMESPACE = "deepaas.v2.model"


def installed_models(namespace: str = DEFAULT_NAMESPACE) -> list[str]:
    """Names of every entry point in ``namespace``, sorted; nothing is imported."""
    manager: NamedExtensionManager[Any] = NamedExtensionManager(
        namespace, names=[], on_missing_entrypoints_callback=None
    )
    return sorted(set(manager.entry_points_names()))


def resolve_model_names(requested: list[str], namespace: str = DEFAULT_NAMESPACE) -> list[str]:
    """The models to serve: ``requested`` (checked to be installed) or, if empty, all installed.

    Raises :class:`PluginLoadError` naming a missing model and listing what is installed.
    """
    installed = installed_models(namespace)
    if not requested:
        if not installed:
            raise PluginLoadError(f"no model plugin is installed in namespace {namespace!r}")
        return installed
    missing = [name for name in requested if name not in installed]
    if missing:
        raise PluginLoadError(
            f"model {', '.join(map(repr, missing))} is not installed in namespace {namespace!r}; "
            f"installed: {', '.join(installed) or 'none'}"
        )
    return list(dict.fromkeys(requested))


def load_plugin(name: str, namespace: str = DEFAULT_NAMESPACE) -> Any:
    """Import the plugin ``name``: a module, or an instance of the class the entry point names.

    Raises :class:`PluginLoadError` if it is not installed or fails to import or instantiate.
    """

    deepaas_compat.install()  # plugins may import deepaas.model.v2.wrapper without DEEPaaS

    def fail(_manager: Any, entry_point: Any, error: BaseException) -> None:
        raise PluginLoadError(
            f"model {entry_point.name!r} ({entry_point.value}) failed to load: {type(error).__name__}: {error}"
        ) from error

    manager: NamedExtensionManager[Any] = NamedExtensionManager(
        namespace, names=[name], on_load_failure_callback=fail, on_missing_entrypoints_callback=None
    )
    if name not in manager.names():
        resolve_model_names([name], namespace)  # raises with the installed list
    target = manager[name].plugin
    if inspect.isclass(target):
        try:
            return target()
        except Exception as error:
            raise PluginLoadError(
                f"model {name!r}: {target.__name__}() failed: {type(error).__name__}: {error}"
            ) from error
    return target
