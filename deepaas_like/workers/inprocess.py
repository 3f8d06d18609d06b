"""Run a plugin in the calling process: for the one-shot CLI, where no server runs."""

from __future__ import annotations

import asyncio
from typing import Any

from deepaas_like.model.plugin import ModelDescription, Plugin
from deepaas_like import progress
from deepaas_like.workers.base import ProgressCallback, WorkerPool, unwrap


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

    async def run(
        self, hook: str, kwargs: dict[str, Any], job_id: str | None = None, on_progress: ProgressCallback | None = None
    ) -> Any:
        assert self.plugin is not None, "start() first"
        async with self._lock:
            progress.install(on_progress)
            try:
                return unwrap(await asyncio.to_thread(self.plugin.outcome, hook, kwargs))
            finally:
                progress.install(None)

    async def kill(self, job_id: str) -> bool:
        return False  # a call in this process cannot be killed without killing the caller

    async def stop(self) -> None:
        self.plugin = None
