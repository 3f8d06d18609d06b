"""Loading an image-to-text model from a local directory and captioning frames with it.

Any transformers model that ``AutoModelForImageTextToText`` maps loads, with the processor
saved beside it (``AutoProcessor``; for a ``VisionEncoderDecoderModel`` saved without one, its
image processor and tokenizer). The families this plugin is tested with:

- ``vision-encoder-decoder``: e.g. ViT + GPT-2 (``nlpconnect/vit-gpt2-image-captioning``); no prompt;
- ``blip``: ``BlipForConditionalGeneration`` (``Salesforce/blip-image-captioning-*``);
- ``blip-2``: ``Blip2ForConditionalGeneration`` (``Salesforce/blip2-opt-2.7b``, the model the
  Aana video pipeline captions with);
- ``git``: ``GitForCausalLM`` (``microsoft/git-base-coco``).

Framework-independent: nothing here knows about HTTP or deepaas_like.
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

#: Environment variable naming the directory written by ``save_pretrained`` (model and its
#: processor, or image processor and tokenizer, side by side).
MODEL_DIR_ENV = "DEEPAAS_LIKE_VIDEO_CAPTIONING_MODEL_DIR"
#: Environment variable choosing the weights' dtype: ``auto`` (float16 on CUDA, float32 on
#: CPU), ``float16``, ``bfloat16`` or ``float32``.
DTYPE_ENV = "DEEPAAS_LIKE_VIDEO_CAPTIONING_DTYPE"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}

#: ``config.model_type`` of the families that take no text prompt.
NO_PROMPT_FAMILIES = frozenset({"vision-encoder-decoder"})

_GIB = 1024**3


class ModelDirError(RuntimeError):
    """The weights directory is not configured, missing, or not an image-to-text model."""


class ModelDoesNotFitError(RuntimeError):
    """The model's weights do not fit in the memory of the device it was to run on."""


class PromptNotSupportedError(ValueError):
    """A text prompt was given to a model family that captions from the image alone."""


def select_device() -> str:
    """Return ``"cuda"`` when PyTorch sees a GPU, else ``"cpu"``.

    The server picks the GPU of each worker through ``CUDA_VISIBLE_DEVICES``.
    """
    return "cuda" if torch.cuda.is_available() else "cpu"


def select_dtype(device: str, requested: str | None = None) -> torch.dtype:
    """Return the weights' dtype on ``device``: ``requested``, else ``$DEEPAAS_LIKE_VIDEO_CAPTIONING_DTYPE``.

    ``auto`` (the default) is ``torch.float16`` on CUDA (half the memory, tensor cores) and
    ``torch.float32`` on CPU (CPU float16 kernels are slow or missing); ``bfloat16`` suits
    models that overflow in float16. Raises ``ValueError`` naming the variable for another name.
    """
    name = (requested if requested is not None else os.environ.get(DTYPE_ENV, "")).strip().lower() or "auto"
    if name == "auto":
        return torch.float16 if device.startswith("cuda") else torch.float32
    if name not in DTYPES:
        raise ValueError(f"{DTYPE_ENV}={name}: choose auto, {', '.join(DTYPES)}")
    return DTYPES[name]


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
    """Return the model directory named by ``DEEPAAS_LIKE_VIDEO_CAPTIONING_MODEL_DIR``.

    Raises :class:`ModelDirError` if the variable is unset or empty, the directory does not
    exist, or it holds no ``config.json`` (the file ``save_pretrained`` writes).
    """
    value = os.environ.get(MODEL_DIR_ENV, "").strip()
    if not value:
        raise ModelDirError(
            f"{MODEL_DIR_ENV} is not set: set it to a local image-to-text model directory "
            "(written by save_pretrained with its processor: VisionEncoderDecoder such as "
            "nlpconnect/vit-gpt2-image-captioning, BLIP, BLIP-2 or GIT); nothing is downloaded"
        )
    path = pathlib.Path(value).expanduser()
    if not path.is_dir():
        raise ModelDirError(f"{MODEL_DIR_ENV}={value}: no such directory")
    if not (path / "config.json").is_file():
        raise ModelDirError(f"{MODEL_DIR_ENV}={value}: not a transformers model directory (no config.json)")
    return path


@dataclasses.dataclass
class Captioner:
    """A loaded image-to-text model with its image processor and tokenizer.

    ``family`` is the model's ``config.model_type`` (``"blip-2"``...); ``processor`` is the
    multimodal processor saved with it, or ``None`` (then only images go in).
    """

    model: PreTrainedModel
    image_processor: typing.Any
    tokenizer: typing.Any
    device: str
    dtype: torch.dtype
    processor: typing.Any = None
    family: str = "vision-encoder-decoder"

    @property
    def takes_prompt(self) -> bool:
        """Whether a text prompt can steer the captions (BLIP, BLIP-2, GIT: yes; ViT + GPT-2: no)."""
        return self.family not in NO_PROMPT_FAMILIES and (self.processor is not None or self.family == "git")

    def caption(
        self,
        frames: Sequence[np.ndarray] | np.ndarray,
        max_new_tokens: int = 20,
        num_beams: int | None = None,
        prompt: str | None = None,
    ) -> list[str]:
        """Caption each frame (uint8 RGB, shape ``(H, W, 3)``; sizes may differ) in one ``generate`` call.

        Returns one stripped string per frame, in order, of at most ``max_new_tokens`` tokens.
        ``num_beams``: beam search width (``None``: the model's generation config, greedy unless
        it sets beams). ``prompt``: text the caption continues (e.g. ``"a photo of"``, or
        ``"Question: what is shown? Answer:"`` for BLIP-2); the answer holds only what the
        model adds after it. Raises :class:`PromptNotSupportedError` for a prompt to a family
        that takes none.
        """
        if len(frames) == 0:
            return []
        if prompt and not self.takes_prompt:
            raise PromptNotSupportedError(f"a {self.family} model captions from the image alone and takes no prompt")
        inputs = self._inputs(list(frames), prompt or None)
        options: dict[str, typing.Any] = {"max_new_tokens": max_new_tokens}
        if num_beams is not None:
            options["num_beams"] = num_beams
        with torch.inference_mode():
            output_ids = self.model.generate(**inputs, **options)
        texts = self.tokenizer.batch_decode(output_ids, skip_special_tokens=True)
        # BLIP, BLIP-2 and GIT give back the prompt followed by their continuation.
        start = self._decoded_prompt(prompt) if prompt else ""
        return [_after(text.strip(), start) for text in texts]

    def _inputs(self, frames: list[np.ndarray], prompt: str | None) -> dict[str, torch.Tensor]:
        if prompt is not None and self.family != "git":
            # BLIP, BLIP-2: the processor encodes images and prompt (BLIP-2 puts its image tokens first).
            encoded = self.processor(images=frames, text=[prompt] * len(frames), return_tensors="pt")
            inputs = {name: value.to(self.device) for name, value in encoded.items() if isinstance(value, torch.Tensor)}
            inputs["pixel_values"] = inputs["pixel_values"].to(dtype=self.dtype)
            return inputs
        pixel_values = self.image_processor(images=frames, return_tensors="pt").pixel_values
        inputs = {"pixel_values": pixel_values.to(device=self.device, dtype=self.dtype)}
        if prompt is not None:
            # GIT reads [CLS] + prompt and continues it; its processor would close it with [SEP].
            ids = [self.tokenizer.cls_token_id, *self.tokenizer(prompt, add_special_tokens=False).input_ids]
            inputs["input_ids"] = torch.tensor([ids] * len(frames), device=self.device)
        return inputs

    def _decoded_prompt(self, prompt: str) -> str:
        # The prompt as decoding spells it (BERT lowercases, byte-level BPE keeps case).
        ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        return self.tokenizer.decode(ids, skip_special_tokens=True).strip()


def load_captioner(model_dir: str | os.PathLike[str], device: str, dtype: torch.dtype) -> Captioner:
    """Load model, processor (or image processor and tokenizer) from ``model_dir`` onto ``device`` in ``dtype``.

    Local files only (``HF_HUB_OFFLINE``, ``local_files_only``). Raises :class:`ModelDirError`
    if the directory cannot be loaded as an image-to-text model, :class:`ModelDoesNotFitError`
    naming the device and its memory when the weights do not fit on it.
    """
    # Set before transformers/huggingface_hub are first imported: they read these at import time.
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from transformers import AutoImageProcessor, AutoModelForImageTextToText, AutoProcessor, AutoTokenizer

    path = os.fspath(model_dir)
    try:
        model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True, dtype=dtype)
        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        if hasattr(processor, "image_processor") and hasattr(processor, "tokenizer"):
            image_processor, tokenizer = processor.image_processor, processor.tokenizer
        else:  # e.g. a VisionEncoderDecoderModel saved with an image processor and a tokenizer
            processor = None
            image_processor = AutoImageProcessor.from_pretrained(path, local_files_only=True)
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError, KeyError) as exc:
        raise ModelDirError(f"cannot load an image-to-text model from {path}: {exc}") from exc
    try:
        model = _to_device(model, device).eval()
    except torch.cuda.OutOfMemoryError as exc:
        message = str(exc).strip().splitlines()[0] if str(exc).strip() else "out of memory"
        raise ModelDoesNotFitError(
            f"the {model.config.model_type} model in {path} ({_parameters_gib(model, dtype):.1f} GiB of "
            f"{str(dtype).removeprefix('torch.')} weights) does not fit on {describe_device(device)}: {message}"
        ) from exc
    return Captioner(
        model=model,
        image_processor=image_processor,
        tokenizer=tokenizer,
        device=device,
        dtype=dtype,
        processor=processor,
        family=model.config.model_type,
    )


def _to_device(model: PreTrainedModel, device: str) -> PreTrainedModel:
    # Only the device: from_pretrained set the dtype and kept the modules that must stay in
    # float32 (BLIP-2's Q-Former) there. One seam for the move where a too-big model fails.
    return model.to(device)


def _after(text: str, start: str) -> str:
    return text[len(start) :].strip() if start and text.startswith(start) else text


def _parameters_gib(model: torch.nn.Module, dtype: torch.dtype) -> float:
    return sum(p.numel() for p in model.parameters()) * torch.empty((), dtype=dtype).element_size() / _GIB
