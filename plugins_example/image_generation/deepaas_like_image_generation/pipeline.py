"""Loading a diffusers text-to-image pipeline from a local directory and drawing images with it.

Any pipeline ``AutoPipelineForText2Image`` loads (Stable Diffusion 1.x/2.x, SDXL, ...) from a
directory written by ``save_pretrained``. Several requests are drawn in one pipeline call when
they share their sizes, steps, guidance and scheduler (:func:`generate_batch`).
Framework-independent: nothing here knows about HTTP or deepaas_like. ``api.py`` wraps it in
the DEEPaaS V2 hooks.
"""

from __future__ import annotations

import dataclasses
import io
import os
import pathlib
import threading
import typing
from collections.abc import Sequence

import torch

if typing.TYPE_CHECKING:
    from diffusers import DiffusionPipeline
    from PIL import Image

#: Environment variable naming the directory written by ``<Pipeline>.save_pretrained``.
MODEL_DIR_ENV = "DEEPAAS_LIKE_IMAGE_GENERATION_MODEL_DIR"
#: ``1`` computes attention in slices: less memory at large sizes, a little slower.
ATTENTION_SLICING_ENV = "DEEPAAS_LIKE_IMAGE_GENERATION_ATTENTION_SLICING"
#: ``1`` wraps the UNet in ``torch.compile``: faster steps after a slow first call per size.
COMPILE_ENV = "DEEPAAS_LIKE_IMAGE_GENERATION_COMPILE"
#: Most images drawn in one pipeline call when requests are batched (default 8); one request
#: is never split, so a request for more images still runs, alone.
MAX_BATCH_IMAGES_ENV = "DEEPAAS_LIKE_IMAGE_GENERATION_MAX_BATCH_IMAGES"
DEFAULT_MAX_BATCH_IMAGES = 8

#: Scheduler names accepted by :func:`make_scheduler`: diffusers class and extra config.
#: ``default`` keeps the scheduler saved with the pipeline.
SCHEDULERS: dict[str, tuple[str, dict[str, typing.Any]]] = {
    "ddim": ("DDIMScheduler", {}),
    "ddpm": ("DDPMScheduler", {}),
    "pndm": ("PNDMScheduler", {"skip_prk_steps": True}),  # as Stable Diffusion ships it; works from 1 step
    "euler": ("EulerDiscreteScheduler", {}),
    "euler_ancestral": ("EulerAncestralDiscreteScheduler", {}),
    "heun": ("HeunDiscreteScheduler", {}),
    "dpm_solver_multistep": ("DPMSolverMultistepScheduler", {}),  # "DPM++ 2M"
    "dpm_solver_multistep_karras": ("DPMSolverMultistepScheduler", {"use_karras_sigmas": True}),
    "unipc": ("UniPCMultistepScheduler", {}),
}
DEFAULT_SCHEDULER = "default"

_GIB = 1024**3
# One pipeline call at a time in this process: each call swaps in its own scheduler.
_CALL_LOCK = threading.Lock()


class ModelDirError(RuntimeError):
    """The weights directory is not configured, missing, or not a diffusers pipeline."""


class ModelDoesNotFitError(RuntimeError):
    """The pipeline's weights do not fit in the memory of the device it was to run on."""


class SchedulerError(ValueError):
    """The scheduler asked for is unknown or cannot drive this pipeline's model."""


@dataclasses.dataclass(frozen=True)
class Options:
    """How a pipeline is loaded: attention slicing, ``torch.compile`` of the UNet."""

    attention_slicing: bool = False
    compile: bool = False

    @classmethod
    def from_env(cls) -> Options:
        """Read ``DEEPAAS_LIKE_IMAGE_GENERATION_ATTENTION_SLICING`` and ``..._COMPILE`` (``1``/``true``: on)."""
        return cls(attention_slicing=_flag(ATTENTION_SLICING_ENV), compile=_flag(COMPILE_ENV))


@dataclasses.dataclass(frozen=True)
class ImageRequest:
    """What one predict request asks for: ``num_images`` images of ``width`` x ``height`` pixels."""

    prompt: str
    negative_prompt: str | None = None
    num_inference_steps: int = 25
    guidance_scale: float = 7.5
    seed: int = 0
    width: int = 512
    height: int = 512
    num_images: int = 1
    scheduler: str = DEFAULT_SCHEDULER

    def call_key(self) -> tuple:
        """Requests with equal keys can share one pipeline call. A missing negative prompt
        is not the same as an empty one (SDXL then uses zero embeddings), hence ``is None``."""
        return (self.num_inference_steps, self.guidance_scale, self.width, self.height, self.scheduler,
                self.negative_prompt is None)  # fmt: skip


def select_device() -> str:
    """Return ``"cuda"`` when PyTorch sees a GPU, else ``"cpu"``.

    The server picks the GPU of each worker through ``CUDA_VISIBLE_DEVICES``.
    """
    return "cuda" if torch.cuda.is_available() else "cpu"


def select_dtype(device: str) -> torch.dtype:
    """Return ``torch.float16`` on CUDA (half the memory, tensor cores) and ``torch.float32`` on CPU.

    CPU kernels for float16 convolutions are slow or missing, hence float32 there. (SDXL's VAE
    overflows in float16; diffusers upcasts it itself when its config says ``force_upcast``.)
    """
    return torch.float16 if device.startswith("cuda") else torch.float32


def describe_device(device: str) -> str:
    """Name ``device`` for an error message: for CUDA its name, the GPU id the server gave this
    worker (``CUDA_VISIBLE_DEVICES``) and its total and free memory in GiB."""
    if not device.startswith("cuda"):
        return device
    index = torch.device(device).index or 0
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    text = f"{device}" + (f" (GPU {visible} of this machine)" if visible else "")
    try:
        free, total = torch.cuda.mem_get_info(index)
        text += f", {torch.cuda.get_device_name(index)}, {total / _GIB:.1f} GiB total, {free / _GIB:.1f} GiB free"
    except (RuntimeError, AssertionError) as exc:  # a broken driver: still name the device
        text += f" (memory unknown: {exc})"
    return text


def model_dir_from_env() -> pathlib.Path:
    """Return the pipeline directory named by ``DEEPAAS_LIKE_IMAGE_GENERATION_MODEL_DIR``.

    Raises :class:`ModelDirError` if the variable is unset or empty, the directory does not
    exist, or it holds no ``model_index.json`` (the file ``save_pretrained`` writes).
    """
    value = os.environ.get(MODEL_DIR_ENV, "").strip()
    if not value:
        raise ModelDirError(
            f"{MODEL_DIR_ENV} is not set: set it to a local text-to-image pipeline directory "
            "(one written by save_pretrained, with model_index.json: Stable Diffusion 1.x/2.x, "
            "SDXL, ...); nothing is downloaded"
        )
    path = pathlib.Path(value).expanduser()
    if not path.is_dir():
        raise ModelDirError(f"{MODEL_DIR_ENV}={value}: no such directory")
    if not (path / "model_index.json").is_file():
        raise ModelDirError(f"{MODEL_DIR_ENV}={value}: not a diffusers pipeline directory (no model_index.json)")
    return path


def load_pipeline(
    model_dir: str | os.PathLike[str], device: str, dtype: torch.dtype, options: Options | None = None
) -> DiffusionPipeline:
    """Load a text-to-image pipeline from ``model_dir`` onto ``device`` in ``dtype``.

    ``AutoPipelineForText2Image`` picks the class from ``model_index.json``; local files only
    (``HF_HUB_OFFLINE``); the safety checker is left out and the progress bar switched off.
    ``options`` (default: :meth:`Options.from_env`) turns on attention slicing or compiles the
    UNet. Raises :class:`ModelDirError` if the directory cannot be loaded, and
    :class:`ModelDoesNotFitError` naming the device and its memory when the weights do not fit.
    """
    # Set before diffusers/huggingface_hub are first imported: they read these at import time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from diffusers import AutoPipelineForText2Image

    options = Options.from_env() if options is None else options
    path = os.fspath(model_dir)
    extra: dict[str, typing.Any] = {}
    if _has_component(path, "safety_checker"):
        extra = {"safety_checker": None, "requires_safety_checker": False}
    try:
        pipe = AutoPipelineForText2Image.from_pretrained(path, dtype=dtype, local_files_only=True, **extra)
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"cannot load a text-to-image pipeline from {path}: {exc}") from exc
    try:
        pipe = _to_device(pipe, device)
    except torch.cuda.OutOfMemoryError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
        raise ModelDoesNotFitError(
            f"the {type(pipe).__name__} in {path} ({_parameters_gib(pipe, dtype):.1f} GiB of "
            f"{str(dtype).removeprefix('torch.')} weights) does not fit on {describe_device(device)}: {message}"
        ) from exc
    pipe.set_progress_bar_config(disable=True)
    if options.attention_slicing:
        pipe.enable_attention_slicing()
    if options.compile:
        pipe.unet = torch.compile(pipe.unet)
    return pipe


def make_scheduler(current: typing.Any, name: str) -> typing.Any:
    """A fresh scheduler called ``name`` (a key of :data:`SCHEDULERS`, or ``"default"``), configured
    from ``current`` (the pipeline's own: its beta schedule and timestep settings carry over).

    Raises :class:`SchedulerError` for an unknown name or one the pipeline's model cannot use
    (e.g. DDIM for a flow-matching model).
    """
    import diffusers

    if name == DEFAULT_SCHEDULER:
        return type(current).from_config(current.config)
    if name not in SCHEDULERS:
        raise SchedulerError(f"unknown scheduler {name!r}: choose one of {', '.join([DEFAULT_SCHEDULER, *SCHEDULERS])}")
    class_name, extra = SCHEDULERS[name]
    cls = getattr(diffusers, class_name)
    compatible = {c.__name__ for c in getattr(current, "compatibles", [])} | {type(current).__name__}
    if class_name not in compatible:
        raise SchedulerError(
            f"{name} ({class_name}) cannot drive this pipeline, whose scheduler is {type(current).__name__}; "
            f"use one of: {', '.join(n for n, (c, _) in SCHEDULERS.items() if c in compatible) or DEFAULT_SCHEDULER}"
        )
    return cls.from_config(current.config, **extra)


def generate_batch(
    pipe: DiffusionPipeline, requests: Sequence[ImageRequest], max_images: int | None = None
) -> list[list[Image.Image]]:
    """Draw the images of every request; one list of RGB PIL images per request, in order.

    Requests with the same :meth:`ImageRequest.call_key` share pipeline calls of at most
    ``max_images`` images (default ``$DEEPAAS_LIKE_IMAGE_GENERATION_MAX_BATCH_IMAGES``, 8; a
    request is never split). Each request's noise comes from its own
    ``torch.Generator(device).manual_seed(seed)``, so its images do not depend on the requests
    it was batched with (up to float rounding of batched kernels). Raises
    :class:`SchedulerError` for a scheduler the pipeline cannot use.
    """
    limit = max_images if max_images is not None else _int_env(MAX_BATCH_IMAGES_ENV, DEFAULT_MAX_BATCH_IMAGES)
    results: dict[int, list[Image.Image]] = {}
    groups: dict[tuple, list[int]] = {}
    for position, request in enumerate(requests):
        groups.setdefault(request.call_key(), []).append(position)
    for positions in groups.values():
        calls: list[list[int]] = [[]]
        for position in positions:
            if calls[-1] and sum(requests[p].num_images for p in calls[-1]) + requests[position].num_images > limit:
                calls.append([])
            calls[-1].append(position)
        for call in calls:
            images = _call(pipe, [requests[p] for p in call])
            for position in call:
                count = requests[position].num_images
                results[position], images = images[:count], images[count:]
    return [results[position] for position in range(len(requests))]


def generate(
    pipe: DiffusionPipeline,
    *,
    prompt: str,
    negative_prompt: str | None,
    num_inference_steps: int,
    guidance_scale: float,
    seed: int,
    width: int,
    height: int,
    num_images: int,
    scheduler: str = DEFAULT_SCHEDULER,
) -> list[Image.Image]:
    """Draw ``num_images`` RGB images of ``width`` x ``height`` pixels for ``prompt`` (one request).

    The noise comes from ``torch.Generator(device).manual_seed(seed)``, so the same arguments
    and seed give the same pixels on the same device and dtype.
    """
    request = ImageRequest(prompt, negative_prompt, num_inference_steps, guidance_scale, seed, width, height,
                           num_images, scheduler)  # fmt: skip
    return generate_batch(pipe, [request])[0]


def _call(pipe: DiffusionPipeline, requests: list[ImageRequest]) -> list[Image.Image]:
    """One pipeline call drawing every image of ``requests`` (which share their call key)."""
    first = requests[0]
    prompts = [r.prompt for r in requests for _ in range(r.num_images)]
    negatives = (
        None if first.negative_prompt is None else [r.negative_prompt for r in requests for _ in range(r.num_images)]
    )
    # One generator per request, listed once per image: diffusers draws image i's noise from
    # generators[i] in turn, so a request's images come from its seed alone.
    generators = []
    for request in requests:
        generator = torch.Generator(pipe.device).manual_seed(request.seed)
        generators += [generator] * request.num_images
    with _CALL_LOCK:
        original = pipe.scheduler
        pipe.scheduler = make_scheduler(original, first.scheduler)
        try:
            with torch.inference_mode():
                output = pipe(
                    prompt=prompts,
                    negative_prompt=negatives,
                    num_inference_steps=first.num_inference_steps,
                    guidance_scale=first.guidance_scale,
                    width=first.width,
                    height=first.height,
                    num_images_per_prompt=1,
                    generator=generators,
                    output_type="pil",
                )
        finally:
            pipe.scheduler = original
    return list(output.images)


def png_bytes(image: Image.Image) -> bytes:
    """Encode a PIL image as PNG (lossless, deterministic for identical pixels)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _to_device(pipe: DiffusionPipeline, device: str) -> DiffusionPipeline:
    # One seam for the move onto the GPU, where a pipeline too big for it fails.
    return pipe.to(device)


def _has_component(path: str, name: str) -> bool:
    import json

    try:
        index = json.loads((pathlib.Path(path) / "model_index.json").read_text())
    except (OSError, ValueError):
        return False
    return name in index


def _parameters_gib(pipe: typing.Any, dtype: torch.dtype) -> float:
    modules = [m for m in getattr(pipe, "components", {}).values() if isinstance(m, torch.nn.Module)]
    return sum(p.numel() for m in modules for p in m.parameters()) * torch.empty((), dtype=dtype).element_size() / _GIB


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _int_env(name: str, default: int) -> int:
    value = os.environ.get(name, "").strip()
    if not value:
        return default
    try:
        number = int(value)
    except ValueError:
        raise ValueError(f"{name}={value}: not a whole number") from None
    if number < 1:
        raise ValueError(f"{name}={value}: must be at least 1")
    return number
