"""The results directory's start-up check, as servers sharing one directory run it."""

import multiprocessing

import pytest

from deepaas_like.exceptions import StartupError
from deepaas_like.jobs.result_files import ResultFiles


def _check_often(directory: str, times: int) -> None:
    for _ in range(times):
        ResultFiles(directory).check()


def test_servers_starting_together_on_one_directory_all_pass_the_check(tmp_path):
    # Two servers (one machine, or one shared volume) start at once: neither may take the
    # other's probe file for its own.
    context = multiprocessing.get_context("fork")
    checkers = [context.Process(target=_check_often, args=(str(tmp_path), 2000)) for _ in range(4)]
    for checker in checkers:
        checker.start()
    for checker in checkers:
        checker.join(60)
    assert [checker.exitcode for checker in checkers] == [0, 0, 0, 0]
    assert list(tmp_path.iterdir()) == [], "no probe is left behind"


def test_a_directory_that_cannot_be_written_stops_the_start(tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("")
    with pytest.raises(StartupError, match="cannot write in the results directory .*file"):
        ResultFiles(str(blocked / "results")).check()
