"""Dynamic batching in the serving layer: grouping of concurrent requests, per-request
errors, the wait limit."""

import asyncio
import time

import pytest

from deepaas_like.exceptions import PluginError
from deepaas_like.serving.served import ServedModel
from deepaas_like.workers.process import ProcessWorkerPool


async def model(max_batch_size=8, wait=0.05, workers=1):
    def pool():
        return ProcessWorkerPool("batching", "deepaas.v2.model", size=workers)

    wrapper = ServedModel("batching", pool(), pool, max_batch_size=max_batch_size, batch_wait=wait)
    await wrapper.start()
    return wrapper


async def test_concurrent_requests_are_grouped(plugin_path):
    wrapper = await model(max_batch_size=8)
    try:
        results = await asyncio.gather(*(wrapper.predict({"x": i, "fail": False}) for i in range(20)))
        assert [r.document["predictions"]["y"] for r in results] == [i * i for i in range(20)]
        assert max(wrapper.batcher.sizes) == 8 and sum(wrapper.batcher.sizes) == 20
        assert all(size <= 8 for size in wrapper.batcher.sizes)
        assert {r.document["predictions"]["batch"] for r in results} <= set(wrapper.batcher.sizes)
    finally:
        await wrapper.stop()


async def test_an_error_in_one_item_fails_that_request_alone(plugin_path):
    wrapper = await model()
    try:
        # predict_batch raises: the batch is retried request by request
        calls = [wrapper.predict({"x": i, "fail": i == 3}) for i in range(6)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[3], PluginError) and "item 3 is bad" in results[3].message
        assert [r.document["predictions"]["y"] for i, r in enumerate(results) if i != 3] == [0, 1, 4, 16, 25]
        # predict_batch returns an exception in one request's place
        calls = [wrapper.predict({"x": x, "fail": False}) for x in (2, -1, 3)]
        results = await asyncio.gather(*calls, return_exceptions=True)
        assert isinstance(results[1], PluginError) and "negative" in results[1].message
        assert [results[0].document["predictions"]["y"], results[2].document["predictions"]["y"]] == [4, 9]
    finally:
        await wrapper.stop()


async def test_a_lone_request_waits_at_most_the_batch_wait(plugin_path):
    wrapper = await model(wait=0.2)
    try:
        await wrapper.predict({"x": 1, "fail": False})  # first call starts the batcher
        started = time.monotonic()
        assert (await wrapper.predict({"x": 2, "fail": False})).document["predictions"]["batch"] == 1
        elapsed = time.monotonic() - started
        assert 0.2 <= elapsed < 5, "dispatched after the wait, not held for a full batch"
    finally:
        await wrapper.stop()


async def test_batching_off_calls_predict(plugin_path):
    wrapper = await model(max_batch_size=1)
    try:
        assert wrapper.batcher is None
        results = await asyncio.gather(*(wrapper.predict({"x": i, "fail": False}) for i in range(4)))
        assert {r.document["predictions"]["batch"] for r in results} == {1}
    finally:
        await wrapper.stop()


async def test_batches_spread_over_workers(plugin_path):
    wrapper = await model(max_batch_size=4, workers=2)
    try:
        results = await asyncio.gather(*(wrapper.predict({"x": i, "fail": False}) for i in range(16)))
        assert len({r.document["predictions"]["pid"] for r in results}) == 2
    finally:
        await wrapper.stop()


async def test_a_burst_splits_over_idle_workers(plugin_path):
    """16 requests at once with 2 workers: two batches of 8, one per worker, not one of 16
    on one worker while the other idles (the wait is long enough to gather all 16)."""
    wrapper = await model(max_batch_size=32, wait=0.5, workers=2)
    try:
        await wrapper.predict({"x": 0, "fail": False})  # the batcher runs; in flight at dispatch: 1
        wrapper.batcher.sizes.clear()
        # The first batch's share counts the requests submitted when it forms: all 16.
        results = await asyncio.gather(*(wrapper.predict({"x": i, "fail": False, "seconds": 0.2}) for i in range(16)))
        assert sorted(wrapper.batcher.sizes) == [8, 8]
        assert {r.document["predictions"]["batch"] for r in results} == {8}
        assert len({r.document["predictions"]["pid"] for r in results}) == 2
    finally:
        await wrapper.stop()


async def test_one_worker_still_batches_the_whole_burst(plugin_path):
    wrapper = await model(max_batch_size=32, wait=0.5, workers=1)
    try:
        results = await asyncio.gather(*(wrapper.predict({"x": i, "fail": False}) for i in range(16)))
        assert list(wrapper.batcher.sizes) == [16]
        assert {r.document["predictions"]["batch"] for r in results} == {16}
    finally:
        await wrapper.stop()


async def test_a_lone_request_is_not_held_while_another_worker_idles(plugin_path):
    wrapper = await model(wait=30.0, workers=2)
    try:
        # Its share of 1 request in flight over 2 workers is itself: it leaves at once.
        result = await asyncio.wait_for(wrapper.predict({"x": 3, "fail": False}), 20)
        assert result.document["predictions"] == {"y": 9, "batch": 1, "pid": result.document["predictions"]["pid"]}
    finally:
        await wrapper.stop()


def test_batch_size_below_two_is_refused():
    from deepaas_like.serving.batching import Batcher

    with pytest.raises(ValueError):
        Batcher(None, 1, 0.0)
