"""The access log's lines: kept by the request, logged in blocks within FLUSH_SECONDS; a
request whose client left gets one too."""

from __future__ import annotations

import asyncio
import logging
import re
import time

import requests

from deepaas_like import logs
from deepaas_like.cmd.process_server import access_log
from deepaas_like.cmd.process_server.access_log import AccessLines

VALUES = ("127.0.0.1", "POST", "/v2/models/demo/predict/", 1, 1, 200, 262, 0.0025, "curl/8.5.0", "req-7")


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []
        self.addFilter(logs.RequestIdFilter())

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def _logger(name: str) -> tuple[logging.Logger, _Records]:
    logger = logging.getLogger(name)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    handler = _Records()
    logger.handlers[:] = [handler]
    return logger, handler


def test_lines_are_logged_together_soon_after_their_requests():
    logger, handler = _logger("test.access.blocks")
    lines = AccessLines(logger)

    async def requests() -> float:
        lines.add(VALUES)
        ended = time.time()
        lines.add(VALUES[:-1] + ("req-8",))
        assert handler.records == [], "nothing is logged on the request's path"
        await asyncio.sleep(access_log.FLUSH_SECONDS + 0.1)
        return ended

    ended = asyncio.run(requests())
    assert [r.getMessage() for r in handler.records] == [
        '127.0.0.1 "POST /v2/models/demo/predict/ HTTP/1.1" 200 262 0.002500 "curl/8.5.0" req-7',
        '127.0.0.1 "POST /v2/models/demo/predict/ HTTP/1.1" 200 262 0.002500 "curl/8.5.0" req-8',
    ]
    assert [r.request_id for r in handler.records] == ["req-7", "req-8"]  # type: ignore[attr-defined]
    assert abs(handler.records[0].created - ended) < 0.05, "the record's time is the request's end"


def test_flush_logs_what_waits_and_json_records_carry_the_fields():
    logger, handler = _logger("test.access.flush")
    lines = AccessLines(logger, structured=True)

    async def one_request() -> None:
        lines.add(VALUES)
        lines.flush()  # as at shutdown

    asyncio.run(one_request())
    (record,) = handler.records
    assert (record.method, record.path, record.status, record.seconds) == (  # type: ignore[attr-defined]
        "POST",
        "/v2/models/demo/predict/",
        200,
        0.0025,
    )
    lines.flush()
    assert len(handler.records) == 1, "a line is logged once"


def test_nothing_is_kept_when_the_logger_is_off():
    logger, _ = _logger("test.access.off")
    logger.setLevel(logging.WARNING)
    assert not AccessLines(logger).enabled  # aiohttp then never calls the access logger


def test_a_client_that_leaves_an_event_stream_is_counted_and_logged_as_499(run_server, plugin_env):
    """nginx's "client closed request" (issue 26, item 7): before, such a stream was counted
    as a 500 and had no access line.
    """
    server = run_server("slow", env=plugin_env)
    training = requests.post(server + "/v2/models/slow/train/", data={"seconds": "120"}, timeout=30).json()
    path = f"/v2/models/slow/train/{training['uuid']}/events"
    with requests.get(server + path, stream=True, timeout=30, headers={"X-Request-ID": "left-early"}) as stream:
        assert stream.status_code == 200
        assert next(stream.iter_lines()).startswith(b"event: job")
    # The stream is closed: the server notices as the connection ends.
    route = 'method="GET",model="slow",route="/v2/models/{model_name}/train/{uuid}/events"'
    deadline = time.monotonic() + 60  # a liveness bound
    while f'deepaas_like_requests_total{{{route},status="499"}} 1.0' not in (text := _metrics(server)):
        assert time.monotonic() < deadline, f"never counted as 499:\n{text}"
        time.sleep(0.1)
    assert f'{route},status="500"' not in text
    line = re.compile(rf'"GET {re.escape(path)} HTTP/1.1" 499 [1-9]\d* \d+\.\d+ "[^"]*" left-early')
    while not line.search(server.log.read_text()):
        assert time.monotonic() < deadline, "no access line for the stream"
        time.sleep(0.1)
    requests.delete(server + f"/v2/models/slow/train/{training['uuid']}", timeout=30)


def _metrics(server: str) -> str:
    return requests.get(server + "/metrics", timeout=30).text
