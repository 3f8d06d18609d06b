"""Discovery through entry points (stevedore) and the plugin wrapper around hooks."""

import io
import pickle
from multiprocessing.reduction import ForkingPickler

import marshmallow
import pytest

from deepaas_like.exceptions import HookNotImplemented, PluginLoadError
from deepaas_like.model.loading import installed_models, load_plugin, resolve_model_names
from deepaas_like.model.plugin import Plugin
from deepaas_like.results import FileResult, to_transport


def test_installed_models_lists_without_importing(plugin_path):
    names = installed_models()
    assert {"demo", "deepaas_style", "broken", "class_style"} <= set(names)


def test_resolve_model_names(plugin_path):
    assert resolve_model_names(["demo", "demo,".rstrip(",")]) == ["demo"]
    assert "demo" in resolve_model_names([])
    with pytest.raises(PluginLoadError, match=r"'nope' is not installed.*installed: .*demo"):
        resolve_model_names(["nope"])


def test_load_module_and_class(plugin_path):
    assert load_plugin("deepaas_style").__name__ == "deepaas_style"
    assert type(load_plugin("class_style")).__name__ == "Model"
    with pytest.raises(PluginLoadError, match="broken.*ModuleNotFoundError"):
        load_plugin("broken")


def test_describe_survives_pickling(plugin_path):
    description = Plugin.load("deepaas_style").describe()
    copy = pickle.loads(ForkingPickler.dumps(description))  # as a worker sends it
    assert set(copy.predict_args) == {"data", "extra", "threshold", "labels", "accept"}
    assert copy.predict_args["threshold"].load_default == 0.5
    assert copy.train_args["sleep"].load_default is marshmallow.missing
    assert set(copy.response_fields) == {"filename", "size", "label", "labels", "threshold", "extra"}
    assert copy.metadata["author"] == "Jane Doe" and copy.batch is False


def test_missing_hooks(plugin_path):
    plugin = Plugin.load("predict_only")
    description = plugin.describe()
    assert description.predict_args == {} and description.train_args is None
    with pytest.raises(HookNotImplemented, match="train"):
        plugin.call("train", {})
    with pytest.raises(HookNotImplemented):
        plugin.call("get_metadata", {})
    assert Plugin.load("class_style").describe().train_args is None, "BaseModel.train is not a training"


def test_to_transport(tmp_path):
    path = tmp_path / "out.png"
    path.write_bytes(b"png")
    assert to_transport(b"x") == b"x"
    assert to_transport(path) == FileResult(str(path))
    assert to_transport(open(path, "rb")) == FileResult(str(path))
    assert to_transport(io.BytesIO(b"zip")) == b"zip"
    assert to_transport({"a": 1}) == {"a": 1}
