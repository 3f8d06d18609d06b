from __future__ import annotations

from pathlib import Path

import pytest

from tests.conftest import TEST_PLUGINS, make_plugin_site
from tests.versions.helpers import MODEL


@pytest.fixture
def versioned_env(tmp_path: Path) -> dict[str, str]:
    """Env under which the test plugins, and ``versioned`` (its trainings make versions), are installed."""
    return make_plugin_site(tmp_path / "site", {**TEST_PLUGINS, MODEL: MODEL})
