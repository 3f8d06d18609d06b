"""Persistent worker processes: warm once, answer calls, survive plugin crashes, be killed."""

import asyncio
import os
import signal
import time
from pathlib import Path

import pytest

from deepaas_like.exceptions import InvalidArguments, PluginError, PluginLoadError, WorkerDied
from deepaas_like.workers.base import WorkerOptions
from deepaas_like.workers.process import ProcessWorkerPool


async def test_workers_warm_once_and_answer(plugin_path):
    pool = ProcessWorkerPool("class_style", "deepaas.v2.model", size=2)
    description = await pool.start()
    try:
        assert description.metadata["warmed"] is True
        results = await asyncio.gather(*(pool.run("predict", {"x": i}) for i in range(8)))
        assert [r["double"] for r in results] == [2 * i for i in range(8)]
        pids = {r["pid"] for r in results}
        assert len(pids) == 2 and os.getpid() not in pids
    finally:
        await pool.stop()


async def test_plugin_errors_come_back_typed(plugin_path):
    pool = ProcessWorkerPool("failing", "deepaas.v2.model")
    await pool.start()
    try:
        with pytest.raises(PluginError, match="RuntimeError: the model broke") as caught:
            await pool.run("predict", {"how": "raise"})
        assert "Traceback" in caught.value.traceback
        with pytest.raises(InvalidArguments) as invalid:
            await pool.run("predict", {"how": "invalid"})
        assert invalid.value.messages == {"how": ["this input makes no sense"]}
        with pytest.raises(WorkerDied, match="exited with code 3"):
            await pool.run("predict", {"how": "exit"})
        assert await pool.run("predict", {"how": "ok"}) == {"value": 1}, "a fresh worker replaced the dead one"
    finally:
        await pool.stop()


async def test_kill_stops_the_call_and_the_worker_is_replaced(plugin_path):
    pool = ProcessWorkerPool("deepaas_style", "deepaas.v2.model")
    await pool.start()
    try:
        call = asyncio.create_task(pool.run("train", {"sleep": 30}, job_id="job"))
        await asyncio.sleep(0.5)
        assert await pool.kill("job") is True
        with pytest.raises(WorkerDied, match="SIGKILL"):
            await asyncio.wait_for(call, 10)
        assert await pool.kill("job") is False
        assert await asyncio.wait_for(pool.run("train", {"sleep": 0}), 60) == {"slept": 0}
    finally:
        await pool.stop()


async def test_gpus_are_assigned_round_robin(plugin_path):
    pool = ProcessWorkerPool("class_style", "deepaas.v2.model", size=2, options=WorkerOptions(gpus=("3", "5")))
    await pool.start()
    try:
        results = await asyncio.gather(*(pool.run("predict", {"x": i}) for i in range(4)))
        assert {(r["pid"], r["gpu"]) for r in results} == {
            (results[0]["pid"], results[0]["gpu"]),
            (results[1]["pid"], results[1]["gpu"]),
        }
        assert sorted({r["gpu"] for r in results}) == ["3", "5"]
    finally:
        await pool.stop()


async def test_a_plugin_that_cannot_load_fails_start(plugin_path):
    with pytest.raises(PluginLoadError, match="ModuleNotFoundError"):
        await ProcessWorkerPool("broken", "deepaas.v2.model").start()


async def test_worker_threads_are_set_in_the_worker(plugin_path):
    pool = ProcessWorkerPool("class_style", "deepaas.v2.model", options=WorkerOptions(threads=1))
    await pool.start()
    try:
        assert (await pool.run("predict", {"x": 1}))["threads"] == "1"
    finally:
        await pool.stop()


def _wait_until_dead(pid: int) -> None:
    """Block (the event loop too, so that it cannot notice) until ``pid`` is a zombie."""
    deadline = time.monotonic() + 10
    while Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z":
        assert time.monotonic() < deadline, f"process {pid} did not die"
        time.sleep(0.01)


async def test_a_call_that_reaches_a_dead_worker_goes_to_a_fresh_one(plugin_path):
    pool = ProcessWorkerPool("unruly", "deepaas.v2.model")
    await pool.start()
    call = {"how": "ok", "seconds": 0.0, "size": 0, "tag": ""}
    try:
        first = (await pool.run("predict", call))["pid"]
        os.kill(first, signal.SIGKILL)
        _wait_until_dead(first)
        # The pool still counts the worker as idle: sending the call fails, and plugin code
        # never saw it, so it is sent again to the worker that replaces the dead one.
        answer = await asyncio.wait_for(pool.run("predict", call), 60)
        assert answer["pid"] != first and pool.restarts == 1
    finally:
        await pool.stop()


async def test_resize_starts_and_stops_workers(plugin_path):
    pool = ProcessWorkerPool("class_style", "deepaas.v2.model", size=1)
    await pool.start()
    try:
        await pool.resize(3)
        assert (pool.size, pool.live_workers) == (3, 3)
        results = await asyncio.gather(*(pool.run("predict", {"x": i}) for i in range(12)))
        assert len({r["pid"] for r in results}) >= 2
        await pool.resize(1)
        assert pool.size == 1
        for _ in range(100):  # surplus workers leave in the background
            if pool.live_workers == 1:
                break
            await asyncio.sleep(0.05)
        assert pool.live_workers == 1
        assert (await pool.run("predict", {"x": 2}))["double"] == 4
        with pytest.raises(ValueError):
            await pool.resize(0)
    finally:
        await pool.stop()


async def test_a_replacement_worker_takes_the_gpu_its_predecessor_freed(plugin_path):
    pool = ProcessWorkerPool("class_style", "deepaas.v2.model", size=2, options=WorkerOptions(gpus=("3", "5", "7")))
    await pool.start()
    try:
        assert sorted(p.device for p in pool.placements()) == ["gpu:3", "gpu:5"]
        victim = await pool.run("predict", {"x": 1})
        os.kill(victim["pid"], signal.SIGKILL)
        for _ in range(400):
            if pool.restarts == 1 and pool.live_workers == 2:
                break
            await asyncio.sleep(0.05)
        # Not the next in turn (7): the one fewest workers have, the dead worker's own.
        assert sorted(p.device for p in pool.placements()) == ["gpu:3", "gpu:5"]
    finally:
        await pool.stop()


async def test_a_call_times_out_when_the_workers_pipe_is_descriptor_1024_or_more(plugin_path):
    """A server holding many connections gives its workers' pipes high descriptor numbers."""
    from deepaas_like.exceptions import PredictTimeout

    filler = [os.open(os.devnull, os.O_RDONLY) for _ in range(1100)]
    pool = ProcessWorkerPool("crashy", "deepaas.v2.model", size=1, timeout=1.0)
    try:
        await pool.start()
        assert next(iter(pool.workers)).connection.fileno() > 1023
        with pytest.raises(PredictTimeout):
            # Liveness bound: without the timeout firing, the call never ends.
            await asyncio.wait_for(pool.run("predict", {"how": "loop", "seconds": 0, "tag": ""}), 120)
        assert (await pool.run("predict", {"how": "ok", "seconds": 0, "tag": "after"}))["tag"] == "after"
    finally:
        await pool.stop()
        for fd in filler:
            os.close(fd)
