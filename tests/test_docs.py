"""The documentation builds without a warning: every page in a toctree, every autodoc
target importable, every table well formed (``sphinx-build -W``, as ``tox -e docs``)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_docs_build_without_a_warning(tmp_path: Path) -> None:
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-q", "-E", "-W", "-b", "html", str(ROOT / "doc"), str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert build.returncode == 0, build.stderr
    assert (tmp_path / "api-reference.html").read_text().count("deepaas_like.client.Client") > 0
