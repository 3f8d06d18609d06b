"""The interface every executor's worker pool implements (local processes, the calling
process, Ray actors): what the serving layer calls, and what metrics and readiness read;
and what the executors share: how workers are started (:class:`WorkerOptions`), where one
runs (:class:`Placement`), how progress reaches the caller.
"""

from __future__ import annotations

import abc
import dataclasses
import signal
from collections.abc import Callable
from typing import Any

from deepaas_like.model.plugin import ModelDescription

__all__ = ["Placement", "ProgressCallback", "ServerNote", "WorkerOptions", "WorkerPool", "how_ended", "note"]


def how_ended(exitcode: int | None) -> str:
    """How a process with ``multiprocessing``'s ``exitcode`` ended: "exited with code N", or
    "was killed by SIGNAME" for a negative one (a signal's number)."""
    if exitcode is None or exitcode >= 0:
        return f"exited with code {exitcode}"
    try:
        return f"was killed by {signal.Signals(-exitcode).name}"
    except ValueError:
        return f"was killed by signal {-exitcode}"


#: Called with (fraction done or None, message or None, metrics or None, step or None) when
#: plugin code reports progress (see :func:`deepaas_like.progress.report`).
ProgressCallback = Callable[[float | None, str | None, "dict[str, float] | None", "int | None"], None]


class ServerNote(str):
    """A progress message the server writes itself (a call waits for a worker, a worker
    starts, the plugin's hook runs), not the plugin: the job records it as a server event.
    It travels through the same :data:`ProgressCallback` as the plugin's reports.
    """


def note(on_progress: ProgressCallback | None, message: str) -> None:
    """Tell ``on_progress`` (when given) what the server is doing for the call: ``message``
    becomes a server event of its job (see :class:`ServerNote`)."""
    if on_progress is not None:
        on_progress(None, ServerNote(message), None, None)


@dataclasses.dataclass(frozen=True)
class Placement:
    """Where one worker runs: ``node`` (a Ray node's id, ``local`` for this machine) and
    the ids of the GPUs it sees (its ``CUDA_VISIBLE_DEVICES``, node-local ids).
    """

    node: str = "local"
    gpus: tuple[str, ...] = ()

    @property
    def device(self) -> str:
        """``cpu``, or ``gpu:`` and the GPU ids, e.g. ``gpu:1`` or ``gpu:0,1``."""
        return "gpu:" + ",".join(self.gpus) if self.gpus else "cpu"


@dataclasses.dataclass(frozen=True)
class WorkerOptions:
    """How an executor starts its workers (worker processes, Ray replicas).

    ``warm``: call the plugin's ``warm()`` first. ``threads`` sets the math libraries' thread
    pools (OpenMP, MKL, OpenBLAS: torch and numpy) in each worker (0: as the environment
    says). ``gpus`` (device ids, each worker is given one as ``CUDA_VISIBLE_DEVICES``) and
    ``memory_limit_mb`` (each worker's address space, RLIMIT_AS; 0: no cap; past it
    allocations fail inside the plugin, and a worker whose plugin raised ``MemoryError`` is
    replaced) and ``results_dir`` apply to worker processes only: on Ray, GPUs are Ray's to
    assign, an address-space cap would count Ray's shared object store, and large results
    go to the cluster's results directory (``ClusterOptions.results_dir``).
    """

    warm: bool = True
    threads: int = 0
    gpus: tuple[str, ...] = ()
    memory_limit_mb: int = 0
    debug: bool = False
    log_json: bool = False
    #: Largest prediction a worker sends back, in bytes (0: any size); see ``--max-result-size``.
    max_result_size: int = 0
    #: Where workers write large binary results (None: the system's temporary directory).
    results_dir: str | None = None
    #: A model version's directory (URL) whose state each worker loads after warming (the
    #: plugin's ``load``): the workers then serve that version.
    load_from: str | None = None


class WorkerPool(abc.ABC):
    """Warmed workers of one model; each runs one call at a time (and may hold ``depth``:
    the others are sent to run next).

    The attributes are what ``/metrics``, ``/readyz`` and autoscaling read: ``size``
    workers are kept (:meth:`resize` changes it), ``starting`` of them are being started,
    ``waiting`` calls wait for a worker, ``restarts`` workers were replaced after dying or
    being killed, ``unavailable`` says why the model cannot take calls (None: it can),
    :attr:`live_workers` counts workers able to take one, :attr:`busy_workers` those
    running a call.
    """

    description: ModelDescription
    size: int = 1
    #: Predictions one worker holds at once (the one it runs, the others sent to run next).
    depth: int = 1
    starting: int = 0
    waiting: int = 0
    restarts: int = 0
    unavailable: str | None = None

    @property
    @abc.abstractmethod
    def live_workers(self) -> int:
        """Workers started, warmed and not (known to be) dead."""

    @property
    def busy_workers(self) -> int:
        """Live workers running a call."""
        return 0

    def placements(self) -> list[Placement]:
        """Where each live worker runs."""
        return [Placement()] * self.live_workers

    async def resize(self, size: int) -> None:
        """Keep ``size`` workers from now on: start the missing ones (returns once they are
        warmed) or stop idle ones (busy ones stop when their call ends).

        Raises ``PluginLoadError`` when a new worker fails to start, ``ValueError`` for a
        size below 1.
        """
        raise NotImplementedError(f"{type(self).__name__} keeps a fixed number of workers")

    @abc.abstractmethod
    async def start(self) -> ModelDescription:
        """Start every worker, warm it, and return the plugin's description.

        Raises ``PluginLoadError`` when the plugin cannot be imported or warmed.
        """

    @abc.abstractmethod
    async def run(
        self,
        hook: str,
        kwargs: dict[str, Any],
        job_id: str | None = None,
        on_progress: ProgressCallback | None = None,
        save_to: str | None = None,
    ) -> Any:
        """Run ``hook(**kwargs)`` on a free worker, waiting for one; returns its result
        (for ``predict_batch``: one protocol outcome per request).

        ``job_id`` names the call so that :meth:`kill` can stop it; ``on_progress``
        receives what the plugin reports through :mod:`deepaas_like.progress`; with
        ``save_to`` (a version directory's URL) the same worker then calls the plugin's
        ``save`` to make that version (see :func:`deepaas_like.registry.storage.publish`). Raises
        ``PluginError``, ``InvalidArguments`` (the plugin raised a marshmallow
        ValidationError), ``PredictionNotJSON``, ``ResultTooLarge``, ``WorkerDied`` or
        ``ModelUnavailable``. A binary result may come back as a temporary
        :class:`~deepaas_like.results.FileResult`: the caller deletes it (``discard()``)
        once it is used.
        """

    @abc.abstractmethod
    async def kill(self, job_id: str) -> bool:
        """Stop the call ``job_id`` by killing its worker (replaced by a fresh one).

        Returns False when no such call is running.
        """

    @abc.abstractmethod
    async def stop(self) -> None:
        """Stop every worker."""
