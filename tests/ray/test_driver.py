"""The server's pipe to its Ray driver process: large messages both ways under both event
loops (the real driver's pipe code, without a cluster).
"""

from __future__ import annotations

import asyncio
import tempfile
import threading
from typing import Any

import pytest
import uvloop

from deepaas_like.workers import protocol, ray_driver
from deepaas_like.workers.protocol import BatchResult, Result
from deepaas_like.workers.ray import ClusterOptions, RayCluster

#: A MiniLM answer is about 9 kB per request, up to 32 per batch (issue 26, item 22).
BATCH, SCORES = 32, 1100


class _BatchAnswers(ray_driver._Driver):
    """The real driver's pipe without Ray: a call is answered from a thread of its own, as
    Ray's callback thread answers it, with a batch of large results.
    """

    def _call_at_once(self, req: int, replica: str, hook: str, kwargs: dict[str, Any], request_id: str) -> None:
        seed = len(kwargs["text"]) + req
        batch = BatchResult([Result({"n": seed + i, "scores": [seed + i + 0.5] * SCORES}) for i in range(BATCH)])
        threading.Thread(target=self._send, args=(("outcome", req, protocol.encode(batch)),)).start()


def _fake_driver(connection: Any, *_: Any) -> None:
    """In place of ``ray_driver.main`` in the driver process (it finds this by name)."""
    driver = _BatchAnswers(connection, tempfile.gettempdir())
    driver._send(("hello", "no cluster: the pipe alone"))
    asyncio.run(driver.serve())


class _Pool:
    """What the cluster tells a pool: only that the connection was lost, which it must not be."""

    def __init__(self) -> None:
        self.lost: list[str] = []

    def cluster_lost(self, message: str) -> None:
        self.lost.append(message)

    def cluster_back(self) -> None:
        pass


async def _large_calls(count: int, argument_size: int) -> None:
    cluster = RayCluster(ClusterOptions(connect_timeout=120))
    pool = _Pool()
    await cluster.attach(pool)  # type: ignore[arg-type]
    try:
        texts = [f"{n:04d}" * (argument_size // 4) for n in range(count)]
        calls = [cluster.request("call", "replica", "predict_batch", {"text": t}, "-", False, None) for t in texts]
        replies = await asyncio.gather(*calls)
    finally:
        await cluster.detach(pool)  # type: ignore[arg-type]
    assert pool.lost == [], "the connection was declared lost"
    for req, (text, reply) in enumerate(zip(texts, replies, strict=True)):
        assert reply[:2] == ("outcome", req)
        seed = len(text) + req
        expected = [{"n": seed + i, "scores": [seed + i + 0.5] * SCORES} for i in range(BATCH)]
        assert [o.value for o in protocol.decode(reply[2]).outcomes] == expected  # type: ignore[union-attr]


@pytest.mark.parametrize("argument_size", [4, 640 * 1024], ids=["small-calls", "large-calls"])
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_large_batched_answers_arrive_whole_under_either_loop(loop, argument_size, monkeypatch):
    # uvloop's add_reader makes the pipe non-blocking: an answer that has not fully arrived
    # (about 300 kB here) is read in parts, and must not be taken for a lost connection; a
    # large call is written in parts as the driver reads it.
    monkeypatch.setattr(ray_driver, "main", _fake_driver)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if loop == "uvloop" else None) as runner:
        runner.run(_large_calls(count=20, argument_size=argument_size))
