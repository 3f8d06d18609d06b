"""DEEPaaS V2 hooks of the ``wordcount`` model, as module-level functions.

``predict`` counts the words of a text (sent as a string or uploaded as a file);
``train`` stands for a real training: it runs ``epochs`` steps and reports each one.
"""

from __future__ import annotations

import time
from typing import Any

from marshmallow import ValidationError, fields, validate

try:
    from deepaas_like.progress import report
except ImportError:  # served by plain DEEPaaS: progress is not reported

    def report(progress=None, message=None, metrics=None, step=None):
        pass


def get_metadata() -> dict[str, Any]:
    return {
        "description": "Counts the words of a text.",
        "author": "Jane Doe",
        "license": "MIT",
        "version": "0.1.0",
    }


def get_predict_args() -> dict[str, fields.Field]:
    return {
        "text": fields.Str(load_default=None, metadata={"description": "The text to count."}),
        "document": fields.Field(
            load_default=None,
            metadata={"type": "file", "location": "form", "description": "A UTF-8 text file to count."},
        ),
        "top": fields.Int(
            load_default=3,
            validate=validate.Range(min=1, max=100),
            metadata={"description": "How many of the most frequent words to list."},
        ),
    }


def predict(text: str | None = None, document: Any = None, top: int = 3) -> dict[str, Any]:
    if document is not None:  # an UploadedFile: .filename is a path on the server's disk
        with open(document.filename, encoding="utf-8") as upload:
            text = upload.read()
    if not text:
        raise ValidationError(["give a text or a document"], field_name="text")
    words = text.lower().split()
    counts: dict[str, int] = {}
    for word in words:
        counts[word] = counts.get(word, 0) + 1
    frequent = sorted(counts.items(), key=lambda item: (-item[1], item[0]))[:top]
    return {"words": len(words), "distinct": len(counts), "top": [list(item) for item in frequent]}


def get_train_args() -> dict[str, fields.Field]:
    return {
        "epochs": fields.Int(
            load_default=3,
            validate=validate.Range(min=1, max=100),
            metadata={"description": "Training steps to run."},
        ),
        "epoch_seconds": fields.Float(
            load_default=0.0,
            validate=validate.Range(min=0, max=60),
            metadata={"description": "Seconds each step takes."},
        ),
    }


def train(epochs: int = 3, epoch_seconds: float = 0.0) -> dict[str, Any]:
    losses = []
    for epoch in range(1, epochs + 1):
        time.sleep(epoch_seconds)  # the real work of one epoch goes here
        loss = round(1.0 / epoch, 4)
        losses.append(loss)
        report(progress=epoch / epochs, message=f"epoch {epoch} of {epochs}", metrics={"loss": loss}, step=epoch)
    return {"epochs": epochs, "loss": losses[-1]}
