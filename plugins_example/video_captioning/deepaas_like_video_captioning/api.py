"""DEEPaaS V2 hooks for captioning the frames of an uploaded video.

Entry point ``deepaas.v2.model: video_captioning = deepaas_like_video_captioning.api``.
decord samples frames (by ``fps``, ``every_n_frames`` or evenly, at most ``max_frames``); a
local ``VisionEncoderDecoderModel`` from ``DEEPAAS_LIKE_VIDEO_CAPTIONING_MODEL_DIR`` captions
them in batches. ``predict`` answers JSON (video facts + one caption per frame) or a ZIP
(``frame_00012.png``... + ``captions.json``), chosen by the ``accept`` argument.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import threading
import zipfile
from typing import Any

from marshmallow import Schema, ValidationError, fields, validate
from PIL import Image

from deepaas_like_video_captioning import captioner as cap
from deepaas_like_video_captioning import video as vid

JSON = "application/json"
ZIP = "application/zip"
MEDIA_TYPES = (JSON, ZIP)

#: Upper bounds that keep one request's memory and time bounded: a batch of decoded frames is
#: held in memory at once, and a 1080p RGB frame is about 6 MB.
MAX_FRAMES = 512
MAX_BATCH_SIZE = 64
MAX_NEW_TOKENS = 128

# The loaded captioner with the directory it came from; one per worker process.
_loaded: tuple[str, cap.Captioner] | None = None
_lock = threading.Lock()


def get_metadata() -> dict[str, Any]:
    """Describe the plugin: name, version, license, the device it runs on, weights variable."""
    try:
        version = importlib.metadata.version("deepaas-like-video-captioning")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    device = cap.select_device()
    return {
        "name": "video_captioning",
        "description": "Captions sampled frames of an uploaded video (decord + a transformers "
        "VisionEncoderDecoderModel such as ViT + GPT-2).",
        "version": version,
        "license": "Apache-2.0",
        "author": "deepaas_like",
        "device": device,
        "dtype": str(cap.select_dtype(device)).removeprefix("torch."),
        "model_dir_env": cap.MODEL_DIR_ENV,
        "media_types": list(MEDIA_TYPES),
    }


def _captioner() -> cap.Captioner:
    """Return the cached captioner, loading it on first use or when the directory changed."""
    global _loaded
    model_dir = str(cap.model_dir_from_env())
    with _lock:
        if _loaded is None or _loaded[0] != model_dir:
            _loaded = None  # free the old weights before loading new ones
            device = cap.select_device()
            _loaded = (model_dir, cap.load_captioner(model_dir, device, cap.select_dtype(device)))
        return _loaded[1]


def warm() -> None:
    """Load the captioning model once (device and dtype from ``select_device``/``select_dtype``).

    Raises ``ModelDirError`` if ``DEEPAAS_LIKE_VIDEO_CAPTIONING_MODEL_DIR`` is unset, missing
    or not a ``VisionEncoderDecoderModel`` directory.
    """
    _captioner()


def get_predict_args() -> dict[str, fields.Field]:
    """Arguments of :func:`predict`, as marshmallow fields (times in seconds)."""
    return {
        "video": fields.Field(
            required=True,
            metadata={
                "type": "file",
                "location": "form",
                "description": "The video to caption (any container/codec FFmpeg decodes: MP4/H.264, WebM, AVI...).",
            },
        ),
        "fps": fields.Float(
            load_default=None,
            allow_none=True,
            validate=validate.Range(min=0, min_inclusive=False),
            metadata={
                "description": "Frames per second to sample (e.g. 1 = one frame each second). "
                "Give this or every_n_frames; with neither, max_frames frames are spread evenly."
            },
        ),
        "every_n_frames": fields.Int(
            load_default=None,
            allow_none=True,
            validate=validate.Range(min=1),
            metadata={"description": "Sample frames 0, n, 2n, ... (instead of fps)."},
        ),
        "max_frames": fields.Int(
            load_default=16,
            validate=validate.Range(min=1, max=MAX_FRAMES),
            metadata={
                "description": f"At most this many frames are captioned (1-{MAX_FRAMES}); when the "
                "sampling gives more, this many are picked evenly across the whole video."
            },
        ),
        "batch_size": fields.Int(
            load_default=8,
            validate=validate.Range(min=1, max=MAX_BATCH_SIZE),
            metadata={"description": f"Frames decoded and captioned together (1-{MAX_BATCH_SIZE})."},
        ),
        "max_new_tokens": fields.Int(
            load_default=20,
            validate=validate.Range(min=1, max=MAX_NEW_TOKENS),
            metadata={"description": f"Longest caption, in tokens (1-{MAX_NEW_TOKENS})."},
        ),
        "accept": fields.Str(
            load_default=JSON,
            validate=validate.OneOf(MEDIA_TYPES),
            metadata={
                "location": "form",
                "description": "application/json: video facts and captions; application/zip: the "
                "sampled frames as frame_00012.png (frame index) plus captions.json (the JSON answer).",
            },
        ),
    }


class VideoCaptioningVideoSchema(Schema):
    frames = fields.Int(required=True, metadata={"description": "Frames in the whole video."})
    fps = fields.Float(required=True, metadata={"description": "Average frames per second."})
    duration = fields.Float(required=True, metadata={"description": "Length in seconds."})


class VideoCaptioningCaptionSchema(Schema):
    timestamp = fields.Float(required=True, metadata={"description": "When the frame shows, in seconds."})
    frame_index = fields.Int(required=True, metadata={"description": "0-based index of the frame."})
    caption = fields.Str(required=True, metadata={"description": "What the model says the frame shows."})


class PredictionSchema(Schema):
    """The JSON answer of :func:`predict` (``accept=application/json``)."""

    video = fields.Nested(VideoCaptioningVideoSchema, required=True)
    captions = fields.List(fields.Nested(VideoCaptioningCaptionSchema), required=True)


schema = PredictionSchema


def predict(
    video: Any,
    fps: float | None = None,
    every_n_frames: int | None = None,
    max_frames: int = 16,
    batch_size: int = 8,
    max_new_tokens: int = 20,
    accept: str = JSON,
) -> dict[str, Any] | bytes:
    """Caption sampled frames of ``video`` (an ``UploadedFile``: ``.filename`` is a path on disk).

    ``application/json``: ``{"video": {"frames", "fps", "duration"}, "captions": [{"timestamp"
    (seconds), "frame_index", "caption"}]}``; ``application/zip``: ZIP bytes with the frames as
    ``frame_00012.png`` and that JSON as ``captions.json``. Raises ``marshmallow.ValidationError``
    on ``video`` for a file that is not a readable video, on ``fps``/``every_n_frames`` when both
    are given; loads the model if :func:`warm` was not called (``ModelDirError``).
    """
    if accept not in MEDIA_TYPES:
        raise ValidationError([f"Must be one of: {', '.join(MEDIA_TYPES)}."], field_name="accept")
    if fps is not None and every_n_frames is not None:
        message = ["Give fps or every_n_frames, not both."]
        raise ValidationError({"fps": message, "every_n_frames": message})
    path = getattr(video, "filename", video)
    name = getattr(video, "original_filename", None) or "the upload"
    try:
        clip = vid.Video(path)
    except vid.VideoError as exc:
        raise ValidationError([f"{name} is not a readable video: {exc}"], field_name="video") from exc
    indices = vid.select_frames(
        clip.frame_starts,
        clip.info.duration,
        fps=fps,
        every_n_frames=every_n_frames,
        max_frames=max_frames,
    )
    model = _captioner()
    captions: list[dict[str, Any]] = []
    buffer = io.BytesIO()
    # PNG frames go into the ZIP batch by batch, so memory holds one batch of raw frames.
    archive = zipfile.ZipFile(buffer, "w") if accept == ZIP else None
    for first in range(0, len(indices), batch_size):
        batch = indices[first : first + batch_size]
        try:
            frames = clip.read(batch)
        except vid.VideoError as exc:
            raise ValidationError([f"{name} is not a readable video: {exc}"], field_name="video") from exc
        for index, frame, text in zip(batch, frames, model.caption(frames, max_new_tokens), strict=True):
            captions.append(
                {"timestamp": round(float(clip.frame_starts[index]), 3), "frame_index": index, "caption": text}
            )
            if archive is not None:
                archive.writestr(frame_name(index), _png_bytes(frame))  # PNG is compressed: stored
    result = {
        "video": {
            "frames": clip.info.frames,
            "fps": round(clip.info.fps, 3),
            "duration": round(clip.info.duration, 3),
        },
        "captions": captions,
    }
    if archive is None:
        return result
    archive.writestr("captions.json", json.dumps(result, indent=2), compress_type=zipfile.ZIP_DEFLATED)
    archive.close()
    return buffer.getvalue()


def frame_name(index: int) -> str:
    """Name of a frame's PNG in the ZIP answer: ``frame_00012.png`` for frame index 12."""
    return f"frame_{index:05d}.png"


def _png_bytes(frame: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()
