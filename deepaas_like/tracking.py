"""MLflow tracking of trainings (``--mlflow-tracking-uri``, or ``$MLFLOW_TRACKING_URI``): each
training job is an MLflow run in the experiment named after its model.

The run's parameters are the training's arguments; its metrics what the plugin reports
(:func:`deepaas_like.progress.report`, one point per step) and the numbers of what ``train``
returned; its tags name the model, the job, the server instance and the version the training
made; the version's directory is logged as the run's artifacts (under ``version/``).

Tracking never fails a training: the MLflow calls of a run go one after the other in a
thread of their own, and the first that fails is logged and kept as the run's ``problem``
(the job shows it in its message); the rest of that run's calls are skipped.
mlflow (``pip install deepaas_like[mlflow]``: mlflow-skinny) is imported when the first
run starts.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

from deepaas_like.jobs.hooks import Training, numbers_of
from deepaas_like.jobs.states import CANCELLED, DONE
from deepaas_like.registry import storage

__all__ = ["FAILED", "FINISHED", "KILLED", "MAX_PARAM_LENGTH", "Run", "Tracker", "TrackingHook"]

LOG = logging.getLogger(__name__)
#: What the MLflow client retries by default (7 times, with growing pauses: minutes) would
#: hold a training's end that long when the tracking server is away; a user's settings win.
_CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
#: MLflow's limit on a parameter's value (characters); longer arguments are cut.
MAX_PARAM_LENGTH = 6000
#: Statuses a run ends with.
FINISHED, FAILED, KILLED = "FINISHED", "FAILED", "KILLED"


class Tracker:
    """Starts an MLflow run per training against the tracking server ``uri``, tagged with
    this server's ``instance`` name.
    """

    def __init__(self, uri: str, instance: str) -> None:
        self.uri = uri
        self.instance = instance
        for variable, value in _CLIENT_DEFAULTS.items():
            os.environ.setdefault(variable, value)

    async def start(self, model: str, job: str, arguments: Mapping[str, Any]) -> Run:
        """A new run of ``model``'s experiment for training ``job`` with ``arguments`` as its
        parameters. Never raises: a run that cannot start has no ``run_id`` and a ``problem``.
        """
        run = Run(self)
        await run.call(lambda: self._create(run, model, job, arguments))
        return run

    def _create(self, run: Run, model: str, job: str, arguments: Mapping[str, Any]) -> None:
        from mlflow.entities import Param
        from mlflow.tracking import MlflowClient

        client = MlflowClient(self.uri)
        run.client = client
        experiment = client.get_experiment_by_name(model)
        if experiment is None:
            try:
                experiment_id = client.create_experiment(model, artifact_location=self._artifact_location())
            except Exception:  # noqa: BLE001 - another instance may have made it just now
                experiment = client.get_experiment_by_name(model)
                if experiment is None:
                    raise
                experiment_id = experiment.experiment_id
        else:
            experiment_id = experiment.experiment_id
        tags = {"deepaas_like.model": model, "deepaas_like.job": job, "deepaas_like.instance": self.instance}
        created = client.create_run(experiment_id, tags=tags, run_name=f"{model}-{job[:8]}")
        run.run_id = created.info.run_id
        params = [Param(str(name), str(value)[:MAX_PARAM_LENGTH]) for name, value in arguments.items()]
        if params:
            client.log_batch(run.run_id, params=params)

    def _artifact_location(self) -> str | None:
        """For a tracking store in a SQLite file, artifacts go beside it (``mlartifacts``), as
        ``mlflow server`` keeps them; elsewhere the tracking server decides.
        """
        if not self.uri.startswith("sqlite:///"):
            return None
        database = self.uri[len("sqlite:///") :]
        return "file://" + os.path.join(os.path.dirname(os.path.abspath(database)), "mlartifacts")


class Run:
    """One training's MLflow run. Calls are queued to the run's own thread, in order."""

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker
        self.run_id: str | None = None
        #: The first failure of a tracking call, for the job's message; None while all worked.
        self.problem: str | None = None
        self.client: Any = None
        self._thread = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="mlflow")
        self._last_step = 0

    def _guarded(self, call: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            if self.problem is not None:
                return
            try:
                call()
            except Exception as error:  # noqa: BLE001 - tracking never fails a training
                self.problem = f"MLflow tracking failed ({self.tracker.uri}): {type(error).__name__}: {error}"[:1000]
                LOG.warning("%s", self.problem)

        return run

    async def call(self, call: Callable[[], None]) -> None:
        """Run ``call`` in the run's thread after those queued before it, and wait for it."""
        await asyncio.wrap_future(self._thread.submit(self._guarded(call)))

    def metrics(self, metrics: Mapping[str, float], step: int) -> None:
        """Log ``metrics`` at ``step`` (queued; returns at once)."""
        if self.run_id is None:
            return
        self._last_step = max(self._last_step, step)
        timestamp = int(time.time() * 1000)

        def log() -> None:
            from mlflow.entities import Metric

            points = [Metric(name, value, timestamp, step) for name, value in metrics.items()]
            self.client.log_batch(self.run_id, metrics=points)

        self._thread.submit(self._guarded(log))

    async def finish(
        self,
        status: str,
        version: str | None = None,
        final: Mapping[str, float] | None = None,
        artifacts: str | None = None,
    ) -> None:
        """End the run with ``status`` (:data:`FINISHED`, :data:`FAILED`, :data:`KILLED`):
        tag the ``version`` made, log the ``final`` numbers (at the last step) and the
        directory ``artifacts`` (a version's path or URL) under ``version/``.
        """
        if self.run_id is None:
            self._thread.shutdown(wait=False)
            return
        run_id, client, step = self.run_id, self.client, self._last_step

        def end() -> None:
            from mlflow.entities import Metric

            if version is not None:
                client.set_tag(run_id, "deepaas_like.version", version)
            if final:
                timestamp = int(time.time() * 1000)
                client.log_batch(run_id, metrics=[Metric(k, v, timestamp, step) for k, v in final.items()])
            if artifacts is not None:
                _log_directory(client, run_id, artifacts)

        await self.call(end)
        # The run ends as the training did, even when a call above failed.
        problem, self.problem = self.problem, None
        await self.call(lambda: client.set_terminated(run_id, status))
        self.problem = problem or self.problem
        self._thread.shutdown(wait=False)


def _log_directory(client: Any, run_id: str, url: str) -> None:
    """Log the directory ``url`` (local, or fetched first from a remote model store)."""
    if "://" not in url or url.startswith("file://"):
        client.log_artifacts(run_id, url.removeprefix("file://"), artifact_path="version")
        return
    with tempfile.TemporaryDirectory(prefix="deepaas-like-artifacts-") as local:
        client.log_artifacts(run_id, storage.local_copy(url, into=local), artifact_path="version")


class TrackingHook:
    """Makes each training an MLflow run of ``tracker``. Tracking never fails a training:
    a tracking problem goes in the message of a training that worked.
    """

    def __init__(self, tracker: Tracker) -> None:
        self.tracker = tracker

    async def started(self, training: Training) -> None:
        """Start the training's run; its id is recorded on the job."""
        run = await self.tracker.start(training.model, training.job.uuid, training.job.args)
        training.notes["run"] = run
        training.run_id = run.run_id
        training.metric_listeners.append(run.metrics)

    async def ended(self, training: Training, outcome: dict[str, Any]) -> None:
        """End the run as the training ended (killed when it was stopped), with the version
        it made and the numbers ``train`` returned.
        """
        run: Run = training.notes["run"]
        if outcome["status"] == CANCELLED:
            await run.finish(KILLED)
            return
        done = outcome["status"] == DONE
        await run.finish(
            FINISHED if done else FAILED,
            version=training.version,
            final=numbers_of(outcome.get("output")) if done else None,
            artifacts=training.artifacts,
        )
        if run.problem is not None and done:
            outcome["message"] = run.problem

    async def discarded(self, training: Training) -> None:
        """Nothing to undo: the run says how the training itself ended."""
