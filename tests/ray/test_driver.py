"""The server's pipe to its Ray driver process: large messages both ways under both event
loops (the real driver's pipe code, without a cluster), and a driver that cannot start says
why, naming its exit code, its last lines on standard error, or the module it misses.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import tempfile
import threading
from pathlib import Path
from typing import Any

import pytest
import uvloop

from deepaas_like.workers import ray_driver
from deepaas_like.workers.protocol import BatchResult, Call, Connected, ReplicaCall, Result
from deepaas_like.workers.ray import ClusterOptions, RayCluster
from tests.conftest import free_port

#: A MiniLM answer is about 9 kB per request, up to 32 per batch (issue 26, item 22).
BATCH, SCORES = 32, 1100


# Rewritten when the driver came to speak workers/protocol.py (issue 27, item 7): the fake
# driver answers protocol messages (ReplicaCall -> BatchResult under the request's number)
# where it answered tuples; what is asserted is unchanged.
class _BatchAnswers(ray_driver._Driver):
    """The real driver's pipe without Ray: a call is answered from a thread of its own, as
    Ray's callback thread answers it, with a batch of large results.
    """

    def _call_at_once(self, number: int, request: ReplicaCall) -> None:
        seed = len(request.call.kwargs["text"]) + number
        batch = BatchResult([Result({"n": seed + i, "scores": [seed + i + 0.5] * SCORES}) for i in range(BATCH)])
        threading.Thread(target=self._reply, args=(number, batch)).start()


def _fake_driver(connection: Any, *_: Any) -> None:
    """In place of ``ray_driver.main`` in the driver process (it finds this by name)."""
    driver = _BatchAnswers(connection, tempfile.gettempdir())
    driver._send(Connected("no cluster: the pipe alone"))
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
        calls = [cluster.request(ReplicaCall("replica", Call("predict_batch", {"text": t}))) for t in texts]
        replies = await asyncio.gather(*calls)
    finally:
        await cluster.detach(pool)  # type: ignore[arg-type]
    assert pool.lost == [], "the connection was declared lost"
    for req, (text, reply) in enumerate(zip(texts, replies, strict=True)):
        assert isinstance(reply, BatchResult), reply  # the answer to request ``req``: its seed says so
        seed = len(text) + req
        expected = [{"n": seed + i, "scores": [seed + i + 0.5] * SCORES} for i in range(BATCH)]
        assert [o.value for o in reply.outcomes] == expected  # type: ignore[union-attr]


@pytest.mark.parametrize("argument_size", [4, 640 * 1024], ids=["small-calls", "large-calls"])
@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_large_batched_answers_arrive_whole_under_either_loop(loop, argument_size, monkeypatch):
    # uvloop's add_reader makes the pipe non-blocking: an answer that has not fully arrived
    # (about 300 kB here) is read in parts, and must not be taken for a lost connection; a
    # large call is written in parts as the driver reads it.
    monkeypatch.setattr(ray_driver, "main", _fake_driver)
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if loop == "uvloop" else None) as runner:
        runner.run(_large_calls(count=20, argument_size=argument_size))


def _run_server(shim: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``deepaas-like-run --executor ray`` with the modules of ``shim`` first on its path."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shim), os.environ.get("PYTHONPATH", "")])}
    env.update(RAY_AUTH_MODE="disabled", RAY_USAGE_STATS_ENABLED="0", XDG_STATE_HOME=str(shim))
    command = ["deepaas-like-run", "--listen-port", str(free_port()), "--executor", "ray", *args]
    command += ["--database-url", f"sqlite:///{shim}/jobs.sqlite", "--model-name", "demo"]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def test_a_driver_that_dies_before_it_connects_names_its_exit_code_and_last_words(tmp_path):
    # A Ray that kills the process as it is imported (as a broken native library would).
    (tmp_path / "ray").mkdir()
    (tmp_path / "ray" / "__init__.py").write_text(
        "import os, sys\n"
        "sys.stderr.write('fake ray: this build cannot start here\\n')\n"
        "sys.stderr.flush()\n"
        "os._exit(3)\n"
    )
    run = _run_server(tmp_path, "--ray-connect-timeout", "120")
    assert run.returncode == 1, run.stderr[-3000:]
    line = run.stderr.strip().splitlines()[-1]
    assert line.startswith("deepaas-like-run: cannot reach this server's own Ray instance"), line
    assert "the Ray driver process exited with code 3" in line, line
    assert line.endswith("its last lines on standard error: fake ray: this build cannot start here"), line


def test_a_driver_without_a_module_it_needs_names_it(cluster, ray_env, tmp_path):
    # numpy reached the tests' environment through torch, not through the [ray] extra.
    (tmp_path / "numpy").mkdir()
    (tmp_path / "numpy" / "__init__.py").write_text(
        "raise ModuleNotFoundError(\"No module named 'numpy'\", name='numpy')\n"
    )
    cluster.ensure_running()
    run = _run_server(tmp_path, "--ray-address", cluster.address)
    assert run.returncode == 1, run.stderr[-3000:]
    line = run.stderr.strip().splitlines()[-1]
    assert line == (
        "deepaas-like-run: --executor ray: the Ray driver cannot start: ModuleNotFoundError: No module named "
        "'numpy' (pip install 'deepaas_like[ray]' installs what it needs)"
    ), run.stderr[-3000:]
