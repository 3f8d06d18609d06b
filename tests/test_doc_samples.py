"""The sample files the docs point to (doc/samples/) exist, are named somewhere, and give
the example plugins what the docs say: the demo's answer for ``cat.png``, a training of the
text classifier on ``my_labels.csv``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from deepaas_like import UploadedFile
from tests.conftest import ROOT

SAMPLES = ROOT / "doc" / "samples"
DOCS = [*sorted((ROOT / "doc").rglob("*.rst")), *sorted((ROOT / "plugins_example").glob("*/README.md"))]


def text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def test_every_sample_named_in_the_docs_exists_and_every_sample_is_named():
    named = {name for doc in DOCS for name in re.findall(r"doc/samples/([\w.-]+)", text(doc))}
    assert named, "no doc names a sample"
    missing = sorted(name for name in named if not (SAMPLES / name).is_file())
    assert missing == [], f"named in the docs but not in doc/samples/: {missing}"
    unnamed = sorted(path.name for path in SAMPLES.iterdir() if path.name not in named)
    assert unnamed == [], f"in doc/samples/ but named by no doc: {unnamed}"


def test_the_demo_answers_cat_png_as_its_docs_show():
    from deepaas_like_demo import api

    answer = api.predict(UploadedFile("image", str(SAMPLES / "cat.png"), "image/png", "cat.png"), size=32)
    assert answer["width"] == 320 and answer["height"] == 200 and answer["thumbnail_size"] == [32, 20]
    for doc in (ROOT / "doc" / "plugins" / "demo.rst", ROOT / "plugins_example" / "demo" / "README.md"):
        assert json.dumps(answer) in text(doc), f"{doc} does not show the demo's answer for cat.png"


def test_the_text_classifier_trains_on_my_labels_csv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    from deepaas_like_text_classifier import api, classifier

    monkeypatch.setenv(classifier.DATA_DIR_ENV, str(tmp_path))
    texts, labels = classifier.read_labeled_csv(SAMPLES / "my_labels.csv")
    assert len(texts) == 24 and {label: labels.count(label) for label in set(labels)} == {
        "weather": 8,
        "food": 8,
        "sports": 8,
    }
    api.warm()
    output = api.train(data=UploadedFile("data", str(SAMPLES / "my_labels.csv"), "text/csv", "my_labels.csv"))
    assert output["labels"] == ["food", "sports", "weather"]
    assert (output["train_size"], output["val_size"]) == (18, 6)
    assert output["val_accuracy"] >= 5 / 6, "the docs say at least 5 of the 6 held-out sentences come out right"
    predicted = api.predict(text="It snowed all night.")["predictions"][0]["label"]
    assert predicted == "weather"
