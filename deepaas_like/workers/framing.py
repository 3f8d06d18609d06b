"""Messages over a socket between the server and a worker process: a pickle (protocol 5)
behind an 8-byte little-endian length.

What ``multiprocessing.Connection`` does, with fewer system calls and less work per message:
one ``writev`` per message sent (the header and the pickle, not copied together), one ``read``
for as many messages as have arrived (``Connection.recv`` reads a header, then the body, one
message at a time), and plain ``pickle`` rather than a ``ForkingPickler`` made per message
(nothing sent here is a file descriptor or a socket). ``benchmarks/results/peers-*.md`` has the
measured effect.
"""

from __future__ import annotations

import os
import pickle
import struct
from typing import Any

HEADER = struct.Struct("<Q")
#: Bytes asked of the kernel per read at least (a larger message asks for what it still needs).
READ_SIZE = 256 * 1024


def loads(frame: bytes | memoryview) -> Any:
    """The message a frame holds. Raises what unpickling raises."""
    return pickle.loads(frame)


def send(fd: int, message: Any) -> None:
    """Pickle ``message`` and write it to ``fd`` (blocking) as one frame.

    Raises what pickling raises (before anything is written) and ``OSError`` when the other
    end is gone.
    """
    payload = pickle.dumps(message, protocol=5)
    header = HEADER.pack(len(payload))
    written = os.writev(fd, [header, payload])
    if written < len(header) + len(payload):  # a large message the socket's buffer could not take at once
        rest = memoryview(header + payload)[written:]
        while rest:
            rest = rest[os.write(fd, rest) :]


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
