"""Where plugin code runs: executors whose pools share one interface (:mod:`.base`) and
speak one protocol (:mod:`.protocol`).

- :mod:`deepaas_like.workers.process`: persistent spawn-context worker processes (the default);
- :mod:`deepaas_like.workers.ray`: replicas placed on a Ray cluster as actors (Ray itself is
  imported only by the driver process it starts);
- :mod:`deepaas_like.workers.inprocess`: the calling process (the one-shot CLI, tests).

This package imports no executor: the serving layer (batching, autoscaling) needs only the
interface and the protocol, and whoever chooses an executor imports its module.
"""

from deepaas_like.workers.base import Placement, ProgressCallback, WorkerOptions, WorkerPool

__all__ = ["Placement", "ProgressCallback", "WorkerOptions", "WorkerPool"]
