"""Running one call of plugin code and reporting how it went, as a protocol outcome.

This is the worker's side of the protocol, shared by every executor: whatever the plugin
returns or raises becomes a :class:`~deepaas_like.workers.protocol.Result`,
:class:`~deepaas_like.workers.protocol.Invalid` or
:class:`~deepaas_like.workers.protocol.Error`; predictions are checked to be binary or JSON
data (:func:`deepaas_like.results.check_prediction`).
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

import marshmallow

from deepaas_like.exceptions import PluginLoadError, PredictionNotJSON, ResultTooLarge
from deepaas_like.model.failures import failure_of
from deepaas_like.model.plugin import Plugin
from deepaas_like.registry import storage
from deepaas_like.results import check_prediction, to_transport
from deepaas_like.workers.protocol import BatchResult, Error, Invalid, NotJSON, Outcome, Result, TooLarge

__all__ = ["execute", "out_of_memory", "start_plugin"]

LOG = logging.getLogger(__name__)


def start_plugin(name: str, namespace: str, warm: bool = True, load_from: str | None = None) -> Plugin:
    """What a worker does before it takes work: import plugin ``name``, call its ``warm()``
    (when ``warm``), then, for a worker serving a model version, its ``load(path)`` with the
    version's directory (``load_from``, a path or URL; fetched first when remote).

    Raises ``PluginLoadError`` (also when ``warm`` raises: the message says what it raised,
    unwrapped as :func:`~deepaas_like.model.failures.failure_of` does), ``RuntimeError`` when
    ``load`` raises, ``FileNotFoundError`` for a version directory that is missing.
    """
    plugin = Plugin.load(name, namespace)
    if warm:
        try:
            plugin.warm()
        except Exception as error:
            failure, cause = failure_of(error)
            raise PluginLoadError(f"warm() failed: {failure.error_type}: {failure.message}") from cause
    if load_from is not None:
        path = storage.local_copy(load_from)
        try:
            plugin.call("load", {"path": path})
        except Exception as error:
            failure, cause = failure_of(error)
            reason = f"{failure.error_type}: {failure.message}"
            raise RuntimeError(f"load() of the version in {load_from} failed: {reason}") from cause
    return plugin


def execute(
    plugin: Plugin, hook: str, kwargs: dict[str, Any], max_result_size: int = 0, save_to: str | None = None
) -> Outcome:
    """Run ``hook(**kwargs)`` of ``plugin``; ``predict_batch`` (``kwargs={"batch": [...]}``)
    gives a :class:`BatchResult`. A prediction larger than ``max_result_size`` bytes (0: any
    size) is a :class:`TooLarge`. With ``save_to`` (a version directory's URL), a hook that
    returned is followed by the plugin's ``save(path)`` into that new directory; a ``save``
    that fails (or a full disk) fails the call, and leaves no directory behind. Plugin
    failures are logged here, where the traceback is, as DEEPaaS logs them: operators read
    the server's log, clients get the message.
    """
    if hook == "predict_batch":
        return BatchResult(_batch(plugin, kwargs["batch"], max_result_size))
    try:
        result = to_transport(plugin.call(hook, kwargs))
    except marshmallow.ValidationError as error:
        return _invalid(error)
    except Exception as error:  # noqa: BLE001 - plugin errors go back to the caller
        return _error(plugin, hook, error)
    if save_to is not None:
        try:
            storage.publish(save_to, lambda path: plugin.call("save", {"path": path}))
        except Exception as error:  # noqa: BLE001 - the training fails with the reason
            LOG.exception("save() of model %r into %s failed", plugin.name, save_to)
            message = f"save() failed, no version was made: {type(error).__name__}: {error}"
            return Error(type(error).__name__, message, traceback.format_exc())
    if hook != "predict":
        return Result(result)
    return _checked(plugin.name, result, max_result_size)


def _error(plugin: Plugin, hook: str, error: BaseException) -> Error:
    """What the plugin raised, unwrapped (an aiohttp ``HTTPException`` built around the real
    exception, see :func:`~deepaas_like.model.failures.failure_of`), logged with the real
    exception's traceback.
    """
    failure, cause = failure_of(error)
    name, message = failure.error_type, failure.message
    LOG.error("%s() of model %r failed: %s: %s", hook, plugin.name, name, message, exc_info=cause)
    return Error(name, message, failure.traceback, failure.status)


def out_of_memory(outcome: Outcome) -> bool:
    """Whether the plugin raised ``MemoryError`` (in any request of a batch): its worker's
    memory may stay exhausted (a cache, a leak), so it is replaced.
    """
    if isinstance(outcome, Error):
        return outcome.error_type == "MemoryError"
    if isinstance(outcome, BatchResult):
        return any(out_of_memory(one) for one in outcome.outcomes)
    return False


def _invalid(error: marshmallow.ValidationError) -> Invalid:
    messages = error.normalized_messages()
    return Invalid(messages if isinstance(messages, dict) else {"_schema": messages})


def _checked(model: str, result: Any, max_result_size: int) -> Outcome:
    try:
        check_prediction(result, model, max_result_size)
    except PredictionNotJSON as error:
        LOG.error("%s", error.message)
        return NotJSON(error.message)
    except ResultTooLarge as error:
        LOG.error("%s", error.message)
        return TooLarge(error.message)
    except Exception as error:  # noqa: BLE001 - e.g. a dict subclass that fails to iterate
        LOG.exception("the prediction of model %r cannot be checked", model)
        return Error(type(error).__name__, f"the prediction cannot be checked: {error}", traceback.format_exc())
    return Result(result)


def _batch(plugin: Plugin, batch: list[dict[str, Any]], max_result_size: int) -> list[Outcome]:
    # A batch that fails as a whole is run again one request at a time, so that only the
    # request at fault fails.
    try:
        results = plugin.call("predict_batch", {"batch": batch})
        if len(results) != len(batch):
            raise ValueError(f"predict_batch returned {len(results)} results for {len(batch)} requests")
    except Exception:  # noqa: BLE001
        LOG.warning(
            "predict_batch() of model %r failed for a batch of %d; running its requests one by one",
            plugin.name,
            len(batch),
            exc_info=True,
        )
        return [execute(plugin, "predict", kwargs, max_result_size) for kwargs in batch]
    outcomes: list[Outcome] = []
    for result in results:
        if isinstance(result, marshmallow.ValidationError):  # this request's own bad input: 422
            outcomes.append(_invalid(result))
        elif isinstance(result, Exception):
            failure = failure_of(result)[0]
            LOG.error(
                "predict_batch() of model %r failed for one request: %s: %s",
                plugin.name,
                failure.error_type,
                failure.message,
            )
            outcomes.append(Error(failure.error_type, failure.message, "", failure.status))
        else:
            outcomes.append(_checked(plugin.name, to_transport(result), max_result_size))
    return outcomes
