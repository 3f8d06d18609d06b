"""Loading an image-to-text model from a local directory and captioning frames with it.

The model is a transformers ``VisionEncoderDecoderModel`` (e.g. ViT encoder + GPT-2 decoder,
like ``nlpconnect/vit-gpt2-image-captioning``) saved with ``save_pretrained`` together with its
image processor and tokenizer. Framework-independent: nothing here knows about HTTP or
deepaas_like.
"""

from __future__ import annotations

import dataclasses
import os
import pathlib
import typing
from collections.abc import Sequence

import numpy as np
import torch

if typing.TYPE_CHECKING:
    from transformers import PreTrainedModel

#: Environment variable naming the directory written by ``save_pretrained`` (model, image
#: processor and tokenizer side by side).
MODEL_DIR_ENV = "DEEPAAS_LIKE_VIDEO_CAPTIONING_MODEL_DIR"


class ModelDirError(RuntimeError):
    """The weights directory is not configured, missing, or not an image-captioning model."""


def select_device() -> str:
    """Return ``"cuda"`` when PyTorch sees a GPU, else ``"cpu"``.

    The server picks the GPU of each worker through ``CUDA_VISIBLE_DEVICES``.
    """
    return "cuda" if torch.cuda.is_available() else "cpu"


def select_dtype(device: str) -> torch.dtype:
    """Return ``torch.float16`` on CUDA (half the memory, faster) and ``torch.float32`` on CPU.

    CPU kernels for float16 are slow or missing, hence float32 there.
    """
    return torch.float16 if device.startswith("cuda") else torch.float32


def model_dir_from_env() -> pathlib.Path:
    """Return the model directory named by ``DEEPAAS_LIKE_VIDEO_CAPTIONING_MODEL_DIR``.

    Raises :class:`ModelDirError` if the variable is unset or empty, the directory does not
    exist, or it holds no ``config.json`` (the file ``save_pretrained`` writes).
    """
    value = os.environ.get(MODEL_DIR_ENV, "").strip()
    if not value:
        raise ModelDirError(
            f"{MODEL_DIR_ENV} is not set: set it to a local VisionEncoderDecoderModel directory "
            "(written by save_pretrained, with its image processor and tokenizer, e.g. a copy of "
            "nlpconnect/vit-gpt2-image-captioning); nothing is downloaded"
        )
    path = pathlib.Path(value).expanduser()
    if not path.is_dir():
        raise ModelDirError(f"{MODEL_DIR_ENV}={value}: no such directory")
    if not (path / "config.json").is_file():
        raise ModelDirError(f"{MODEL_DIR_ENV}={value}: not a transformers model directory (no config.json)")
    return path


@dataclasses.dataclass
class Captioner:
    """A loaded image-to-text model with the image processor and tokenizer saved beside it."""

    model: PreTrainedModel
    image_processor: typing.Any
    tokenizer: typing.Any
    device: str
    dtype: torch.dtype

    def caption(self, frames: Sequence[np.ndarray] | np.ndarray, max_new_tokens: int = 20) -> list[str]:
        """Caption each frame (uint8 RGB, shape ``(H, W, 3)``) in one ``generate`` call.

        Returns one stripped string per frame, in order; at most ``max_new_tokens`` tokens
        each. Decoding follows the model's generation config (greedy unless it sets beams).
        """
        if len(frames) == 0:
            return []
        pixel_values = self.image_processor(images=list(frames), return_tensors="pt").pixel_values
        pixel_values = pixel_values.to(device=self.device, dtype=self.dtype)
        with torch.inference_mode():
            output_ids = self.model.generate(pixel_values=pixel_values, max_new_tokens=max_new_tokens)
        return [text.strip() for text in self.tokenizer.batch_decode(output_ids, skip_special_tokens=True)]


def load_captioner(model_dir: str | os.PathLike[str], device: str, dtype: torch.dtype) -> Captioner:
    """Load model, image processor and tokenizer from ``model_dir`` onto ``device`` in ``dtype``.

    Local files only (``HF_HUB_OFFLINE``, ``local_files_only``). Raises :class:`ModelDirError`
    if the directory cannot be loaded as a ``VisionEncoderDecoderModel``.
    """
    # Set before transformers/huggingface_hub are first imported: they read these at import time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import (
        AutoImageProcessor,
        AutoTokenizer,
        VisionEncoderDecoderModel,
    )

    path = os.fspath(model_dir)
    try:
        model = VisionEncoderDecoderModel.from_pretrained(path, local_files_only=True)
        image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
        tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelDirError(f"cannot load an image-captioning model from {path}: {exc}") from exc
    model = model.to(device=device, dtype=dtype).eval()
    return Captioner(model=model, image_processor=image_processor, tokenizer=tokenizer, device=device, dtype=dtype)
