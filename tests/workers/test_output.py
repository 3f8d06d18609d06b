"""What worker processes print reaches the server's log one line at a time (issue 28, item
5e): a progress bar redrawn with carriage returns is logged once, in its last state, and
never glued to another log line.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import requests

from deepaas_like.workers.output import MAX_LINE, OutputLines
from tests.conftest import make_plugin_site

PLUGIN = """
import os
import sys
import time

from tqdm import tqdm

def get_metadata():
    return {"name": "bars"}

def get_predict_args():
    return {}

def predict():
    print("loading the weights")
    for _ in tqdm(range(5), desc="encoding", file=sys.stderr, mininterval=0, ncols=60):
        time.sleep(0.05)
    sys.stderr.write("half a line, then")
    sys.stderr.flush()
    time.sleep(0.3)  # an access line may be logged meanwhile: it must not be glued to this one
    sys.stderr.write(" its end\\n")
    os.write(1, b"written by C code\\n")
    return {"ok": True}
"""


def _lines(data: list[bytes]) -> tuple[list[str], OutputLines]:
    emitted: list[str] = []
    lines = OutputLines(emitted.append)
    for chunk in data:
        lines.feed(chunk)
    return emitted, lines


def test_a_redrawn_line_is_kept_in_its_last_state():
    emitted, lines = _lines([b"\r  0%|   | 0/3", b"\r 33%|#  | 1/3\r 67%|## | 2", b"/3\r100%|###| 3/3\n", b"next\r\n"])
    assert emitted == ["100%|###| 3/3", "next"]
    lines.feed(b"no end yet")
    assert emitted == ["100%|###| 3/3", "next"]
    lines.close()
    assert emitted[-1] == "no end yet"


def test_a_cleared_bar_and_blank_lines():
    # tqdm(leave=False) clears its bar with blanks: the line then holds its last drawn state.
    emitted, _ = _lines([b"\r 50%|#  |\r100%|###|\r          \r\n", b"\n\n", b"text\n"])
    assert emitted == ["100%|###|", "text"]


def test_a_line_without_end_is_logged_in_bounded_pieces():
    emitted, lines = _lines([b"x" * (MAX_LINE * 2 + 10)])
    assert emitted == ["x" * MAX_LINE, "x" * MAX_LINE]
    lines.close()
    assert emitted[-1] == "x" * 10


def test_a_plugin_s_progress_bar_is_logged_per_line(run_server, tmp_path: Path):
    site = tmp_path / "site"
    site.mkdir()
    (site / "bars_plugin.py").write_text(PLUGIN)
    server = run_server("bars", env=make_plugin_site(site, {"bars": "bars_plugin"}))
    answer = requests.post(server + "/v2/models/bars/predict/", timeout=60)
    assert answer.status_code == 200, answer.text
    for _ in range(20):  # other requests, whose access lines come while the plugin prints
        requests.get(server + "/v2/models/", timeout=60)
    deadline = time.monotonic() + 30
    while "written by C code" not in server.log.read_text() and time.monotonic() < deadline:
        time.sleep(0.1)
    log = server.log.read_text()
    assert "\r" not in log
    printed = [
        line.split(": ", 1)[1]
        for line in log.splitlines()
        if re.match(r"\S+ \S+ \d+ INFO deepaas_like\.workers\.output \[-\] model bars, worker process \d+: ", line)
    ]
    bars = [line for line in printed if line.startswith("encoding")]
    assert len(bars) == 1 and re.match(r"encoding: 100%\|.*\| 5/5 ", bars[0]), printed
    assert [line for line in printed if not line.startswith("encoding")] == [
        "loading the weights",
        "half a line, then its end",
        "written by C code",
    ]
    # Every line of the server's log is a whole log line (time, pid, level, logger...).
    for line in log.splitlines():
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} \d+ [A-Z]+ \S+ \[", line), line
