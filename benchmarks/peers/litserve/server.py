"""LitServe 0.2 servers for ``benchmarks/peers.py``: ``python server.py trivial|classifier --port PORT``.

Configuration, per LitServe's own API reference (the ``LitServer`` and ``LitServer.run``
docstrings, lightning.ai/docs/litserve/api-reference/litserver; cited in the results file):

- ``accelerator="cpu"``; ``fast_queue=True`` (ZeroMQ between the API servers and the inference
  workers, "for high-throughput scenarios (>100 RPS)"); ``num_api_servers`` left at its
  recommended default (as many uvicorn processes as inference workers); ``log_level="warning"``
  and ``generate_client_file=False`` as in the docstring's production example;
- trivial: ``workers_per_device`` = the number of cores ("For CPU, set to the number of cores");
- classifier: one inference worker (one model process with the same torch threads as every
  server), or for peers.py's per-core workload one per core with 1 thread each
  (``PEERS_CLASSIFIER_WORKERS``), with batching ``max_batch_size=32, batch_timeout=0.005``
  (features/batching).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import litserve as ls

sys.path.append(str(Path(__file__).resolve().parent.parent))  # workloads.py; appended, so litserve stays litserve

import workloads  # noqa: E402 (needs the path above)

MAX_BATCH_SIZE = 32
BATCH_TIMEOUT_S = 0.005


class TrivialAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        pass

    def decode_request(self, request) -> int:
        return int(request["n"])

    def predict(self, n: int) -> dict[str, int]:
        return workloads.trivial(n)

    def encode_response(self, output: dict[str, int]) -> dict[str, int]:
        return output


class ClassifierAPI(ls.LitAPI):
    def setup(self, device: str) -> None:
        workloads.load_classifier()

    def decode_request(self, request) -> str:
        return str(request["text"])

    def batch(self, inputs: list[str]) -> list[str]:
        return list(inputs)

    def predict(self, texts: list[str]) -> list[dict[str, Any]]:
        return workloads.classify(texts)

    def unbatch(self, output: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return output

    def encode_response(self, output: dict[str, Any]) -> dict[str, Any]:
        return output


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workload", choices=["trivial", "classifier"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args()
    if args.workload == "trivial":
        server = ls.LitServer(
            TrivialAPI(), accelerator="cpu", workers_per_device=len(os.sched_getaffinity(0)), fast_queue=True
        )
    else:
        api = ClassifierAPI(max_batch_size=MAX_BATCH_SIZE, batch_timeout=BATCH_TIMEOUT_S)
        workers = workloads.classifier_workers()
        server = ls.LitServer(api, accelerator="cpu", workers_per_device=workers, fast_queue=True)
    server.run(host=args.host, port=args.port, log_level="warning", generate_client_file=False)


if __name__ == "__main__":
    main()
