"""DEEPaaS V2 hooks for text-to-image generation with a local diffusers pipeline.

Entry point ``deepaas.v2.model: image_generation = deepaas_like_image_generation.api``.
The weights directory comes from ``DEEPAAS_LIKE_IMAGE_GENERATION_MODEL_DIR`` (Stable Diffusion
1.x/2.x, SDXL: whatever ``AutoPipelineForText2Image`` loads); nothing is downloaded.
``predict`` answers a PNG (first image), a ZIP (all images + ``parameters.json``) or JSON
(base64 PNGs + parameters), chosen by the ``accept`` argument; ``predict_batch`` draws the
prompts of concurrent requests in one pipeline call.
"""

from __future__ import annotations

import base64
import importlib.metadata
import io
import json
import secrets
import threading
import zipfile
from collections.abc import Sequence
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate

from deepaas_like_image_generation import pipeline as sd

PNG = "image/png"
ZIP = "application/zip"
JSON = "application/json"
MEDIA_TYPES = (PNG, ZIP, JSON)

#: Largest seed accepted: ``torch.Generator.manual_seed`` takes 64-bit values; JSON clients
#: (JavaScript) only keep integers exact up to 2**53, so seeds stay below that.
MAX_SEED = 2**53 - 1

# The loaded pipeline with the directory it came from; one per worker process.
_loaded: tuple[str, Any] | None = None
_lock = threading.Lock()


def _multiple_of_8(value: int) -> None:
    # The VAE halves the image 3 times (SD 1.x/2.x, SDXL): sizes must divide into whole latents.
    if value % 8:
        raise ValidationError(f"Must be a multiple of 8 (got {value}); e.g. {value - value % 8 or 8}.")


def _size_field(description: str) -> fields.Int:
    return fields.Int(
        load_default=512,
        validate=[validate.Range(min=64, max=2048), _multiple_of_8],
        metadata={"description": description},
    )


def get_metadata() -> dict[str, Any]:
    """Describe the plugin: name, version, license, the device it runs on, weights directory."""
    try:
        version = importlib.metadata.version("deepaas-like-image-generation")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    device = sd.select_device()
    return {
        "name": "image_generation",
        "description": "Text-to-image generation with a local diffusers pipeline (Stable Diffusion 1.x/2.x, SDXL).",
        "version": version,
        "license": "Apache-2.0",
        "author": "deepaas_like",
        "device": device,
        "dtype": str(sd.select_dtype(device)).removeprefix("torch."),
        "model_dir_env": sd.MODEL_DIR_ENV,
        "media_types": list(MEDIA_TYPES),
        # The loaded pipeline's class (e.g. "StableDiffusionXLPipeline"); None before warm().
        "pipeline": type(_loaded[1]).__name__ if _loaded is not None and hasattr(_loaded[1], "components") else None,
        "schedulers": [sd.DEFAULT_SCHEDULER, *sd.SCHEDULERS],
    }


def _pipeline() -> Any:
    """Return the cached pipeline, loading it on first use or when the directory changed."""
    global _loaded
    model_dir = str(sd.model_dir_from_env())
    with _lock:
        if _loaded is None or _loaded[0] != model_dir:
            _loaded = None  # free the old weights before loading new ones
            device = sd.select_device()
            _loaded = (model_dir, sd.load_pipeline(model_dir, device, sd.select_dtype(device)))
        return _loaded[1]


def warm() -> None:
    """Load the pipeline once (device and dtype from :func:`select_device`/:func:`select_dtype`).

    Raises ``ModelDirError`` if ``DEEPAAS_LIKE_IMAGE_GENERATION_MODEL_DIR`` is unset, missing
    or not a diffusers pipeline directory; ``ModelDoesNotFitError`` naming the GPU and its
    memory when the weights do not fit on it.
    """
    _pipeline()


def get_predict_args() -> dict[str, fields.Field]:
    """Arguments of :func:`predict`, as marshmallow fields (sizes in pixels)."""
    return {
        "prompt": fields.Str(
            required=True,
            validate=validate.Length(min=1),
            metadata={"description": "What the image should show."},
        ),
        "negative_prompt": fields.Str(
            load_default=None,
            allow_none=True,
            metadata={"description": "What the image should not show (optional)."},
        ),
        "num_inference_steps": fields.Int(
            load_default=25,
            validate=validate.Range(min=1, max=150),
            metadata={"description": "Denoising steps: more is slower and usually finer (1-150)."},
        ),
        "guidance_scale": fields.Float(
            load_default=7.5,
            validate=validate.Range(min=0.0, max=50.0),
            metadata={"description": "How strongly the image follows the prompt; 1 or less turns guidance off."},
        ),
        "seed": fields.Int(
            load_default=None,
            allow_none=True,
            validate=validate.Range(min=0, max=MAX_SEED),
            metadata={
                "description": "Random seed; the same seed and arguments give the same image. "
                "A random one is drawn and reported when omitted."
            },
        ),
        "width": _size_field("Image width in pixels, a multiple of 8 (64-2048)."),
        "height": _size_field("Image height in pixels, a multiple of 8 (64-2048)."),
        "num_images": fields.Int(
            load_default=1,
            validate=validate.Range(min=1, max=8),
            metadata={"description": "How many images to draw (1-8)."},
        ),
        # No load_default: an absent scheduler stays absent (predict's default applies) and
        # is not reported in the parameters, which stay as they were before it existed.
        "scheduler": fields.Str(
            allow_none=True,
            validate=validate.OneOf([sd.DEFAULT_SCHEDULER, *sd.SCHEDULERS]),
            metadata={
                "description": "Sampler: default (the one saved with the pipeline), "
                + ", ".join(sd.SCHEDULERS)
                + ". Those the pipeline's model cannot use (e.g. DDIM for a flow-matching model) answer 422."
            },
        ),
        "accept": fields.Str(
            load_default=PNG,
            validate=validate.OneOf(MEDIA_TYPES),
            metadata={
                "location": "form",
                "description": "image/png: the first image; application/zip: every image as "
                "image_0.png, ... plus parameters.json; application/json: base64 PNGs and parameters.",
            },
        ),
    }


class PredictionSchema(Schema):
    """The JSON answer of :func:`predict` (``accept=application/json``)."""

    images = fields.List(fields.Str(), required=True, metadata={"description": "Base64-encoded PNG images."})
    parameters = fields.Dict(required=True, metadata={"description": "The arguments used, including the seed."})


schema = PredictionSchema


def predict(
    prompt: str,
    negative_prompt: str | None = None,
    num_inference_steps: int = 25,
    guidance_scale: float = 7.5,
    seed: int | None = None,
    width: int = 512,
    height: int = 512,
    num_images: int = 1,
    accept: str = PNG,
    scheduler: str | None = None,
) -> bytes | dict[str, Any]:
    """Draw ``num_images`` images for ``prompt`` and return them as ``accept`` asks.

    ``image/png``: PNG bytes of the first image; ``application/zip``: ZIP bytes with
    ``image_0.png``... and ``parameters.json``; ``application/json``: ``{"images": [base64 PNG],
    "parameters": {...}}``. Raises ``marshmallow.ValidationError`` on ``width``/``height`` (not
    a multiple of 8) or ``scheduler`` (not usable with this pipeline). Loads the pipeline if
    :func:`warm` was not called (``ModelDirError``).
    """
    kwargs = {
        "prompt": prompt, "negative_prompt": negative_prompt, "num_inference_steps": num_inference_steps,
        "guidance_scale": guidance_scale, "seed": seed, "width": width, "height": height,
        "num_images": num_images, "accept": accept, "scheduler": scheduler,
    }  # fmt: skip
    return predict_batch([kwargs])[0]


def predict_batch(batch: Sequence[dict[str, Any]]) -> list[bytes | dict[str, Any]]:
    """Answer several predict requests (each a kwargs dict of :func:`predict`) together.

    Requests with the same size, steps, guidance and scheduler are drawn in one pipeline call
    (at most ``$DEEPAAS_LIKE_IMAGE_GENERATION_MAX_BATCH_IMAGES`` images, default 8); each keeps
    its own seed, so its images are those it would get alone. Returns one answer per request,
    in order. Raises ``marshmallow.ValidationError`` naming the field if any request is
    invalid; the server then answers the requests one by one, so only that one fails.
    """
    prepared = [_prepare(dict(kwargs)) for kwargs in batch]
    pipe = _pipeline()
    for request, _, _ in prepared:
        try:
            sd.make_scheduler(pipe.scheduler, request.scheduler)
        except sd.SchedulerError as error:
            raise ValidationError([f"{error}."], field_name="scheduler") from None
    drawn = sd.generate_batch(pipe, [request for request, _, _ in prepared])
    return [
        _answer(images, parameters, accept) for (_, parameters, accept), images in zip(prepared, drawn, strict=True)
    ]


def _prepare(kwargs: dict[str, Any]) -> tuple[sd.ImageRequest, dict[str, Any], str]:
    """Check one request, draw its seed when it has none; its image request, reported parameters, media type."""
    options = {
        "prompt": kwargs.get("prompt"), "negative_prompt": None, "num_inference_steps": 25, "guidance_scale": 7.5,
        "seed": None,
        "width": 512, "height": 512, "num_images": 1, "accept": PNG, "scheduler": None,
        **kwargs,
    }  # fmt: skip
    accept = options.pop("accept")
    if accept not in MEDIA_TYPES:
        raise ValidationError([f"Must be one of: {', '.join(MEDIA_TYPES)}."], field_name="accept")
    for name in ("width", "height"):
        try:
            _multiple_of_8(options[name])
        except ValidationError as error:
            raise ValidationError(error.messages, field_name=name) from None
    if options["seed"] is None:
        options["seed"] = secrets.randbelow(MAX_SEED + 1)
    scheduler = options.pop("scheduler")
    parameters = dict(options)
    if scheduler is not None:  # reported only when asked for: older clients see the old keys
        parameters["scheduler"] = scheduler
    request = sd.ImageRequest(**options, scheduler=scheduler or sd.DEFAULT_SCHEDULER)
    return request, parameters, accept


def _answer(images: list[Any], parameters: dict[str, Any], accept: str) -> bytes | dict[str, Any]:
    pngs = [sd.png_bytes(image) for image in images]
    if accept == PNG:
        return pngs[0]
    if accept == ZIP:
        return _zip(pngs, parameters)
    return {"images": [base64.b64encode(png).decode("ascii") for png in pngs], "parameters": parameters}


def _zip(pngs: list[bytes], parameters: dict[str, Any]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_STORED) as archive:
        # PNG data is already deflated; storing avoids a second, useless compression.
        for index, png in enumerate(pngs):
            archive.writestr(f"image_{index}.png", png)
        archive.writestr("parameters.json", json.dumps(parameters, indent=2) + "\n")
    return buffer.getvalue()
