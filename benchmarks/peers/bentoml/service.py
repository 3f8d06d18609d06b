"""BentoML 1.4 services for ``benchmarks/peers.py``: ``Trivial`` and ``Classifier``.

Started as ``bentoml serve service:Trivial --host 127.0.0.1 --port PORT`` from this directory.
Configuration, per BentoML's own guides (cited in the results file):

- ``Trivial``: ``workers="cpu_count"`` (one worker process per core, each serving HTTP and the
  API; docs.bentoml.com, guides/workers), an ``async`` API (nothing in it blocks);
- ``Classifier``: one worker (one model process with the same torch threads as every server;
  one per core with 1 thread each for peers.py's per-core workload, ``PEERS_CLASSIFIER_WORKERS``),
  adaptive batching ``batchable=True, max_batch_size=32`` (guides/adaptive-batching) with
  ``traffic={"concurrency": 32}``, the batch size, as guides/concurrency advises for batching;
- both: the per-request access log off (``logging={"access": {"enabled": False}}``,
  build-with-bentoml/observability/logging), as deepaas_like and LitServe (log level warning) run.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import bentoml

sys.path.append(str(Path(__file__).resolve().parent.parent))  # workloads.py; appended, so bentoml stays bentoml

import workloads  # noqa: E402 (needs the path above)

MAX_BATCH_SIZE = 32
NO_ACCESS_LOG = {"access": {"enabled": False}}


@bentoml.service(workers="cpu_count", logging=NO_ACCESS_LOG)
class Trivial:
    @bentoml.api
    async def predict(self, n: int) -> dict[str, Any]:
        return workloads.trivial(n)


@bentoml.service(workers=workloads.classifier_workers(), traffic={"concurrency": MAX_BATCH_SIZE}, logging=NO_ACCESS_LOG)
class Classifier:
    def __init__(self) -> None:
        workloads.load_classifier()

    @bentoml.api(batchable=True, max_batch_size=MAX_BATCH_SIZE)
    def predict(self, text: list[str]) -> list[dict[str, Any]]:
        return workloads.classify(text)
