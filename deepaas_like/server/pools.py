"""Where a model's workers run: the executor ``--executor`` names, as a :data:`PoolFactory`
that the server calls once per pool (a model's predictions, its trainings, a model version's
predictions).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

from deepaas_like.kinds import PREDICT, TRAIN
from deepaas_like.settings import ModelSettings, Settings
from deepaas_like.workers.base import WorkerOptions, WorkerPool
from deepaas_like.workers.process import ProcessWorkerPool
from deepaas_like.workers.ray import ClusterOptions, RayCluster, RayResources, RayWorkerPool

__all__ = ["PoolFactory", "default_pools", "process_pools", "ray_pools"]

#: Makes the worker pool of a model: (model name, kind: ``"predict"`` or ``"train"``, number
#: of workers, and for a model version ``load_from=`` its directory's URL) -> a pool, not yet
#: started.
PoolFactory = Callable[..., WorkerPool]


def default_pools(settings: Settings) -> PoolFactory:
    """The pools of the executor ``--executor`` names."""
    return ray_pools(settings) if settings.executor == "ray" else process_pools(settings)


def _worker_options(settings: Settings, model: ModelSettings, load_from: str | None, **extra: Any) -> WorkerOptions:
    """What every executor's workers of ``model`` are started with, and ``extra``."""
    return WorkerOptions(
        warm=model.warm,
        threads=model.worker_threads,
        debug=settings.debug,
        log_json=settings.log_json,
        load_from=load_from,
        **extra,
    )


def process_pools(settings: Settings) -> PoolFactory:
    """The default :data:`PoolFactory`: persistent worker processes, set up as each model's
    :class:`~deepaas_like.settings.ModelSettings` say.
    """

    def make(name: str, kind: str, size: int, load_from: str | None = None) -> WorkerPool:
        model = settings.for_model(name)
        options = _worker_options(
            settings,
            model,
            load_from,
            gpus=model.gpus,
            memory_limit_mb=model.worker_memory_limit_mb,
            max_result_size=model.max_result_size,
            results_dir=settings.upload_dir,
        )
        if kind == TRAIN:
            return ProcessWorkerPool(name, settings.namespace, size=size, options=options)
        return ProcessWorkerPool(
            name,
            settings.namespace,
            size=size,
            options=options,
            timeout=model.timeout(),
            max_queue=model.max_queue,
            depth=model.pipeline_depth,
        )

    return make


def ray_pools(settings: Settings) -> PoolFactory:
    """The :data:`PoolFactory` of ``--executor ray``: replicas (Ray actors) on the cluster at
    ``--ray-address``, each reserving what its model's :class:`~deepaas_like.settings.ModelSettings`
    say. The server connects when the first model starts.
    """
    cluster = RayCluster(
        ClusterOptions(
            address=settings.ray_address,
            connect_timeout=settings.ray_connect_timeout,
            head_timeout=settings.ray_head_timeout,
            reconnect_interval=settings.ray_reconnect_interval,
            results_dir=settings.upload_dir,
            debug=settings.debug,
            log_json=settings.log_json,
            namespace=settings.namespace,
        )
    )

    def make(name: str, kind: str, size: int, load_from: str | None = None) -> WorkerPool:
        model = settings.for_model(name)
        resources = RayResources(
            model.ray_num_cpus, model.ray_num_gpus, model.ray_memory_mb, model.ray_resources, model.ray_node_labels
        )
        options = _worker_options(settings, model, load_from)
        if kind == TRAIN:
            return RayWorkerPool(cluster, name, TRAIN, size, resources, options)
        options = dataclasses.replace(options, max_result_size=model.max_result_size)
        return RayWorkerPool(cluster, name, PREDICT, size, resources, options, model.timeout(), model.max_queue)

    return make
