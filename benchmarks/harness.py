"""Process and HTTP plumbing for ``serving.py``: free ports, servers started and always stopped
by PID, readiness probes, and resident memory read from /proc.

Nothing here knows which server or plugin is measured; ``serving.py`` decides that.
"""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICK = os.sysconf("SC_CLK_TCK")
#: Every server this run started and has not stopped yet, so that a signal or an error stops them.
_STARTED: dict[int, Server] = {}


class BenchmarkError(Exception):
    """A server did not start, or a measurement could not be taken; the message says which."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


# ------------------------------------------------------------------------------ request bodies


@dataclass(frozen=True)
class Request:
    """One POST request: path on the server, body bytes and their Content-Type."""

    path: str
    body: bytes
    content_type: str


def form_request(path: str, **fields: str) -> Request:
    """An ``application/x-www-form-urlencoded`` POST of ``fields``."""
    from urllib.parse import urlencode

    return Request(path, urlencode(fields).encode(), "application/x-www-form-urlencoded")


def multipart_request(path: str, name: str, filename: str, content: bytes, content_type: str) -> Request:
    """A ``multipart/form-data`` POST with one file part (held in memory: small files only)."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f"--{boundary}\r\n"
            f'Content-Disposition: form-data; name="{name}"; filename="{filename}"\r\n'
            f"Content-Type: {content_type}\r\n\r\n"
        ).encode()
        + content
        + f"\r\n--{boundary}--\r\n".encode()
    )
    return Request(path, body, f"multipart/form-data; boundary={boundary}")


def post(port: int, request: Request, timeout: float = 10.0) -> tuple[int, bytes]:
    """Send ``request`` to 127.0.0.1:``port`` on a new connection; (status, body).

    Raises OSError (e.g. ConnectionRefusedError) when nothing answers.
    """
    connection = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        connection.request("POST", request.path, request.body, {"Content-Type": request.content_type})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


# ------------------------------------------------------------------------------------- servers


@dataclass
class Server:
    """A server process this run started; its output goes to ``log``."""

    label: str
    port: int
    process: subprocess.Popen
    log: Path
    started: float = field(default_factory=time.monotonic)  # time.monotonic() just before Popen

    @property
    def pid(self) -> int:
        return self.process.pid

    def tail(self, lines: int = 15) -> str:
        """The last lines of the server's output, for error messages."""
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def start_server(
    label: str, argv: list[str], port: int, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Server:
    """Start ``argv`` in a session of its own (so the terminal's Ctrl-C reaches only us)."""
    started = time.monotonic()
    with open(log, "wb") as output:
        process = subprocess.Popen(
            argv,
            stdout=output,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            start_new_session=True,
        )
    server = Server(label, port, process, log, started)
    _STARTED[server.pid] = server
    return server


def wait_until_predicts(server: Server, request: Request, timeout: float, interval: float = 0.02) -> float:
    """Poll ``request`` every ``interval`` s until it answers 200; seconds since the server's start.

    Raises BenchmarkError when the process exits or ``timeout`` s pass first.
    """
    deadline = server.started + timeout
    last = "no answer"
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise BenchmarkError(f"{server.label} exited with code {server.process.returncode}:\n{server.tail()}")
        try:
            status, body = post(server.port, request, timeout=max(1.0, deadline - time.monotonic()))
            if status == 200:
                return time.monotonic() - server.started
            last = f"HTTP {status}: {body[:300]!r}"
        except OSError as error:
            last = f"{type(error).__name__}: {error}"
        time.sleep(interval)
    raise BenchmarkError(f"{server.label} gave no 200 within {timeout:.0f} s (last: {last}):\n{server.tail()}")


def stop_server(server: Server, grace: float = 10.0) -> None:
    """SIGTERM the server, wait ``grace`` s, then SIGKILL it and every process it left behind.

    Processes are signalled by PID only: the server, the descendants seen before stopping it, and
    the server's own process group.
    """
    _STARTED.pop(server.pid, None)
    if server.process.poll() is None:
        family = descendants(server.pid)
        with contextlib.suppress(ProcessLookupError):
            server.process.send_signal(signal.SIGTERM)
        try:
            server.process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                server.process.kill()
            server.process.wait(timeout=grace)
        for pid in family:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
    # Whatever is left in the server's own process group (start_server gave it a session of its
    # own, so the group id is its PID): helpers that outlived their parent and were reparented.
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(server.pid, signal.SIGKILL)


def stop_all() -> None:
    """Stop every server still running (called on exit, error and Ctrl-C)."""
    for server in list(_STARTED.values()):
        stop_server(server, grace=5.0)


@contextlib.contextmanager
def running(
    label: str, argv: list[str], port: int, log: Path, env: dict[str, str] | None = None, cwd: Path | None = None
) -> Iterator[Server]:
    """Start a server for the ``with`` block; it is stopped when the block ends, however it ends."""
    server = start_server(label, argv, port, log, env, cwd)
    try:
        yield server
    finally:
        stop_server(server)


# -------------------------------------------------------------------------------------- memory


def children(pid: int) -> list[int]:
    """PIDs of the direct children of ``pid`` (from /proc/PID/task/*/children)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError), open(f"/proc/{pid}/task/{task}/children") as handle:
                found.extend(int(child) for child in handle.read().split())
    return found


def descendants(pid: int) -> list[int]:
    """PIDs of every process below ``pid`` in the process tree (not ``pid`` itself)."""
    found: list[int] = []
    pending = [pid]
    while pending:
        for child in children(pending.pop()):
            found.append(child)
            pending.append(child)
    return found


def rss_bytes(pid: int) -> int:
    """Resident set size of one process in bytes; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/statm") as handle:
            return int(handle.read().split()[1]) * _PAGE
    except (OSError, IndexError, ValueError):
        return 0


def tree_rss_bytes(pid: int) -> int:
    """Summed resident set size, in bytes, of ``pid`` and all its descendants."""
    return sum(rss_bytes(p) for p in [pid, *descendants(pid)])


class RssSampler(threading.Thread):
    """Samples the summed RSS of a process tree every ``interval`` s until stopped; bytes."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.samples: list[int] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            self.samples.append(tree_rss_bytes(self.pid))
            self._stop_event.wait(self.interval)

    def stop(self) -> int:
        """Stop sampling; the peak in bytes."""
        self._stop_event.set()
        self.join()
        return max(self.samples, default=0)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of one process (all its threads), in seconds; 0 if it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()  # the name may hold spaces
        return (int(fields[11]) + int(fields[12])) / _TICK  # utime, stime: fields 14 and 15 of stat
    except (OSError, IndexError, ValueError):
        return 0.0


def tree_cpu_seconds(pid: int) -> float:
    """Summed CPU seconds of ``pid`` and all its descendants (only those alive now)."""
    return sum(cpu_seconds(p) for p in [pid, *descendants(pid)])


def machine_busy_seconds() -> float:
    """CPU seconds all cores spent busy since boot (user, nice, system, irq, softirq, steal),
    from the first line of /proc/stat."""
    with open("/proc/stat") as handle:
        ticks = [int(value) for value in handle.readline().split()[1:]]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (ticks + [0] * 8)[:8]
    return (user + nice + system + irq + softirq + steal) / _TICK


def own_cpu_seconds() -> float:
    """CPU seconds of this process and of every child it has waited for (servers, wrk, pip)."""
    times = os.times()
    return times.user + times.system + times.children_user + times.children_system
