"""MLflow runs of trainings, as a training hook (``jobs.hooks.TrainingHook``): each
training is a run of :class:`~deepaas_like.tracking.Tracker`, its reported metrics logged
as they come, ended as the training ends.
"""

from __future__ import annotations

from typing import Any

from deepaas_like.jobs.hooks import Training, numbers_of
from deepaas_like.jobs.states import CANCELLED, DONE
from deepaas_like.tracking import FAILED, FINISHED, KILLED, Run, Tracker

__all__ = ["TrackingHook"]


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
