"""What a worker process prints (plugin code's ``print``, a tqdm progress bar, a library's
warnings, C code writing to its file descriptors), logged by the server one line at a time.

A worker's standard output and error are a pipe the server reads (see
:func:`capture_output`); its own log lines go to the server's standard error directly. The
server splits what comes on both ``\\n`` and ``\\r``: a line redrawn with carriage returns (a
progress bar) is logged once, in its last state, when it ends, and no partial line ever
lands inside another log line (an access line, before this, could end up glued behind a
half-drawn bar).
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
from collections.abc import Callable

__all__ = ["MAX_LINE", "OutputLines", "WorkerOutput", "capture_output"]

LOG = logging.getLogger("deepaas_like.workers.output")
#: Longest line kept whole, in bytes; a longer one is logged in pieces of this size.
MAX_LINE = 16 * 1024
_ENDS = re.compile(rb"\r\n|\r|\n")


class OutputLines:
    """Splits bytes into lines for ``emit``: a segment ended by ``\\n`` is a line; one
    ended by ``\\r`` is a redraw, kept (if it holds more than blanks) until the line ends,
    then logged alone in its last state. Blank lines are dropped.
    """

    def __init__(self, emit: Callable[[str], None]) -> None:
        self._emit = emit
        self._partial = b""
        self._drawn = b""  # the latest state of a line redrawn with \r

    def feed(self, data: bytes) -> None:
        """Take what the worker wrote next."""
        data = self._partial + data
        start = 0
        for end in _ENDS.finditer(data):
            segment = data[start : end.start()]
            start = end.end()
            if end.group() == b"\r":
                if segment.strip():
                    self._drawn = segment
                continue
            self._line(segment)
        self._partial = data[start:]
        while len(self._partial) > MAX_LINE:  # a line without end: logged in pieces
            self._line(self._partial[:MAX_LINE])
            self._partial = self._partial[MAX_LINE:]

    def close(self) -> None:
        """The output ended: log what is left of the last line."""
        partial, self._partial = self._partial, b""
        self._line(partial)

    def _line(self, segment: bytes) -> None:
        if not segment.strip():
            segment = self._drawn
        self._drawn = b""
        if segment.strip():
            self._emit(segment.decode(errors="replace").rstrip())


class WorkerOutput:
    """The server's end of a worker's output pipe (``fd``, made non-blocking), read by the
    event loop; each line is logged at INFO by ``deepaas_like.workers.output`` as
    ``<what>: <line>`` (``what``: e.g. ``model demo, worker process 1234``).
    """

    def __init__(self, fd: int, what: str) -> None:
        self.fd = fd
        self.what = what
        self.lines = OutputLines(self._log)
        os.set_blocking(fd, False)
        self._loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
        self._loop.add_reader(fd, self.read)

    def _log(self, line: str) -> None:
        LOG.info("%s: %s", self.what, line)

    def read(self) -> None:
        """Log what has arrived, without waiting; at the end of the output, stop reading."""
        while self._loop is not None:
            try:
                data = os.read(self.fd, 64 * 1024)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if not data:  # every writer has closed it (the worker and what it started)
                self.close()
                return
            self.lines.feed(data)

    def close(self) -> None:
        """Stop reading (in the event loop's thread): what is left of the last line is logged."""
        if self._loop is None:
            return
        self._loop.remove_reader(self.fd)
        self._loop = None
        self.lines.close()
        os.close(self.fd)


def capture_output(fd: int) -> int:
    """In a worker process: send its standard output and error (file descriptors 1 and 2,
    so C code's writes too) to ``fd``, the output pipe the server reads, and close ``fd``.
    Returns a new descriptor of the former standard error, for the worker's log lines.
    """
    import sys

    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.flush()
    log_fd = os.dup(2)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for stream in (sys.stdout, sys.stderr):
        if stream is not None:
            stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    return log_fd
