"""Run a plugin in the calling process: for the one-shot CLI, where no server runs."""

from __future__ import annotations

import asyncio
from typing import Any

import marshmallow

from deepaas_like.exceptions import DeepaasLikeError, InvalidArguments, PluginError
from deepaas_like.model.plugin import ModelDescription, Plugin, to_transport
from deepaas_like.workers.base import WorkerPool


class InProcessPool(WorkerPool):
    """One plugin instance in this process; calls run one at a time in a thread."""

    def __init__(self, name: str, namespace: str, warm: bool = True) -> None:
        self.name = name
        self.namespace = namespace
        self.warm = warm
        self.plugin: Plugin | None = None
        self._lock = asyncio.Lock()

    async def start(self) -> ModelDescription:
        self.plugin = Plugin.load(self.name, self.namespace)
        if self.warm:
            self.plugin.warm()
        self.description = self.plugin.describe()
        return self.description

    async def run(self, hook: str, kwargs: dict[str, Any], job_id: str | None = None) -> Any:
        assert self.plugin is not None, "start() first"
        async with self._lock:
            try:
                return to_transport(await asyncio.to_thread(self.plugin.call, hook, kwargs))
            except marshmallow.ValidationError as error:
                messages = error.normalized_messages()
                raise InvalidArguments(messages if isinstance(messages, dict) else {"_schema": messages}) from error
            except DeepaasLikeError:
                raise
            except Exception as error:  # noqa: BLE001 - reported like a worker's error
                raise PluginError(type(error).__name__, str(error)) from error

    async def kill(self, job_id: str) -> bool:
        return False  # a call in this process cannot be killed without killing the caller

    async def stop(self) -> None:
        self.plugin = None
