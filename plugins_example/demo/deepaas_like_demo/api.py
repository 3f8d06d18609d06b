"""DEEPaaS V2 hooks of the demo model, as module-level functions.

``predict`` reads an uploaded image and returns its statistics (JSON), a filtered
thumbnail (PNG), or both in a ZIP. ``train`` fits ``y = a*x + b`` by gradient descent,
one epoch at a time, and returns the loss per epoch.
"""

from __future__ import annotations

import io
import json
import random
import time
import zipfile
from collections.abc import Mapping
from typing import Any

from marshmallow import ValidationError, fields, validate
from PIL import Image, ImageFilter, ImageOps, ImageStat, UnidentifiedImageError

try:
    from deepaas_like.progress import report
except ImportError:  # served by plain DEEPaaS: progress is not reported

    def report(
        progress: float | None = None,
        message: str | None = None,
        metrics: Mapping[str, float] | None = None,
        step: int | None = None,
    ) -> None:
        pass


MEDIA_TYPES = ["application/json", "image/png", "application/zip"]
FILTERS = {
    "none": lambda image: image,
    "blur": lambda image: image.filter(ImageFilter.GaussianBlur(2)),
    "edges": lambda image: image.filter(ImageFilter.FIND_EDGES),
    "grayscale": lambda image: ImageOps.grayscale(image).convert("RGB"),
}

_state: dict[str, Any] = {"warm": False}

#: The JSON prediction, validated by the server.
schema = {
    "width": fields.Int(required=True, metadata={"description": "image width in pixels"}),
    "height": fields.Int(required=True, metadata={"description": "image height in pixels"}),
    "format": fields.Str(allow_none=True, metadata={"description": "file format Pillow detected"}),
    "mode": fields.Str(required=True, metadata={"description": "Pillow mode of the upload, e.g. RGB"}),
    "mean": fields.List(fields.Float(), required=True, metadata={"description": "mean of each RGB channel, 0..255"}),
    "filter": fields.Str(required=True),
    "thumbnail_size": fields.List(fields.Int(), required=True, metadata={"description": "[width, height] in pixels"}),
}


def warm() -> None:
    """Nothing heavy to load; records that the worker was warmed."""
    _state["warm"] = True


def get_metadata() -> dict[str, Any]:
    return {
        "description": "Image statistics and filtered thumbnails, built with Pillow only.",
        "author": "deepaas_like developers",
        "license": "Apache-2.0",
        "version": "0.1.0",
        "warm": _state["warm"],
    }


def get_predict_args() -> dict[str, fields.Field]:
    return {
        "image": fields.Field(
            required=True,
            metadata={"type": "file", "location": "form", "description": "An image file (PNG, JPEG, ...)."},
        ),
        "size": fields.Int(
            load_default=64,
            validate=validate.Range(min=8, max=1024),
            metadata={"description": "Longest side of the thumbnail, in pixels."},
        ),
        "filter": fields.Str(
            load_default="none",
            validate=validate.OneOf(list(FILTERS)),
            metadata={"description": "Filter applied to the thumbnail."},
        ),
        "accept": fields.Str(
            load_default="application/json",
            validate=validate.OneOf(MEDIA_TYPES),
            metadata={"location": "form", "description": "Media type of the answer."},
        ),
    }


def predict(image: Any, size: int = 64, filter: str = "none", accept: str = "application/json") -> Any:  # noqa: A002
    """Statistics (dict), thumbnail (PNG bytes) or both (ZIP bytes) of ``image.filename``.

    Raises ``ValidationError`` on ``image`` when the upload is not an image Pillow reads.
    """
    try:
        with Image.open(image.filename) as opened:
            opened.load()
            source = opened.copy()
            source_format = opened.format
    except (UnidentifiedImageError, OSError) as error:
        raise ValidationError([f"not an image Pillow can read ({type(error).__name__})"], field_name="image") from error
    rgb = source.convert("RGB")
    thumbnail = FILTERS[filter](rgb.copy())
    thumbnail.thumbnail((size, size))
    stats = {
        "width": source.width,
        "height": source.height,
        "format": source_format,
        "mode": source.mode,
        "mean": [round(value, 3) for value in ImageStat.Stat(rgb).mean],
        "filter": filter,
        "thumbnail_size": list(thumbnail.size),
    }
    if accept == "application/json":
        return stats
    png = io.BytesIO()
    thumbnail.save(png, format="PNG")
    if accept == "image/png":
        return png.getvalue()
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("thumbnail.png", png.getvalue())
        bundle.writestr("stats.json", json.dumps(stats, indent=2))
    return archive.getvalue()


def get_train_args() -> dict[str, fields.Field]:
    return {
        "epochs": fields.Int(
            load_default=5, validate=validate.Range(min=1, max=10000), metadata={"description": "Passes over the data."}
        ),
        "learning_rate": fields.Float(
            load_default=0.1,
            validate=validate.Range(min=0, min_inclusive=False),
            metadata={"description": "Gradient step size."},
        ),
        "epoch_seconds": fields.Float(
            load_default=0.0,
            validate=validate.Range(min=0, max=60),
            metadata={"description": "Extra seconds spent per epoch, to watch a long training."},
        ),
        "seed": fields.Int(load_default=0, metadata={"description": "Seed of the synthetic data."}),
    }


def train(epochs: int = 5, learning_rate: float = 0.1, epoch_seconds: float = 0.0, seed: int = 0) -> dict[str, Any]:
    """Fit ``y = a*x + b`` on 200 noisy points of ``y = 2x + 1`` by full-batch gradient
    descent, reporting progress and the epoch's loss (metric ``loss`` at step ``epoch``) after
    each epoch; returns the mean squared error after each epoch and the fitted ``a``, ``b``.
    """
    rng = random.Random(seed)
    points = [(x, 2 * x + 1 + rng.gauss(0, 0.05)) for x in (rng.uniform(-1, 1) for _ in range(200))]
    a = b = 0.0
    history = []
    for epoch in range(1, epochs + 1):
        grad_a = sum(2 * (a * x + b - y) * x for x, y in points) / len(points)
        grad_b = sum(2 * (a * x + b - y) for x, y in points) / len(points)
        a -= learning_rate * grad_a
        b -= learning_rate * grad_b
        loss = sum((a * x + b - y) ** 2 for x, y in points) / len(points)
        history.append({"epoch": epoch, "loss": round(loss, 6)})
        report(progress=epoch / epochs, message=f"epoch {epoch}: loss {loss:.6f}", metrics={"loss": loss}, step=epoch)
        if epoch_seconds:
            time.sleep(epoch_seconds)
    return {"epochs": history, "final_loss": history[-1]["loss"], "a": round(a, 4), "b": round(b, 4)}
