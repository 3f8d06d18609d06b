"""Autoscaling by queue length: the decision, and a model's worker processes following it."""

import asyncio
import time

from deepaas_like.serving.autoscaling import Autoscaler, Autoscaling
from deepaas_like.serving.served import ServedModel
from deepaas_like.workers.process import ProcessWorkerPool


class FakePool:
    def __init__(self, size: int) -> None:
        self.size = size
        self.live_workers = size
        self.busy_workers = 0

    async def resize(self, size: int) -> None:
        self.size = self.live_workers = size


def test_one_step_at_a_time_within_the_bounds():
    pool = FakePool(2)
    scaler = Autoscaler(pool, lambda: 0, Autoscaling(minimum=1, maximum=3, up_delay=5, down_delay=60))  # type: ignore[arg-type]
    assert scaler.wanted(waiting_for=4.9, idle_for=0) == 2, "not before the scale-up delay"
    assert scaler.wanted(waiting_for=5, idle_for=0) == 3
    assert scaler.wanted(waiting_for=0, idle_for=59) == 2, "not before the scale-down delay"
    assert scaler.wanted(waiting_for=0, idle_for=60) == 1
    pool.size = 3
    assert scaler.wanted(waiting_for=100, idle_for=0) == 3, "never past the maximum"
    pool.size = 1
    assert scaler.wanted(waiting_for=0, idle_for=1000) == 1, "never under the minimum"


async def test_a_queue_that_lasts_adds_a_worker_and_idling_removes_it():
    pool = FakePool(1)
    queue = [0]
    scaler = Autoscaler(pool, lambda: queue[0], Autoscaling(1, 2, up_delay=0.3, down_delay=0.3))  # type: ignore[arg-type]
    scaler.start()
    try:
        queue[0] = 3
        pool.busy_workers = 1
        started = time.monotonic()
        while pool.size == 1 and time.monotonic() - started < 10:
            await asyncio.sleep(0.02)
        assert pool.size == 2 and time.monotonic() - started >= 0.3
        queue[0], pool.busy_workers = 0, 0
        while pool.size == 2 and time.monotonic() - started < 20:
            await asyncio.sleep(0.02)
        assert pool.size == 1
    finally:
        await scaler.close()


async def test_a_model_gains_a_worker_process_under_load_and_loses_it_when_idle(plugin_path):
    def pool() -> ProcessWorkerPool:
        return ProcessWorkerPool("slow", "deepaas.v2.model", size=1)

    model = ServedModel("slow", pool(), pool, autoscaling=Autoscaling(1, 2, up_delay=0.2, down_delay=0.5))
    await model.start()
    try:
        load = [asyncio.create_task(model.predict({"seconds": 0.4, "accept": "application/json"})) for _ in range(8)]
        for _ in range(600):
            if model.predict_pool.live_workers == 2:
                break
            await asyncio.sleep(0.05)
        assert model.predict_pool.live_workers == 2, "a second worker joined under load"
        await asyncio.gather(*load)
        for _ in range(600):
            if model.predict_pool.live_workers == 1 and model.predict_pool.size == 1:
                break
            await asyncio.sleep(0.05)
        assert (model.predict_pool.size, model.predict_pool.live_workers) == (1, 1), "back to one when idle"
    finally:
        await model.stop()
