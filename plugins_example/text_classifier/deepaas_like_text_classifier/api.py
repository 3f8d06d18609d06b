"""DEEPaaS V2 hooks of the text classifier plugin (entry point ``text_classifier``).

``train`` fits a linear head on MiniLM sentence embeddings of a labelled CSV and saves it as a
checkpoint in the data directory; ``predict`` labels texts with the latest checkpoint (before any
training it returns the embeddings). ``predict_batch`` answers several predict requests with one
forward pass of the encoder.

``save`` and ``load`` make each training a model version under deepaas_like: ``save`` writes
the head just trained into the version's directory, ``load`` pins a worker to that head (it
no longer follows the data directory's latest checkpoint).
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import marshmallow
import torch
from marshmallow import fields, validate

from deepaas_like_text_classifier import classifier, encoder

try:
    from deepaas_like.progress import report
except ImportError:  # served by plain DEEPaaS

    def report(progress=None, message=None, metrics=None, step=None):  # type: ignore[no-untyped-def]
        pass


__version__ = "0.1.0"

JSON = "application/json"

_LOCK = threading.RLock()
_ENCODER: encoder.Encoder | None = None
# The head loaded from disk and the (path, inode, mtime, size) of the file it came from: training
# runs in another worker process, so predict compares this with the file on disk on every call.
_HEAD: classifier.Head | None = None
_HEAD_STAMP: tuple[str, int, int, int] | None = None
# The head of the model version this worker serves (set by ``load``); None: the latest checkpoint.
_PINNED: classifier.Head | None = None


def get_metadata() -> dict[str, Any]:
    """Describe the plugin; ``device`` is where the encoder runs ("cuda" or "cpu").

    Static on purpose (servers may read it once per worker): whether a classifier is trained
    shows in predict's answer instead.
    """
    return {
        "name": "text_classifier",
        "description": (
            "Text classification with a linear head trained on all-MiniLM-L6-v2 sentence "
            "embeddings; train it on your own labelled CSV (text,label)."
        ),
        "version": __version__,
        "author": "deepaas_like",
        "device": encoder.select_device(),
        "data_dir": str(classifier.data_dir()),
    }


def warm() -> None:
    """Load the encoder once per worker, and the latest checkpoint if there is one."""
    _get_encoder()
    _current_head()


def _get_encoder() -> encoder.Encoder:
    global _ENCODER
    with _LOCK:
        if _ENCODER is None:
            _ENCODER = encoder.Encoder(encoder.model_dir(), encoder.select_device())
        return _ENCODER


def _stamp(path: Path) -> tuple[str, int, int, int] | None:
    try:
        stat = path.stat()
    except FileNotFoundError:
        return None
    return (str(path), stat.st_ino, stat.st_mtime_ns, stat.st_size)


def _current_head() -> classifier.Head | None:
    """The head from the latest checkpoint on disk, reloaded when the file changed; None if absent."""
    global _HEAD, _HEAD_STAMP
    if _PINNED is not None:
        return _PINNED
    path = classifier.checkpoint_path()
    with _LOCK:
        stamp = _stamp(path)
        if stamp != _HEAD_STAMP:
            _HEAD = None if stamp is None else classifier.load_checkpoint(path, _get_encoder().dim)
            _HEAD_STAMP = stamp
        return _HEAD


# ---------------------------------------------------------------------------------------- predict


def get_predict_args() -> dict[str, fields.Field]:
    """Arguments of predict: ``text`` (one or more texts) and ``accept``."""
    return {
        "text": fields.Str(
            required=True,
            validate=validate.Length(min=1),
            metadata={
                "location": "form",
                "description": (
                    "Text to classify. Several texts: one per line, or a JSON list of strings "
                    '(e.g. ["first text", "second text"]).'
                ),
            },
        ),
        "accept": fields.Str(
            load_default=JSON,
            validate=validate.OneOf([JSON]),
            metadata={"location": "form", "description": "Media type of the answer (JSON only)."},
        ),
    }


def _json_list(text: str) -> list[Any] | None:
    """The list ``text`` encodes as JSON, or None when it is not a JSON list."""
    if not text.lstrip().startswith("["):
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError:
        return None  # a text that merely starts with "[" is still a text
    return value if isinstance(value, list) else None


def parse_texts(text: object) -> list[str]:
    """Split the ``text`` argument into texts: a JSON list of strings, else one text per line.

    Blank lines are dropped and each text is stripped. Raises marshmallow.ValidationError on field
    ``text`` when nothing is left, or when a JSON list holds something other than strings.
    """
    if isinstance(text, (list, tuple)):
        items = list(text)
    elif isinstance(text, str):
        listed = _json_list(text)
        items = text.splitlines() if listed is None else listed
    else:
        raise marshmallow.ValidationError(["expected a string"], field_name="text")
    if not all(isinstance(item, str) for item in items):
        raise marshmallow.ValidationError(["a JSON list of texts must contain only strings"], field_name="text")
    texts = [item.strip() for item in items if item.strip()]
    if not texts:
        raise marshmallow.ValidationError(["no text to classify"], field_name="text")
    return texts


def _answer(requests: Sequence[list[str]]) -> list[dict[str, Any]]:
    """Encode the texts of all requests in one forward pass and answer each request."""
    model = _get_encoder()
    flat = [text for texts in requests for text in texts]
    embeddings = model.encode(flat)
    head = _current_head()
    results: list[dict[str, Any]] = []
    start = 0
    for texts in requests:
        rows = embeddings[start : start + len(texts)]
        start += len(texts)
        if head is None:
            results.append(
                {
                    "texts": texts,
                    "embeddings": rows.tolist(),
                    "message": (
                        "no trained classifier yet: train one first (POST to the train endpoint, "
                        f"optionally with a CSV text,label); returning {model.dim}-dim sentence "
                        "embeddings only"
                    ),
                }
            )
            continue
        probabilities = head.probabilities(rows)
        predictions = []
        for text, row in zip(texts, probabilities.tolist(), strict=True):
            best = max(range(len(row)), key=row.__getitem__)
            predictions.append(
                {
                    "text": text,
                    "label": head.labels[best],
                    "probabilities": dict(zip(head.labels, row, strict=True)),
                }
            )
        results.append({"texts": texts, "predictions": predictions})
    return results


def predict(**kwargs: Any) -> dict[str, Any]:
    """Classify ``text`` (see :func:`parse_texts`) with the latest trained head.

    Returns ``{"texts", "predictions": [{"text", "label", "probabilities": {label: p}}]}``, or
    before any training ``{"texts", "embeddings": [[384 floats]], "message"}``.
    Raises marshmallow.ValidationError on ``text`` for empty input.
    """
    return _answer([parse_texts(kwargs.get("text"))])[0]


def predict_batch(batch: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Answer several predict requests (each a kwargs dict) with one encoder forward pass.

    Returns one result per request, in order, shaped as :func:`predict` returns it. Raises
    marshmallow.ValidationError on ``text`` if any request's text is invalid (nothing is run).
    """
    return _answer([parse_texts(kwargs.get("text")) for kwargs in batch])


# ------------------------------------------------------------------------------------------ train


def get_train_args() -> dict[str, fields.Field]:
    """Arguments of train: the labelled CSV (optional) and the optimisation settings."""
    return {
        # No load_default: an absent file stays absent (train's own default, None, applies).
        "data": fields.Raw(
            required=False,
            metadata={
                "type": "file",
                "location": "form",
                "description": (
                    "UTF-8 CSV with a header 'text,label' and one labelled text per row, at least "
                    "2 labels. Without it the shipped data set (340 sentences, 5 topics) is used."
                ),
            },
        ),
        "epochs": fields.Int(
            load_default=30,
            validate=validate.Range(min=1, max=10000),
            metadata={"description": "Passes over the training set."},
        ),
        "learning_rate": fields.Float(
            load_default=0.01,
            validate=validate.Range(min=0, min_inclusive=False, max=10),
            metadata={"description": "Adam learning rate of the linear head."},
        ),
        "seed": fields.Int(
            load_default=0,
            metadata={"description": "Seed of the train/validation split and of the shuffling."},
        ),
        "validation_split": fields.Float(
            load_default=0.2,
            validate=validate.Range(min=0, max=1, max_inclusive=False),
            metadata={"description": "Fraction of each label held out to measure accuracy."},
        ),
    }


def _data_path(data: object) -> tuple[Path, str]:
    """(path on disk, name to report) of the ``data`` argument; the shipped CSV when None."""
    if data is None:
        path = classifier.shipped_data_path()
        return path, f"shipped:{path.name}"
    filename = getattr(data, "filename", None)  # an UploadedFile from the server
    if filename is not None:
        return Path(filename), str(getattr(data, "original_filename", "") or Path(filename).name)
    if isinstance(data, (str, os.PathLike)):
        return Path(data), Path(data).name
    raise marshmallow.ValidationError(["expected an uploaded CSV file"], field_name="data")


def _report_epoch(epoch: classifier.EpochReport, epochs: int) -> None:
    """Progress, and the epoch's loss and held-out accuracy as metrics (MLflow: one point per epoch)."""
    metrics = {"loss": epoch.loss}
    if epoch.val_accuracy is not None:
        metrics["val_accuracy"] = epoch.val_accuracy
    report(progress=epoch.epoch / epochs, message=f"epoch {epoch.epoch} of {epochs}", metrics=metrics, step=epoch.epoch)


def train(
    data: object = None,
    epochs: int = 30,
    learning_rate: float = 0.01,
    seed: int = 0,
    validation_split: float = 0.2,
    **kwargs: Any,
) -> dict[str, Any]:
    """Fit the linear head on embeddings of ``data`` (CSV ``text,label``) and save the checkpoint.

    Returns ``{"labels", "epochs": [{"epoch", "loss", "val_accuracy"}], "val_accuracy",
    "train_size", "val_size", "checkpoint", "data"}``; accuracies in [0, 1], None when
    ``validation_split`` is 0. Raises marshmallow.ValidationError on ``data`` for a bad CSV.
    """
    global _HEAD, _HEAD_STAMP
    if not 0 <= validation_split < 1:
        raise marshmallow.ValidationError(["must be in [0, 1)"], field_name="validation_split")
    if epochs < 1:
        raise marshmallow.ValidationError(["must be at least 1"], field_name="epochs")
    path, source = _data_path(data)
    texts, names = classifier.read_labeled_csv(path)
    labels = sorted(set(names))
    targets = torch.tensor([labels.index(name) for name in names], dtype=torch.long)

    model = _get_encoder()
    embeddings = model.encode(texts, batch_size=64)  # once; the epochs reuse them
    train_rows, val_rows = classifier.stratified_split(targets.tolist(), validation_split, seed)
    linear, history = classifier.fit_head(
        embeddings,
        targets,
        len(labels),
        val_rows,
        epochs=epochs,
        learning_rate=learning_rate,
        seed=seed,
        on_epoch=lambda e: _report_epoch(e, epochs),
    )
    final = history[-1].val_accuracy
    checkpoint = classifier.checkpoint_path()
    classifier.save_checkpoint(
        checkpoint,
        linear,
        labels,
        model.info(),
        extra={"val_accuracy": final, "train_size": len(train_rows), "data": source},
    )
    with _LOCK:
        _HEAD = classifier.Head(linear=linear, labels=labels, encoder=model.info())
        _HEAD_STAMP = _stamp(checkpoint)
    return {
        "labels": labels,
        "epochs": [{"epoch": e.epoch, "loss": e.loss, "val_accuracy": e.val_accuracy} for e in history],
        "val_accuracy": final,
        "train_size": len(train_rows),
        "val_size": len(val_rows),
        "checkpoint": str(checkpoint),
        "data": source,
    }


# ------------------------------------------------------------------------------- save and load


def save(path: str) -> None:
    """Write the head this worker trained last into the version directory ``path``
    (``classifier.pt``, the checkpoint format). Raises RuntimeError when it trained none.
    """
    with _LOCK:
        head = _HEAD
    if head is None:
        raise RuntimeError("no classifier was trained in this worker: nothing to save")
    classifier.save_checkpoint(Path(path) / classifier.CHECKPOINT_NAME, head.linear, head.labels, head.encoder)


def load(path: str) -> None:
    """Serve the head saved in the version directory ``path`` from now on (the worker no
    longer follows the data directory). Raises FileNotFoundError when it holds no
    checkpoint, RuntimeError when the head does not fit the encoder.
    """
    global _PINNED
    head = classifier.load_checkpoint(Path(path) / classifier.CHECKPOINT_NAME, _get_encoder().dim)
    with _LOCK:
        _PINNED = head
