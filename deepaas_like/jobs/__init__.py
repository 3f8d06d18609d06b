"""Jobs: asynchronous predictions and trainings as rows that survive restarts; the queue,
the execution of one job, housekeeping, and the hooks a training's start and end are told."""

__all__: list[str] = []
