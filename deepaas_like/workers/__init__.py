"""Where plugin code runs. ``process`` is the default: persistent spawn-context processes;
``ray`` places the workers on a Ray cluster as actors (``RayWorkerPool``; Ray itself is
imported only by the driver process it starts).
"""

from deepaas_like.workers.base import WorkerPool
from deepaas_like.workers.process import ProcessWorkerPool
from deepaas_like.workers.ray import RayWorkerPool

__all__ = ["ProcessWorkerPool", "RayWorkerPool", "WorkerPool"]
