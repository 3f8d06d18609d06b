"""Loading a Stable Diffusion pipeline from a local directory and drawing images with it.

Framework-independent: nothing here knows about HTTP or deepaas_like. ``api.py`` wraps it in
the DEEPaaS V2 hooks.
"""

from __future__ import annotations

import io
import os
import pathlib
import typing

import torch

if typing.TYPE_CHECKING:
    from diffusers import StableDiffusionPipeline
    from PIL import Image

#: Environment variable naming the directory written by ``StableDiffusionPipeline.save_pretrained``.
MODEL_DIR_ENV = "DEEPAAS_LIKE_IMAGE_GENERATION_MODEL_DIR"


class ModelDirError(RuntimeError):
    """The weights directory is not configured, missing, or not a diffusers pipeline."""


def select_device() -> str:
    """Return ``"cuda"`` when PyTorch sees a GPU, else ``"cpu"``.

    The server picks the GPU of each worker through ``CUDA_VISIBLE_DEVICES``.
    """
    return "cuda" if torch.cuda.is_available() else "cpu"


def select_dtype(device: str) -> torch.dtype:
    """Return ``torch.float16`` on CUDA (half the memory, tensor cores) and ``torch.float32`` on CPU.

    CPU kernels for float16 convolutions are slow or missing, hence float32 there.
    """
    return torch.float16 if device.startswith("cuda") else torch.float32


def model_dir_from_env() -> pathlib.Path:
    """Return the pipeline directory named by ``DEEPAAS_LIKE_IMAGE_GENERATION_MODEL_DIR``.

    Raises :class:`ModelDirError` if the variable is unset or empty, the directory does not
    exist, or it holds no ``model_index.json`` (the file ``save_pretrained`` writes).
    """
    value = os.environ.get(MODEL_DIR_ENV, "").strip()
    if not value:
        raise ModelDirError(
            f"{MODEL_DIR_ENV} is not set: set it to a local Stable Diffusion pipeline directory "
            "(one written by StableDiffusionPipeline.save_pretrained, with model_index.json); "
            "nothing is downloaded"
        )
    path = pathlib.Path(value).expanduser()
    if not path.is_dir():
        raise ModelDirError(f"{MODEL_DIR_ENV}={value}: no such directory")
    if not (path / "model_index.json").is_file():
        raise ModelDirError(
            f"{MODEL_DIR_ENV}={value}: not a diffusers pipeline directory (no model_index.json)"
        )
    return path


def load_pipeline(model_dir: str | os.PathLike[str], device: str, dtype: torch.dtype) -> StableDiffusionPipeline:
    """Load a ``StableDiffusionPipeline`` from ``model_dir`` onto ``device`` in ``dtype``.

    Local files only (``HF_HUB_OFFLINE``); the safety checker is left out and the progress
    bar switched off. Raises :class:`ModelDirError` if the directory cannot be loaded.
    """
    # Set before diffusers/huggingface_hub are first imported: they read these at import time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from diffusers import StableDiffusionPipeline

    try:
        pipe = StableDiffusionPipeline.from_pretrained(
            os.fspath(model_dir),
            dtype=dtype,
            safety_checker=None,
            requires_safety_checker=False,
            local_files_only=True,
        )
    except (OSError, ValueError) as exc:
        raise ModelDirError(f"cannot load a Stable Diffusion pipeline from {model_dir}: {exc}") from exc
    pipe = pipe.to(device)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def generate(
    pipe: StableDiffusionPipeline,
    *,
    prompt: str,
    negative_prompt: str | None,
    num_inference_steps: int,
    guidance_scale: float,
    seed: int,
    width: int,
    height: int,
    num_images: int,
) -> list[Image.Image]:
    """Draw ``num_images`` RGB images of ``width`` x ``height`` pixels for ``prompt``.

    The initial noise comes from ``torch.Generator(device).manual_seed(seed)``, so the same
    arguments and seed give the same pixels on the same device and dtype.
    """
    generator = torch.Generator(pipe.device).manual_seed(seed)
    with torch.inference_mode():
        output = pipe(
            prompt=prompt,
            negative_prompt=negative_prompt or None,
            num_inference_steps=num_inference_steps,
            guidance_scale=guidance_scale,
            width=width,
            height=height,
            num_images_per_prompt=num_images,
            generator=generator,
            output_type="pil",
        )
    return list(output.images)


def png_bytes(image: Image.Image) -> bytes:
    """Encode a PIL image as PNG (lossless, deterministic for identical pixels)."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()
