"""DEEPaaS V2 hooks for captioning the frames of an uploaded video.

Entry point ``deepaas.v2.model: video_captioning = deepaas_like_video_captioning.api``.
decord samples frames (by ``fps``, ``every_n_frames`` or evenly, at most ``max_frames``); a
local image-to-text model from ``DEEPAAS_LIKE_VIDEO_CAPTIONING_MODEL_DIR`` (ViT + GPT-2, BLIP,
BLIP-2, GIT: whatever ``AutoModelForImageTextToText`` loads) captions them in batches.
``predict`` answers JSON (video facts + one caption per frame) or a ZIP (``frame_00012.png``...
+ ``captions.json``), chosen by the ``accept`` argument; ``predict_batch`` answers concurrent
requests with their frames captioned together.
"""

from __future__ import annotations

import importlib.metadata
import io
import json
import threading
import zipfile
from collections.abc import Sequence
from typing import Any

import numpy as np
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
MAX_BEAMS = 8
MAX_PROMPT_CHARS = 500

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
        "image-to-text model: ViT + GPT-2, BLIP, BLIP-2 or GIT).",
        "version": version,
        "license": "Apache-2.0",
        "author": "deepaas_like",
        "device": device,
        "dtype": str(cap.select_dtype(device)).removeprefix("torch."),
        "model_dir_env": cap.MODEL_DIR_ENV,
        "media_types": list(MEDIA_TYPES),
        # The loaded model's family (config.model_type, e.g. "blip-2"); None before warm().
        "model_type": getattr(_loaded[1], "family", None) if _loaded is not None else None,
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
    or not an image-to-text model directory; ``ModelDoesNotFitError`` naming the GPU and its
    memory when the weights do not fit on it.
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
        # No load_default on the two below: an absent argument stays absent and predict's
        # default (None) applies.
        "num_beams": fields.Int(
            allow_none=True,
            validate=validate.Range(min=1, max=MAX_BEAMS),
            metadata={
                "description": f"Beam search width (1-{MAX_BEAMS}; 1 is greedy). Default: the model's "
                "generation config (greedy unless it sets beams)."
            },
        ),
        "prompt": fields.Str(
            allow_none=True,
            validate=validate.Length(max=MAX_PROMPT_CHARS),
            metadata={
                "description": "Text the captions continue, for BLIP, BLIP-2 and GIT models (e.g. 'a photo of', "
                "or 'Question: what is happening? Answer:' for BLIP-2); each caption holds only what the "
                "model adds after it. A ViT + GPT-2 model takes no prompt (422)."
            },
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
    prompt = fields.Str(metadata={"description": "The prompt the captions continue (only when one was given)."})


schema = PredictionSchema


def predict(
    video: Any,
    fps: float | None = None,
    every_n_frames: int | None = None,
    max_frames: int = 16,
    batch_size: int = 8,
    max_new_tokens: int = 20,
    accept: str = JSON,
    num_beams: int | None = None,
    prompt: str | None = None,
) -> dict[str, Any] | bytes:
    """Caption sampled frames of ``video`` (an ``UploadedFile``: ``.filename`` is a path on disk).

    ``application/json``: ``{"video": {"frames", "fps", "duration"}, "captions": [{"timestamp"
    (seconds), "frame_index", "caption"}]}`` (plus ``"prompt"`` when one was given);
    ``application/zip``: ZIP bytes with the frames as ``frame_00012.png`` and that JSON as
    ``captions.json``. Raises ``marshmallow.ValidationError`` on ``video`` for a file that is not
    a readable video, on ``fps``/``every_n_frames`` when both are given, on ``prompt`` for a
    model that takes none; loads the model if :func:`warm` was not called (``ModelDirError``).
    """
    return predict_batch(
        [
            {
                "video": video,
                "fps": fps,
                "every_n_frames": every_n_frames,
                "max_frames": max_frames,
                "batch_size": batch_size,
                "max_new_tokens": max_new_tokens,
                "accept": accept,
                "num_beams": num_beams,
                "prompt": prompt,
            }
        ]
    )[0]


def predict_batch(batch: Sequence[dict[str, Any]]) -> list[dict[str, Any] | bytes]:
    """Answer several predict requests (each a kwargs dict of :func:`predict`) together.

    Frames of requests with the same ``max_new_tokens``, ``num_beams`` and ``prompt`` go
    through the model together, in ``generate`` calls of at most the largest ``batch_size``
    among them. Returns one answer per request, in order, each as :func:`predict` gives it.
    Raises ``marshmallow.ValidationError`` (naming the field) if any request is invalid; the
    server then answers the requests one by one, so only the invalid one fails.
    """
    jobs = [_Job.open(dict(kwargs)) for kwargs in batch]
    model = _captioner()
    for job in jobs:
        if job.prompt and not model.takes_prompt:
            message = f"This model ({model.family}) captions from the image alone and takes no prompt."
            raise ValidationError([message], field_name="prompt")
    groups: dict[tuple[int, int | None, str | None], list[_Job]] = {}
    for job in jobs:
        groups.setdefault((job.max_new_tokens, job.num_beams, job.prompt), []).append(job)
    for (max_new_tokens, num_beams, prompt), members in groups.items():
        work = [(job, index) for job in members for index in job.indices]
        size = max(job.batch_size for job in members)
        for first in range(0, len(work), size):
            chunk = work[first : first + size]
            frames = _decode(chunk)
            texts = model.caption(frames, max_new_tokens=max_new_tokens, num_beams=num_beams, prompt=prompt)
            for (job, index), frame, text in zip(chunk, frames, texts, strict=True):
                job.add(index, frame, text)
    return [job.answer() for job in jobs]


class _Job:
    """One request on its way through :func:`predict_batch`: its video, frames and answer so far."""

    def __init__(self, clip: vid.Video, name: str, indices: list[int], options: dict[str, Any]) -> None:
        self.clip = clip
        self.name = name
        self.indices = indices
        self.accept: str = options["accept"]
        self.batch_size: int = options["batch_size"]
        self.max_new_tokens: int = options["max_new_tokens"]
        self.num_beams: int | None = options["num_beams"]
        self.prompt: str | None = options["prompt"] or None
        self.captions: list[dict[str, Any]] = []
        self._buffer = io.BytesIO()
        # PNG frames go into the ZIP batch by batch, so memory holds one batch of raw frames.
        self._archive = zipfile.ZipFile(self._buffer, "w") if self.accept == ZIP else None

    @classmethod
    def open(cls, kwargs: dict[str, Any]) -> _Job:
        """Check one request's arguments, open its video and choose its frames.

        Raises ``marshmallow.ValidationError`` naming the field at fault.
        """
        options = {
            "fps": None, "every_n_frames": None, "max_frames": 16, "batch_size": 8, "max_new_tokens": 20,
            "accept": JSON, "num_beams": None, "prompt": None,
            **kwargs,
        }  # fmt: skip
        if options["accept"] not in MEDIA_TYPES:
            raise ValidationError([f"Must be one of: {', '.join(MEDIA_TYPES)}."], field_name="accept")
        if options["fps"] is not None and options["every_n_frames"] is not None:
            message = ["Give fps or every_n_frames, not both."]
            raise ValidationError({"fps": message, "every_n_frames": message})
        video = kwargs.get("video")
        path = getattr(video, "filename", video)
        name = getattr(video, "original_filename", None) or "the upload"
        try:
            clip = vid.Video(path)
        except vid.VideoError as exc:
            raise ValidationError([f"{name} is not a readable video: {exc}"], field_name="video") from exc
        indices = vid.select_frames(
            clip.frame_starts,
            clip.info.duration,
            fps=options["fps"],
            every_n_frames=options["every_n_frames"],
            max_frames=options["max_frames"],
        )
        return cls(clip, name, indices, options)

    def add(self, index: int, frame: np.ndarray, caption: str) -> None:
        """Record the caption of frame ``index`` (and its PNG for a ZIP answer)."""
        timestamp = round(float(self.clip.frame_starts[index]), 3)
        self.captions.append({"timestamp": timestamp, "frame_index": index, "caption": caption})
        if self._archive is not None:
            self._archive.writestr(frame_name(index), _png_bytes(frame))  # PNG is compressed: stored

    def answer(self) -> dict[str, Any] | bytes:
        """The JSON answer, or the ZIP bytes with the frames and that JSON as ``captions.json``."""
        info = self.clip.info
        result: dict[str, Any] = {
            "video": {"frames": info.frames, "fps": round(info.fps, 3), "duration": round(info.duration, 3)},
            "captions": self.captions,
        }
        if self.prompt:
            result["prompt"] = self.prompt
        if self._archive is None:
            return result
        self._archive.writestr("captions.json", json.dumps(result, indent=2), compress_type=zipfile.ZIP_DEFLATED)
        self._archive.close()
        return self._buffer.getvalue()


def _decode(chunk: list[tuple[_Job, int]]) -> list[np.ndarray]:
    """Decode the frames of ``chunk`` ((request, frame index) pairs), one decord call per run
    of the same request. Raises ``marshmallow.ValidationError`` on ``video`` for a corrupt stream."""
    frames: list[np.ndarray] = []
    start = 0
    while start < len(chunk):
        job = chunk[start][0]
        stop = start
        while stop < len(chunk) and chunk[stop][0] is job:
            stop += 1
        try:
            frames.extend(job.clip.read([index for _, index in chunk[start:stop]]))
        except vid.VideoError as exc:
            raise ValidationError([f"{job.name} is not a readable video: {exc}"], field_name="video") from exc
        start = stop
    return frames


def frame_name(index: int) -> str:
    """Name of a frame's PNG in the ZIP answer: ``frame_00012.png`` for frame index 12."""
    return f"frame_{index:05d}.png"


def _png_bytes(frame: Any) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(frame).save(buffer, format="PNG")
    return buffer.getvalue()
