"""What a start logs of the job database's schema (issue 28, item 5): alembic's own lines at
DEBUG only, and one INFO line when the schema changed (a fresh database, an upgrade).
"""

from __future__ import annotations

import asyncio
import logging
import re
from pathlib import Path

import pytest

from deepaas_like import logs
from deepaas_like.database import Database

REVISIONS = Path(__file__).resolve().parents[2] / "deepaas_like" / "database" / "migrations" / "revisions"


def _open(url: str, revision: str | None = None) -> None:
    async def run() -> None:
        if revision is None:
            database = await Database.open(url)
        else:  # a database left at an older schema, as an older release leaves it
            from sqlalchemy.ext.asyncio import create_async_engine

            database = Database(create_async_engine(url))
            await database.migrate(revision)
        await database.close()

    asyncio.run(run())


@pytest.fixture
def server_log(capsys, monkeypatch):
    """What the server's log (``logs.setup``, on stderr) shows: ``show(debug)`` -> lines."""
    root = logging.getLogger()
    monkeypatch.setattr(root, "handlers", list(root.handlers))
    monkeypatch.setattr(root, "level", root.level)
    # Importing mlflow (tests/versions/test_tracking_http.py does, when the whole suite is
    # collected) sets the "alembic" logger to WARNING with a handler of its own and no
    # propagation (mlflow.utils.logging_utils._configure_mlflow_loggers). A server without
    # --mlflow-tracking-uri never imports mlflow: the test starts from alembic's own state.
    alembic = logging.getLogger("alembic")
    monkeypatch.setattr(alembic, "handlers", [])
    monkeypatch.setattr(alembic, "propagate", True)
    level = alembic.level
    alembic.setLevel(logging.NOTSET)  # setLevel, unlike an attribute, clears the level caches

    def show(debug: bool = False) -> list[str]:
        logs.setup(debug)
        return capsys.readouterr().err

    yield show
    alembic.setLevel(level)


def _lines(text: str) -> list[str]:
    """Each line's level, logger and message (the time, pid and request id left out)."""
    return [" ".join(line.split(" ")[3:5] + line.split(" ")[6:]) for line in text.splitlines()]


def test_a_fresh_database_logs_one_line_and_alembic_only_at_debug(tmp_path, server_log):
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.sqlite'}"
    server_log()
    _open(url)
    assert _lines(server_log()) == [
        f"INFO deepaas_like.database.engine job database {url}: tables created (schema revision 0010)"
    ]
    _open(url)  # up to date: nothing at INFO
    assert _lines(server_log(debug=True)) == []
    _open(url)
    shown = _lines(server_log())
    assert any(line.startswith("DEBUG alembic.") for line in shown), shown
    assert not any(line.startswith("INFO alembic") for line in shown), shown


def test_an_upgrade_says_what_was_migrated(tmp_path, server_log):
    url = f"sqlite+aiosqlite:///{tmp_path / 'jobs.sqlite'}"
    _open(url, revision="0007")
    server_log()
    _open(url)
    assert _lines(server_log()) == [
        f"INFO deepaas_like.database.engine job database {url}: schema migrated from revision 0007 to 0010: "
        "Model versions; A model version belongs to the API key that owned the training that made it; "
        "Jobs keep the history of their metrics"
    ]


def test_a_password_is_hidden_in_the_line():
    from deepaas_like.database.engine import Migration

    line = Migration(None, "0010", ("Jobs",)).describe("postgresql+psycopg://jobs:***@db/jobs")
    assert line == "job database postgresql+psycopg://jobs:***@db/jobs: tables created (schema revision 0010)"


def test_revision_messages_name_no_tracker_items():
    for path in sorted(REVISIONS.glob("0*.py")):
        docstring = path.read_text().split('"""')[1]
        assert not re.search(r"\(issue \d+|item \d+\)", docstring), path.name
