"""Where plugin code runs. ``process`` is the default: persistent spawn-context processes."""

from deepaas_like.workers.base import WorkerPool
from deepaas_like.workers.process import ProcessWorkerPool

__all__ = ["ProcessWorkerPool", "WorkerPool"]
