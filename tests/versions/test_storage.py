"""The model store: a version appears whole or not at all, on a local directory and on a
remote fsspec filesystem (fsspec's in-memory one stands for s3:// here).
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import fsspec
import pytest

from deepaas_like.registry import storage
from deepaas_like.registry.records import parse_version_id, version_id


def write_weights(path: str) -> None:
    os.makedirs(os.path.join(path, "sub"))
    Path(path, "weights.bin").write_bytes(b"\x00" * 1000)
    Path(path, "sub", "config.json").write_text("{}")


def test_a_version_appears_whole_in_a_local_store(tmp_path):
    store = storage.ModelStore(str(tmp_path / "store"))
    store.check()
    location = store.location("model", "a" * 32)
    storage.publish(store.url_of(location), write_weights)
    assert store.exists(location)
    assert sorted(p.name for p in (tmp_path / "store" / "model").iterdir()) == ["a" * 32]
    assert storage.local_copy(store.url_of(location)) == str(tmp_path / "store" / location)
    store.remove(location)
    assert not store.exists(location)


@pytest.mark.parametrize("url", ["local", "memory://store"])
def test_a_failed_save_leaves_nothing(tmp_path, url):
    root = str(tmp_path / "store") if url == "local" else url
    target = f"{root}/model/{'b' * 32}"

    def disk_full(path: str) -> None:
        Path(path, "half.bin").write_bytes(b"\x00" * 10)
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(OSError, match="No space left"):
        storage.publish(target, disk_full)
    fs, path = fsspec.core.url_to_fs(f"{root}/model")
    assert not fs.exists(path) or fs.ls(path) == []


def test_a_save_that_writes_outside_its_directory_fails_and_leaves_no_version(tmp_path):
    store = tmp_path / "store"
    target = f"{store}/model/{'e' * 32}"

    def escape(path: str) -> None:
        write_weights(path)
        Path(path, "..", "x").write_text("beside the version")
        os.makedirs(os.path.join(path, "..", "..", "elsewhere"))
        Path(path, "..", "..", "elsewhere", "y").write_text("at the store's top")

    with pytest.raises(storage.SavedOutside, match=r"wrote outside its version directory.*: elsewhere/y, model/x \("):
        storage.publish(target, escape)
    assert sorted(p.name for p in (store / "model").iterdir()) == ["x"], "no version, the stray file left"


def test_a_save_that_writes_beside_its_directory_fails_on_a_remote_store_too():
    def escape(path: str) -> None:
        write_weights(path)
        Path(path, "..", "x").write_text("beside the version")

    with pytest.raises(storage.SavedOutside, match=r"wrote outside its version directory.*: x \("):
        storage.publish("memory://escapes/model/" + "e" * 32, escape)
    fs, _ = fsspec.core.url_to_fs("memory://escapes")
    assert not fs.exists("/escapes/model")


def test_versions_saved_beside_each_other_are_not_taken_for_strays(tmp_path):
    """Another training's version appearing meanwhile, files left from before, and files in
    other versions are not written outside by this save.
    """
    store = tmp_path / "store"
    (store / "model").mkdir(parents=True)
    (store / "README").write_text("left by the operator")
    storage.publish(f"{store}/model/{'a' * 32}", write_weights)

    def another_training_meanwhile(path: str) -> None:
        write_weights(path)
        storage.publish(f"{store}/model/{'b' * 32}", write_weights)
        storage.publish(f"{store}/other_model/{'c' * 32}", write_weights)

    storage.publish(f"{store}/model/{'d' * 32}", another_training_meanwhile)
    assert sorted(p.name for p in (store / "model").iterdir()) == ["a" * 32, "b" * 32, "d" * 32]


def test_a_version_goes_through_a_remote_store_and_back(tmp_path):
    url = "memory://models/model/" + "c" * 32
    storage.publish(url, write_weights)
    fs, _ = fsspec.core.url_to_fs(url)
    assert [p.rsplit("/", 1)[1] for p in fs.ls("/models/model", detail=False)] == ["c" * 32]  # no partial left
    copy = storage.local_copy(url, into=str(tmp_path / "copy"))
    assert Path(copy, "weights.bin").read_bytes() == b"\x00" * 1000
    assert Path(copy, "sub", "config.json").read_text() == "{}"
    with pytest.raises(FileNotFoundError, match="missing"):
        storage.local_copy("memory://models/model/" + "d" * 32)


def test_an_unusable_store_is_refused_at_start(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(Exception, match=r"cannot use the model store .*file/store"):
        storage.ModelStore(str(blocker / "store")).check()


def test_version_ids():
    assert version_id("text_classifier", 3) == "text_classifier@3"
    assert parse_version_id("text_classifier@3") == ("text_classifier", 3)
    assert parse_version_id("a@b@12") == ("a@b", 12)
    assert parse_version_id(f"x@{2**31 - 1}") == ("x", 2**31 - 1)
    for name in ("text_classifier", "x@", "@3", "x@03", "x@0", "x@-1", "x@3a", f"x@{2**31}", "x@" + "9" * 40):
        assert parse_version_id(name) is None, name
