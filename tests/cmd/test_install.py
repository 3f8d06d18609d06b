"""``deepaas-like-cli install``: a plugin whose requirements pin ``deepaas~=2.1.0`` and
``webargs~=5.5`` installs beside the server without changing its packages, in a throwaway
virtual environment made with the lock; the real DEEPaaS 2.6.0 can sit beside it too.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from deepaas_like.cmd.install import plan
from tests.conftest import ROOT, start_server

PINNED_PLUGIN = Path(__file__).resolve().parent.parent / "fixtures" / "packages" / "pinned_plugin"
QUIET_PIP = {"PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_ROOT_USER_ACTION": "ignore"}


def test_plan_leaves_out_deepaas_and_what_would_change_the_server():
    server = {"webargs": "8.7.1", "marshmallow": "3.26.2", "aiohttp": "3.14.5"}
    requirements = [
        "deepaas~=2.1.0",
        "webargs~=5.5",
        "marshmallow>=3",
        "numpy>=1.20",
        "pytest; extra == 'test'",
        "gpu-lib; extra == 'gpu'",
        "tomli; python_version < '3.0'",
    ]
    planned = plan("plugin", requirements, ["gpu"], server)
    assert planned.install == ["marshmallow>=3", "numpy>=1.20", 'gpu-lib; extra == "gpu"']
    assert [reason.split(":")[0] for reason in planned.left_out] == ["deepaas~=2.1.0", "webargs~=5.5"]
    assert "keeping webargs 8.7.1" in planned.left_out[1]


def run(*command: str | Path, check: bool = True) -> subprocess.CompletedProcess:
    process = subprocess.run(
        [str(part) for part in command], capture_output=True, text=True, timeout=600, env={**os.environ, **QUIET_PIP}
    )
    if check and process.returncode != 0:
        raise AssertionError(f"{command} failed:\n{process.stdout}\n{process.stderr}")
    return process


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtual environment with the server alone, installed with the lock."""
    root = tmp_path_factory.mktemp("throwaway")
    run(sys.executable, "-m", "venv", root / "venv")
    bin_dir = root / "venv" / "bin"
    run(bin_dir / "pip", "install", "-q", "-c", ROOT / "constraints.txt", "-e", ROOT)
    return bin_dir


def predict(bin_dir: Path, workdir: Path) -> dict:
    server = start_server(["pinned"], workdir, program=str(bin_dir / "deepaas-like-run"))
    try:
        answer = requests.post(server + "/v2/models/pinned/predict/", files={"data": ("x.bin", b"12345")})
        assert answer.status_code == 200, answer.text
        return answer.json()["predictions"]
    finally:
        server.stop()


def test_a_plugin_pinning_old_deepaas_dependencies(venv, tmp_path):
    plugin = shutil.copytree(PINNED_PLUGIN, tmp_path / "pinned_plugin")
    webargs_before = run(venv / "python", "-c", "import webargs; print(webargs.__version__)").stdout.strip()
    installed = run(venv / "deepaas-like-cli", "install", plugin)
    assert "left out deepaas~=2.1.0: deepaas_like provides" in installed.stdout
    assert f"left out webargs~=5.5: keeping webargs {webargs_before}" in installed.stdout
    assert run(venv / "python", "-c", "import webargs; print(webargs.__version__)").stdout.strip() == webargs_before
    assert predict(venv, tmp_path / "one") == {
        "size": 5,
        "upload_class": "deepaas_like.model.files.UploadedFile",
        "six": True,
    }

    # The real DEEPaaS 2.6.0 beside the server, as doc/migration.rst says: the plugin's
    # isinstance check now holds against DEEPaaS's own class.
    run(venv / "pip", "install", "-q", "--no-deps", "deepaas==2.6.0")
    run(venv / "deepaas-like-cli", "install", "oslo.log")
    assert predict(venv, tmp_path / "two")["upload_class"] == "deepaas.model.v2.wrapper.UploadedFile"

    # What a plain ``pip install`` of such a plugin does: the server names the problem.
    run(venv / "pip", "install", "-q", "webargs==5.5.3")
    broken = run(venv / "deepaas-like-run", "--model-name", "pinned", check=False)
    assert broken.returncode == 1 and "Traceback" not in broken.stderr
    assert "deepaas-like-run: webargs 5.5.3 is installed, but deepaas_like needs webargs" in broken.stderr
    assert "deepaas-like-cli install" in broken.stderr
