"""Run a plugin in the calling process: for the one-shot CLI, and for handler tests."""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from deepaas_like import progress
from deepaas_like.model.plugin import ModelDescription, Plugin
from deepaas_like.workers import protocol
from deepaas_like.workers.base import ProgressCallback, WorkerPool, note
from deepaas_like.workers.execution import execute, start_plugin

__all__ = ["InProcessPool"]


class InProcessPool(WorkerPool):
    """One plugin instance in this process; calls run one at a time in a thread.

    ``max_result_size`` bounds predictions in bytes (0: any size), as in a worker process.
    """

    def __init__(
        self, name: str, namespace: str, warm: bool = True, max_result_size: int = 0, load_from: str | None = None
    ) -> None:
        self.name = name
        self.namespace = namespace
        self.warm = warm
        self.max_result_size = max_result_size
        self.load_from = load_from
        self.plugin: Plugin | None = None
        self._lock = asyncio.Lock()

    @property
    def live_workers(self) -> int:
        return 0 if self.plugin is None else 1

    async def start(self) -> ModelDescription:
        self.plugin = start_plugin(self.name, self.namespace, self.warm, self.load_from)
        self.description = self.plugin.describe()
        return self.description

    async def run(
        self,
        hook: str,
        kwargs: dict[str, Any],
        job_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        save_to: str | None = None,
    ) -> Any:
        assert self.plugin is not None, "start() first"
        loop = asyncio.get_running_loop()
        self.waiting += 1
        if self._lock.locked():
            note(on_progress, f"waiting for the model {self.name} to finish its running call")
        async with self._lock:
            self.waiting -= 1
            note(on_progress, f"running {hook}")
            # The plugin reports from the thread it runs in; the callback belongs to the loop.
            progress.install(None if on_progress is None else functools.partial(_threadsafe, loop, on_progress))
            try:
                outcome = await asyncio.to_thread(execute, self.plugin, hook, kwargs, self.max_result_size, save_to)
            finally:
                progress.install(None)
        return protocol.value(outcome)

    async def kill(self, job_id: str) -> bool:
        return False  # a call in this process cannot be killed without killing the caller

    async def stop(self) -> None:
        self.plugin = None


def _threadsafe(loop: asyncio.AbstractEventLoop, on_progress: ProgressCallback, *report: Any) -> None:
    loop.call_soon_threadsafe(on_progress, *report)
