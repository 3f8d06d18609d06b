"""Ray Serve 2.60 apps for ``benchmarks/peers.py``: ``python app.py trivial|classifier --port PORT --temp-dir DIR``.

Starts a one-node Ray cluster in this process (run it inside a loopback-only network namespace:
Ray binds every interface), deploys the app on 127.0.0.1:PORT under ``/predict`` and waits
until it is killed. ``workloads`` must be importable by the replicas (``PYTHONPATH``).

Configuration, per Ray Serve's own guides (docs.ray.io, cited in the results file):

- ``RAY_SERVE_THROUGHPUT_OPTIMIZED=1`` and ``RAY_SERVE_ENABLE_HA_PROXY=1`` (set by peers.py):
  Ray's high-throughput mode (kuberay/user-guides/serve-high-throughput, "Ray 2.56 or later";
  serve/advanced-guides/performance, "Enable throughput-optimized flags"): HAProxy, bundled with
  ``ray[serve]``, in front of replicas that take HTTP directly, user code and router on the
  replica's event loop, buffered request logs;
- trivial: one replica per core (``num_cpus=1`` each; serve/autoscaling-guide, manual scaling),
  an ``async`` handler with ``max_ongoing_requests=100`` (performance guide, "Using async methods");
- classifier: one replica reserving all cores (``ray_actor_options={"num_cpus": N}``, which also
  sets its OMP_NUM_THREADS; performance guide), or for peers.py's per-core workload one replica
  per core with ``num_cpus=1`` (``PEERS_CLASSIFIER_WORKERS``), ``@serve.batch(max_batch_size=32,
  batch_wait_timeout_s=0.005)`` (advanced-guides/dyn-req-batch) and ``max_ongoing_requests=64``,
  above the batch size so that a batch can fill. The batch method calls the model directly, as
  the batching guide's example does. The performance guide asks throughput mode's request path
  not to block, but a forward pass moved to ``asyncio.to_thread`` starved the event loop here:
  batches of 1 to 4 requests and about a third of the throughput; called directly, the requests
  that arrive during a forward pass wait in the socket and the next batch is full (32).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import Any

import ray
import workloads
from ray import serve
from starlette.requests import Request

MAX_BATCH_SIZE = 32
BATCH_WAIT_S = 0.005
CORES = len(os.sched_getaffinity(0))
REPLICAS = workloads.classifier_workers()  # classifier replicas: 1, or one per core


@serve.deployment(num_replicas=CORES, ray_actor_options={"num_cpus": 1}, max_ongoing_requests=100)
class Trivial:
    async def __call__(self, request: Request) -> dict[str, int]:
        body = await request.json()
        return workloads.trivial(int(body["n"]))


@serve.deployment(
    num_replicas=REPLICAS, ray_actor_options={"num_cpus": CORES // REPLICAS}, max_ongoing_requests=2 * MAX_BATCH_SIZE
)
class Classifier:
    def __init__(self) -> None:
        workloads.load_classifier()

    @serve.batch(max_batch_size=MAX_BATCH_SIZE, batch_wait_timeout_s=BATCH_WAIT_S)
    async def classify(self, texts: list[str]) -> list[dict[str, Any]]:
        return workloads.classify(texts)

    async def __call__(self, request: Request) -> dict[str, Any]:
        body = await request.json()
        return await self.classify(str(body["text"]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["trivial", "classifier"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--temp-dir", required=True, help="Ray's session directory (short path: it holds sockets)")
    args = parser.parse_args()
    ray.init(num_cpus=CORES, include_dashboard=False, _temp_dir=args.temp_dir, log_to_driver=False)
    serve.start(http_options={"host": args.host, "port": args.port})
    deployment = Trivial if args.workload == "trivial" else Classifier
    serve.run(deployment.bind(), name=args.workload, route_prefix="/predict", blocking=False)
    print(f"serving {args.workload} on http://{args.host}:{args.port}/predict", flush=True)
    stop = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stop)  # only now: Ray's own processes must not inherit the mask
    signal.sigwait(stop)
    sys.exit(0)  # ray.shutdown() runs at exit


if __name__ == "__main__":
    main()
