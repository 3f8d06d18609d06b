"""A worker holds up to ``depth`` predictions: the one it runs and those sent to run next.

What must hold: the calls queued behind one whose worker dies never reach plugin code twice
(they go to another worker), a timeout counts from the moment a call runs, progress goes to
the call that reports it, a training takes an idle worker alone, predictions go to the
worker holding the fewest calls, of those the one taken last, and a call larger than the
pipe's buffer, sent to a worker that is not reading, never stops the server's event loop.
"""

import asyncio
import contextlib
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvloop

from deepaas_like.exceptions import PredictTimeout, WorkerDied
from deepaas_like.workers.base import ServerNote
from deepaas_like.workers.process import ProcessWorkerPool


def nap(pool: ProcessWorkerPool, seconds: float) -> asyncio.Task:
    """Start a prediction of the ``slow`` plugin that sleeps ``seconds`` in the worker."""
    return asyncio.create_task(pool.run("predict", {"seconds": seconds, "accept": "application/json"}))


async def settle(pool: ProcessWorkerPool, calls: list[int], waiting: int = 0) -> None:
    """Wait (at most 5 s) until the pool's live workers hold ``calls`` and ``waiting`` wait."""
    for _ in range(500):
        if sorted(w.calls for w in pool.workers if w.alive) == calls and pool.waiting == waiting:
            return
        await asyncio.sleep(0.01)
    held = sorted(w.calls for w in pool.workers if w.alive)
    raise AssertionError(f"workers hold {held} with {pool.waiting} waiting, expected {calls} with {waiting}")


async def test_a_second_prediction_is_sent_to_the_busy_worker_and_runs_next(plugin_path):
    pool = ProcessWorkerPool("slow", "deepaas.v2.model", size=1, depth=2)
    await pool.start()
    try:
        first = nap(pool, 0.4)
        second = nap(pool, 0.0)
        third = nap(pool, 0.0)
        await settle(pool, [2], waiting=1)  # two held by the worker, the third waits in the pool
        answers = await asyncio.gather(first, second, third)
        assert [a["slept"] for a in answers] == [0.4, 0.0, 0.0]
        assert [w.calls for w in pool.workers] == [0] and pool.waiting == 0
    finally:
        await pool.stop()


async def test_an_idle_worker_is_the_one_taken_last(plugin_path):
    pool = ProcessWorkerPool("slow", "deepaas.v2.model", size=2, depth=2)
    await pool.start()
    try:
        for _ in range(3):  # one at a time: both workers are idle each time
            await nap(pool, 0.0)
        assert sorted(w.taken for w in pool.workers) == [0, 3], "the same worker took all three"
        both = [nap(pool, 0.3), nap(pool, 0.3)]
        await settle(pool, [1, 1])  # the second goes to the idle worker, not behind the first
        await asyncio.gather(*both)
        assert sorted(w.taken for w in pool.workers) == [4, 5]
    finally:
        await pool.stop()


async def test_predictions_go_to_the_worker_holding_the_fewest_calls(plugin_path):
    pool = ProcessWorkerPool("slow", "deepaas.v2.model", size=2, depth=2)
    await pool.start()
    try:
        calls = [nap(pool, 0.5)]
        await settle(pool, [0, 1])
        calls.append(nap(pool, 0.5))
        await settle(pool, [1, 1])  # the idle worker, not behind the running call
        calls += [nap(pool, 0.5) for _ in range(3)]
        await settle(pool, [2, 2], waiting=1)
        assert [a["slept"] for a in await asyncio.gather(*calls)] == [0.5] * 5
    finally:
        await pool.stop()


async def test_calls_behind_a_crash_reach_plugin_code_once_on_another_worker(plugin_path, tmp_path, monkeypatch):
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("CRASHY_CALLS", str(log))
    pool = ProcessWorkerPool("crashy", "deepaas.v2.model", size=1, depth=3)
    await pool.start()
    try:
        (pid,) = {w.process.pid for w in pool.workers}
        crash = asyncio.create_task(pool.run("predict", {"how": "exit", "seconds": 0.0, "tag": "crash"}))
        behind = [
            asyncio.create_task(pool.run("predict", {"how": "ok", "seconds": 0.0, "tag": tag})) for tag in ("b", "c")
        ]
        with pytest.raises(WorkerDied, match="exited with code 7"):
            await crash
        assert [a["tag"] for a in await asyncio.gather(*behind)] == ["b", "c"]
        assert log.read_text().split() == ["crash", "b", "c"]  # each reached a worker once
        assert {w.process.pid for w in pool.workers} != {pid} and pool.restarts == 1
    finally:
        await pool.stop()


async def test_a_timeout_counts_from_the_moment_a_call_runs(plugin_path, tmp_path, monkeypatch):
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("CRASHY_CALLS", str(log))
    pool = ProcessWorkerPool("crashy", "deepaas.v2.model", size=1, depth=3, timeout=3.0)
    await pool.start()
    try:
        # 2 s each, queued together: the second ends 4 s after it was sent, within its own
        # 3 s (a second to spare on a busy machine); then one that never ends is killed, and
        # the call behind it runs on a new worker.
        calls = [
            asyncio.create_task(pool.run("predict", {"how": how, "seconds": 2.0, "tag": tag}))
            for how, tag in (("sleep", "a"), ("sleep", "b"), ("loop", "c"))
        ]
        await settle(pool, [3])
        after = asyncio.create_task(pool.run("predict", {"how": "ok", "seconds": 0.0, "tag": "d"}))
        answers = await asyncio.gather(*calls, after, return_exceptions=True)
        assert [a["tag"] for a in (answers[0], answers[1], answers[3])] == ["a", "b", "d"]
        assert isinstance(answers[2], PredictTimeout)
        assert log.read_text().split() == ["a", "b", "c", "d"]
    finally:
        await pool.stop()


async def test_progress_goes_to_the_call_that_reports_it(plugin_path):
    pool = ProcessWorkerPool("slow", "deepaas.v2.model", size=1, depth=2)
    await pool.start()
    try:
        reports: dict[str, list[str | None]] = {"a": [], "b": []}

        def collect(name: str):
            def report(fraction, message, metrics, step):
                if not isinstance(message, ServerNote):  # the server's own notes: see tests/jobs
                    reports[name].append(message)

            return report

        kwargs = {"seconds": 0.2, "accept": "application/json"}
        await asyncio.gather(
            pool.run("predict", kwargs, on_progress=collect("a")),
            pool.run("predict", kwargs, on_progress=collect("b")),
        )
        assert reports["a"] == reports["b"] == [f"step {n} of 4" for n in range(1, 5)]
    finally:
        await pool.stop()


async def test_a_training_takes_an_idle_worker_alone(plugin_path):
    pool = ProcessWorkerPool("slow", "deepaas.v2.model", size=1, depth=2)
    await pool.start()
    try:
        predict = nap(pool, 0.3)
        await settle(pool, [1])
        train = asyncio.create_task(pool.run("train", {"seconds": 0.3, "steps": 2}, job_id="job"))
        await settle(pool, [1], waiting=1)  # not queued behind the prediction
        later = nap(pool, 0.0)
        await settle(pool, [1], waiting=2)  # nor does a prediction overtake the training
        await predict
        await settle(pool, [2], waiting=1)  # the training holds the whole worker
        assert await train == {"steps": 2}
        assert (await later)["slept"] == 0.0
    finally:
        await pool.stop()


#: A call's size in bytes: far more than a socket's buffer (Linux: a few hundred kB at most
#: by default), so that the worker must read it before it is all written.
LARGE = 4 * 1024 * 1024


@contextlib.contextmanager
def stopped(pid: int, resume_after: float = 30.0) -> Iterator[threading.Event]:
    """Process ``pid`` stopped (SIGSTOP) inside the block, so that it reads nothing. A
    watchdog thread resumes it after ``resume_after`` seconds (a liveness bound: a loop that
    waits for the worker would otherwise wait for ever) and sets the event it yields.
    """
    fired = threading.Event()

    def resume() -> None:
        fired.set()
        with contextlib.suppress(ProcessLookupError):  # it died and was reaped meanwhile
            os.kill(pid, signal.SIGCONT)

    watchdog = threading.Timer(resume_after, resume)
    os.kill(pid, signal.SIGSTOP)
    watchdog.start()
    try:
        yield fired
    finally:
        watchdog.cancel()
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)


async def ticks(count: int = 20) -> None:
    """Let the event loop run other work ``count`` times (a ticker, as a health check would)."""
    for _ in range(count):
        await asyncio.sleep(0.01)


def run_on(loop: str, main) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if loop == "uvloop" else None) as runner:
        runner.run(main())


async def _a_large_call_behind_a_slow_one(log: Path) -> None:
    pool = ProcessWorkerPool("crashy", "deepaas.v2.model", size=1, depth=2)
    await pool.start()
    try:
        (worker,) = pool.workers
        first = asyncio.create_task(pool.run("predict", {"how": "sleep", "seconds": 1.0, "tag": "first"}))
        while not log.exists():  # the slow prediction runs in plugin code
            await asyncio.sleep(0.01)
        large = os.urandom(LARGE // 2).hex()
        with stopped(worker.process.pid) as watchdog:
            second = asyncio.create_task(pool.run("predict", {"how": "ok", "seconds": 0.0, "tag": large}))
            await ticks()
            assert not watchdog.is_set(), "the event loop stopped until the busy worker read the call"
            assert worker.calls == 2 and not second.done()
            assert worker._writer.pending > 0, "the call fit in the pipe: nothing was tested"
        assert await first == {"ok": True, "tag": "first"}
        assert await second == {"ok": True, "tag": large}
        assert pool.restarts == 0
    finally:
        await pool.stop()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_large_call_sent_to_a_busy_worker_leaves_the_event_loop_running(loop, plugin_path, tmp_path, monkeypatch):
    # The call waits in the worker's writer until the worker reads it: under uvloop a
    # blocking send stopped the loop until the running call ended, or failed half-written.
    log = tmp_path / "calls.txt"
    monkeypatch.setenv("CRASHY_CALLS", str(log))
    run_on(loop, lambda: _a_large_call_behind_a_slow_one(log))


async def _a_large_call_behind_a_crash() -> None:
    pool = ProcessWorkerPool("crashy", "deepaas.v2.model", size=1, depth=2)
    await pool.start()
    try:
        (worker,) = pool.workers
        large = os.urandom(LARGE // 2).hex()
        with stopped(worker.process.pid) as watchdog:
            crash = asyncio.create_task(pool.run("predict", {"how": "exit", "seconds": 0.0, "tag": "crash"}))
            await settle(pool, [1])
            second = asyncio.create_task(pool.run("predict", {"how": "ok", "seconds": 0.0, "tag": large}))
            await ticks()
            assert not watchdog.is_set(), "the event loop stopped until the worker read the call"
            assert worker._writer.pending > 0, "the call fit in the pipe: nothing was tested"
        with pytest.raises(WorkerDied, match="exited with code 7"):
            await crash
        # Never read by the worker that died: it runs on the one that replaced it.
        assert await second == {"ok": True, "tag": large}
        assert pool.restarts == 1
    finally:
        await pool.stop()


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_large_call_kept_for_a_worker_that_dies_goes_to_another(loop, plugin_path):
    run_on(loop, _a_large_call_behind_a_crash)


async def test_a_call_that_stops_waiting_leaves_the_line(plugin_path):
    pool = ProcessWorkerPool("slow", "deepaas.v2.model", size=1, depth=1)
    await pool.start()
    try:
        running = nap(pool, 0.3)
        await settle(pool, [1])
        gone = nap(pool, 0.0)
        await settle(pool, [1], waiting=1)
        gone.cancel()
        await settle(pool, [1])
        await running
        assert (await asyncio.wait_for(nap(pool, 0.0), 5))["slept"] == 0.0
    finally:
        await pool.stop()


def test_a_worker_holds_at_least_one_call():
    with pytest.raises(ValueError, match="at least one call"):
        ProcessWorkerPool("slow", "deepaas.v2.model", depth=0)
