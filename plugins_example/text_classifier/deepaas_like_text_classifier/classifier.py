"""The classification head: labelled CSV data, the seeded split, training, checkpoints.

The head is one linear layer (softmax regression) over the encoder's sentence embeddings.
It is small (dim x labels), so it is trained and run on the CPU whatever device the encoder uses.
"""

from __future__ import annotations

import csv
import datetime
import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import marshmallow
import torch

LOG = logging.getLogger(__name__)

DATA_DIR_ENV = "DEEPAAS_LIKE_TEXT_CLASSIFIER_DATA_DIR"
CHECKPOINT_NAME = "classifier.pt"
CHECKPOINT_FORMAT = 1
BATCH_SIZE = 32


def data_dir() -> Path:
    """Directory for checkpoints: ``$DEEPAAS_LIKE_TEXT_CLASSIFIER_DATA_DIR``, else a per-user one.

    The per-user default is ``$XDG_DATA_HOME/deepaas_like_text_classifier``
    (``~/.local/share/deepaas_like_text_classifier`` when XDG_DATA_HOME is unset).
    """
    override = os.environ.get(DATA_DIR_ENV)
    if override:
        return Path(override)
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base) / "deepaas_like_text_classifier"


def checkpoint_path() -> Path:
    """Where the latest trained head is stored (one file; each training replaces it)."""
    return data_dir() / CHECKPOINT_NAME


def shipped_data_path() -> Path:
    """The labelled sentences shipped with the package (CSV, header ``text,label``)."""
    return Path(str(resources.files(__package__) / "data" / "sentences.csv"))


def _data_error(message: str) -> marshmallow.ValidationError:
    return marshmallow.ValidationError([message], field_name="data")


def read_labeled_csv(path: str | os.PathLike[str]) -> tuple[list[str], list[str]]:
    """Read (texts, labels) from a UTF-8 CSV whose header has ``text`` and ``label`` columns.

    Blank rows are skipped. Raises marshmallow.ValidationError on field ``data`` when the file is
    not UTF-8 text, lacks either column, has a row missing a value, or has fewer than 2 labels.
    """
    texts: list[str] = []
    labels: list[str] = []
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = {(name or "").strip().lower(): name for name in reader.fieldnames or []}
            if "text" not in columns or "label" not in columns:
                found = ", ".join(repr(n) for n in reader.fieldnames or []) or "none"
                raise _data_error(f"the CSV needs a header with columns 'text' and 'label' (found {found})")
            for row in reader:
                text = (row.get(columns["text"]) or "").strip()
                label = (row.get(columns["label"]) or "").strip()
                if not text and not label:
                    continue
                if not text or not label:
                    raise _data_error(f"line {reader.line_num}: every row needs both a text and a label")
                texts.append(text)
                labels.append(label)
    except (UnicodeDecodeError, csv.Error) as exc:
        raise _data_error(f"not a readable UTF-8 CSV file: {exc}") from exc
    distinct = sorted(set(labels))
    if len(distinct) < 2:
        raise _data_error(f"a classifier needs at least 2 distinct labels, the CSV has {len(distinct)}")
    return texts, labels


def stratified_split(targets: Sequence[int], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Split row indices into (train, validation), holding out ``fraction`` of each label.

    Seeded, so the same data and seed give the same split. A label with a single example stays
    in the training set.
    """
    generator = torch.Generator().manual_seed(seed)
    by_label: dict[int, list[int]] = {}
    for index, target in enumerate(targets):
        by_label.setdefault(target, []).append(index)
    train: list[int] = []
    validation: list[int] = []
    for target in sorted(by_label):
        rows = by_label[target]
        order = torch.randperm(len(rows), generator=generator).tolist()
        held_out = min(round(len(rows) * fraction), len(rows) - 1)
        validation.extend(rows[i] for i in order[:held_out])
        train.extend(rows[i] for i in order[held_out:])
    return sorted(train), sorted(validation)


@dataclass
class EpochReport:
    """One epoch of training: mean cross-entropy on the training set, held-out accuracy."""

    epoch: int
    loss: float
    val_accuracy: float | None


def fit_head(
    embeddings: torch.Tensor,
    targets: torch.Tensor,
    n_labels: int,
    validation: Sequence[int],
    *,
    epochs: int,
    learning_rate: float,
    seed: int,
    on_epoch: Callable[[EpochReport], None] | None = None,
) -> tuple[torch.nn.Linear, list[EpochReport]]:
    """Train a linear head with Adam on ``embeddings`` (N, dim) and ``targets`` (N,) label ids.

    Rows listed in ``validation`` are held out and scored after every epoch (accuracy in [0, 1],
    None when nothing is held out). Starts from zero weights and shuffles with its own seeded
    generator, so runs are reproducible and leave torch's global RNG alone.
    """
    held_out = torch.tensor(sorted(validation), dtype=torch.long)
    keep = torch.ones(len(targets), dtype=torch.bool)
    keep[held_out] = False
    train_x, train_y = embeddings[keep], targets[keep]
    val_x, val_y = embeddings[held_out], targets[held_out]

    head = torch.nn.Linear(embeddings.shape[1], n_labels)
    torch.nn.init.zeros_(head.weight)
    torch.nn.init.zeros_(head.bias)
    optimizer = torch.optim.Adam(head.parameters(), lr=learning_rate)
    generator = torch.Generator().manual_seed(seed)
    history: list[EpochReport] = []
    for epoch in range(1, epochs + 1):
        head.train()
        total = 0.0
        for batch in torch.randperm(len(train_y), generator=generator).split(BATCH_SIZE):
            optimizer.zero_grad()
            loss = torch.nn.functional.cross_entropy(head(train_x[batch]), train_y[batch])
            loss.backward()
            optimizer.step()
            total += loss.item() * len(batch)
        head.eval()
        accuracy = None
        if len(val_y):
            with torch.no_grad():
                accuracy = (head(val_x).argmax(dim=1) == val_y).sum().item() / len(val_y)
        history.append(EpochReport(epoch, total / len(train_y), accuracy))
        if on_epoch is not None:
            on_epoch(history[-1])
        LOG.info("epoch %d: loss %.4f, val_accuracy %s", epoch, total / len(train_y), accuracy)
    return head, history


@dataclass
class Head:
    """A trained head with its label names, as loaded from a checkpoint."""

    linear: torch.nn.Linear
    labels: list[str]
    encoder: dict[str, object]

    @torch.no_grad()
    def probabilities(self, embeddings: torch.Tensor) -> torch.Tensor:
        """Softmax over labels for (N, dim) embeddings: returns (N, len(labels)), rows sum to 1."""
        return torch.softmax(self.linear(embeddings), dim=1)


def save_checkpoint(
    path: Path,
    linear: torch.nn.Linear,
    labels: Sequence[str],
    encoder: dict[str, object],
    extra: dict[str, object] | None = None,
) -> None:
    """Write the head atomically: a temp file in the same directory, then ``os.replace``.

    A worker loading the checkpoint meanwhile sees either the old file or the new one, never a
    partial write. Creates the directory when missing.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": CHECKPOINT_FORMAT,
        "state_dict": linear.state_dict(),
        "labels": list(labels),
        "encoder": encoder,
        "created": datetime.datetime.now(datetime.UTC).isoformat(),
        **(extra or {}),
    }
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def load_checkpoint(path: Path, encoder_dim: int) -> Head:
    """Load a head saved by :func:`save_checkpoint` (tensors and plain data only).

    Raises RuntimeError when it was trained on embeddings of another size than ``encoder_dim``.
    """
    payload = torch.load(path, map_location="cpu", weights_only=True)
    weight = payload["state_dict"]["weight"]
    if weight.shape[1] != encoder_dim:
        raise RuntimeError(
            f"checkpoint {path} expects {weight.shape[1]}-dim embeddings but the encoder "
            f"gives {encoder_dim}: retrain or point the encoder directory at the right model"
        )
    linear = torch.nn.Linear(weight.shape[1], weight.shape[0])
    linear.load_state_dict(payload["state_dict"])
    linear.eval()
    return Head(linear=linear, labels=list(payload["labels"]), encoder=dict(payload["encoder"]))
