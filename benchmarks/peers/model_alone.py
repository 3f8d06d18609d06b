"""The limit for the MiniLM workload: the model alone, in one process, classifying batches in a loop.

Run by ``benchmarks/peers.py`` with the project's interpreter (text_classifier plugin installed)::

    python benchmarks/peers/model_alone.py --sentence "..." --batch 32 --seconds 8 --rounds 3

Trains the text_classifier head first when ``$DEEPAAS_LIKE_TEXT_CLASSIFIER_DATA_DIR`` holds none
(the plugin's own ``train()``: shipped data set, seed 0), so that every server then loads the same
head. Prints one JSON object: the reference answer for one sentence (what every server must
return), the head's training summary (when it trained one) and sentences/s per round. Torch
threads come from ``$PEERS_TORCH_THREADS``, as in every server.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import workloads  # noqa: E402 (needs the path above)


def train_head_if_missing() -> dict[str, object] | None:
    """Train the head with the plugin's defaults when none is saved; its summary, else None."""
    from deepaas_like_text_classifier import api, classifier

    if classifier.checkpoint_path().exists():
        return None
    result = api.train()
    return {
        "labels": result["labels"],
        "val_accuracy": result["val_accuracy"],
        "train_size": result["train_size"],
        "epochs": len(result["epochs"]),
        "data": result["data"],
    }


def sentences_per_second(sentence: str, batch: int, seconds: float) -> float:
    """Classify batches of ``batch`` copies of ``sentence`` for ``seconds`` s; sentences per second."""
    texts = [sentence] * batch
    done = 0
    began = time.perf_counter()
    while (elapsed := time.perf_counter() - began) < seconds:
        workloads.classify(texts)
        done += batch
    return done / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sentence", required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=8.0, help="measured seconds per round")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of batches thrown away first")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    trained = train_head_if_missing()
    workloads.load_classifier()
    import torch

    reference = workloads.classify([args.sentence])[0]
    sentences_per_second(args.sentence, args.batch, args.warmup)
    rounds = [sentences_per_second(args.sentence, args.batch, args.seconds) for _ in range(args.rounds)]
    print(
        json.dumps(
            {
                "reference": reference,
                "trained": trained,
                "torch_threads": torch.get_num_threads(),
                "batch": args.batch,
                "sentences_per_s": rounds,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
