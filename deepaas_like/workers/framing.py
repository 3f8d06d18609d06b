"""Messages over a socket between the server and a worker process (or the Ray driver): a
pickle (protocol 5) behind an 8-byte little-endian length.

What ``multiprocessing.Connection`` does, with fewer system calls and less work per message:
one ``writev`` per message sent (the header and the pickle, not copied together), one ``read``
for as many messages as have arrived (``Connection.recv`` reads a header, then the body, one
message at a time), and plain ``pickle`` rather than a ``ForkingPickler`` made per message
(nothing sent here is a file descriptor or a socket). ``benchmarks/results/peers-*.md`` has the
measured effect.

A descriptor an event loop watches may be non-blocking (uvloop's ``add_reader`` makes it so):
then a read or a write may find the socket empty or full, which ``Connection.recv`` and
``Connection.send`` take for an error (``BlockingIOError``). Here a would-block is never an
error: :class:`Reader` keeps a message that has not fully arrived, :func:`send` waits for room,
and :class:`Writer` keeps what the socket could not take for later (:class:`LoopWriter`: until
the event loop sees room).
"""

from __future__ import annotations

import asyncio
import collections
import os
import pickle
import select
import struct
import time
from collections.abc import Callable
from typing import Any

__all__ = ["HEADER", "READ_SIZE", "LoopWriter", "Reader", "Writer", "loads", "send"]

HEADER = struct.Struct("<Q")
#: Bytes asked of the kernel per read at least (a larger message asks for what it still needs).
READ_SIZE = 256 * 1024
#: Buffers given to one ``writev`` at most (Linux's IOV_MAX is 1024).
_WRITEV_BUFFERS = 64


def loads(frame: bytes | memoryview) -> Any:
    """The message a frame holds. Raises what unpickling raises."""
    return pickle.loads(frame)


def _frame(message: Any) -> tuple[bytes, bytes]:
    payload = pickle.dumps(message, protocol=5)
    return HEADER.pack(len(payload)), payload


def _consume(buffers: collections.deque[memoryview], written: int) -> None:
    """Drop the first ``written`` bytes of ``buffers``."""
    while written:
        first = buffers[0]
        if written < len(first):
            buffers[0] = first[written:]
            return
        written -= len(first)
        buffers.popleft()


def _wait_writable(fd: int, timeout: float | None) -> bool:
    """Wait until ``fd`` can take more bytes (or is closed at the other end: the next
    write says so) for up to ``timeout`` seconds (None: without end); False on a timeout.
    """
    poller = select.poll()  # not select.select: it cannot watch a descriptor over 1023
    poller.register(fd, select.POLLOUT)
    return bool(poller.poll(None if timeout is None else max(0, round(timeout * 1000))))


def send(fd: int, message: Any) -> None:
    """Pickle ``message`` and write it to ``fd`` as one frame, waiting for room as long as
    needed, whether ``fd`` is blocking or not.

    Raises what pickling raises (before anything is written) and ``OSError`` when the other
    end is gone.
    """
    writer = Writer(fd)
    if not writer.write(message):  # a large message the socket could not take at once
        writer.drain(None)


class Writer:
    """Writes frames to a non-blocking descriptor without ever waiting, for an event loop:
    what the socket cannot take now is kept, in order, and written by :meth:`flush` when
    the descriptor is writable again (``loop.add_writer``).
    """

    def __init__(self, fd: int) -> None:
        self._fd = fd
        self._pending: collections.deque[memoryview] = collections.deque()

    @property
    def pending(self) -> int:
        """Bytes written to this writer that the socket has not taken yet."""
        return sum(len(buffer) for buffer in self._pending)

    def write(self, message: Any) -> bool:
        """Frame ``message`` and write as much as the socket takes now (after what is
        pending); True when nothing is left pending.

        Raises what pickling raises (nothing is kept then) and ``OSError`` other than a
        would-block when the other end is gone.
        """
        header, payload = _frame(message)
        if self._pending:
            self._pending += (memoryview(header), memoryview(payload))
            return self.flush()
        # Nothing pending (the common case): one writev, and nothing kept if it takes all.
        try:
            written = os.writev(self._fd, [header, payload])
        except BlockingIOError:
            written = 0
        if written == len(header) + len(payload):
            return True
        self._pending += (memoryview(header), memoryview(payload))
        _consume(self._pending, written)
        return False

    def flush(self) -> bool:
        """Write what is pending as far as the socket takes it now; True when all is written.
        Raises ``OSError`` other than a would-block when the other end is gone.
        """
        while self._pending:
            buffers = [self._pending[i] for i in range(min(len(self._pending), _WRITEV_BUFFERS))]
            try:
                written = os.writev(self._fd, buffers)
            except BlockingIOError:
                return False
            _consume(self._pending, written)
        return True

    def drain(self, timeout: float | None) -> bool:
        """Write everything pending, waiting up to ``timeout`` seconds in all for room (None:
        as long as needed); True when all is written. Raises ``OSError`` when the other end
        is gone.
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self.flush():
            left = None if deadline is None else deadline - time.monotonic()
            if (left is not None and left <= 0) or not _wait_writable(self._fd, left):
                return False
        return True


class LoopWriter(Writer):
    """A :class:`Writer` that an event loop flushes, for the loop's thread: :meth:`send`
    never waits, and while anything is pending ``loop.add_writer`` watches the descriptor
    (non-blocking) and writes more as the reader takes it. ``on_lost()`` is called when such
    a later write finds the other end gone.
    """

    def __init__(self, fd: int, loop: asyncio.AbstractEventLoop, on_lost: Callable[[], None]) -> None:
        super().__init__(fd)
        self._loop = loop
        self._on_lost = on_lost

    def send(self, message: Any) -> None:
        """Write ``message`` (after what is pending) as far as the socket takes it now, and
        the rest when it can. Raises what pickling raises (nothing is kept) and ``OSError``
        when the other end is gone (nothing is kept or watched any more).
        """
        watched = bool(self._pending)
        try:
            written = self.write(message)
        except OSError:
            self._drop()
            raise
        if not written and not watched:
            self._loop.add_writer(self._fd, self._writable)

    def _writable(self) -> None:
        try:
            written = self.flush()
        except OSError:
            self._drop()
            self._on_lost()
            return
        if written:
            self._loop.remove_writer(self._fd)

    def _drop(self) -> None:
        self.unwatch()
        self._pending.clear()

    def unwatch(self) -> None:
        """Stop writing from the loop (what is pending stays pending)."""
        self._loop.remove_writer(self._fd)


class Reader:
    """Cuts the bytes read from a socket into frames (pickles: :func:`pickle.loads` each),
    whatever the reads' boundaries.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._needed = HEADER.size  # bytes the next message still needs

    def read_size(self) -> int:
        """How many bytes to ask for in the next read."""
        return max(READ_SIZE, self._needed - len(self._buffer))

    def read(self, fd: int) -> list[bytes | memoryview] | None:
        """One read of ``fd`` (waiting for it when ``fd`` is blocking): the frames it
        completes, none when a non-blocking ``fd`` had nothing after all (a would-block is
        never an end), or None at the end of the stream (end of file, or an error: the other
        end is gone).
        """
        try:
            data = os.read(fd, self.read_size())
        except BlockingIOError:
            return []
        except OSError:
            return None
        return self.feed(data) if data else None

    def feed(self, data: bytes) -> list[bytes | memoryview]:
        """The frames ``data`` completes, in order (none when it ends mid-message)."""
        if not self._buffer and len(data) >= HEADER.size:
            (size,) = HEADER.unpack_from(data)
            if len(data) == HEADER.size + size:  # the common case: exactly one message
                return [memoryview(data)[HEADER.size :]]
        self._buffer += data
        frames: list[bytes | memoryview] = []
        start = 0
        buffer = self._buffer
        while len(buffer) - start >= HEADER.size:
            (size,) = HEADER.unpack_from(buffer, start)
            end = start + HEADER.size + size
            if end > len(buffer):
                self._needed = end - start
                break
            frame = bytes(buffer[start + HEADER.size : end])
            start = end
            frames.append(frame)
        else:
            self._needed = HEADER.size
        del buffer[:start]
        return frames
