"""The identity of a database URL that upload folders carry: one per database, whatever the
spelling of its URL, and never its password.
"""

import os

from deepaas_like.database import database_identity


def test_one_identity_per_database_whatever_its_spelling(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    absolute = os.path.join(str(tmp_path), "jobs.sqlite")
    tag = database_identity("sqlite:///jobs.sqlite")
    assert len(tag) == 8 and int(tag, 16) >= 0
    assert database_identity(f"sqlite+aiosqlite:///{absolute}") == tag, "driver and relative path do not count"
    assert database_identity("sqlite:///other.sqlite") != tag


def test_the_password_is_not_part_of_the_identity():
    assert database_identity("postgresql://u:secret@db/jobs") == database_identity(
        "postgresql+psycopg://u:other@db/jobs"
    )


def test_no_url_and_an_unparsable_one():
    assert database_identity(None) == "00000000"
    assert len(database_identity("not a url")) == 8
