"""A real local Ray cluster of two nodes on this machine (a second raylet is a second node),
for the Ray executor's tests and benchmarks.

Ray binds every interface and probes an outside address to learn its own: the cluster, the
servers using it and their clients all live in a network namespace of their own that has
only loopback (:func:`loopback_namespace`). The nodes are ``ray start --block`` processes,
stopped by their pid (never ``ray stop``, which stops every Ray process on the machine).
"""

from __future__ import annotations

import contextlib
import ctypes
import fcntl
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_CLONE_NEWNET = 0x40000000
_SIOCGIFFLAGS, _SIOCSIFFLAGS, _IFF_UP = 0x8913, 0x8914, 0x1
#: What the second node offers beside its CPU: two fake GPUs and a label.
NODE2_GPUS = 2
NODE2_LABEL = "zone=b"
#: A custom resource each node has one of.
SLOT = "slot"


@contextlib.contextmanager
def loopback_namespace() -> Iterator[None]:
    """Run this thread (and the processes it starts) in a fresh network namespace with only
    loopback up; back in the original one when the ``with`` block ends (keep the context
    manager referenced until then: a collected one goes back). Needs root (CAP_SYS_ADMIN).
    """
    libc = ctypes.CDLL(None, use_errno=True)
    original = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    try:
        if libc.unshare(_CLONE_NEWNET) != 0:
            error = ctypes.get_errno()
            raise OSError(error, f"a network namespace of our own needs root: {os.strerror(error)}")
        interfaces = [name for _, name in socket.if_nameindex()]
        if interfaces != ["lo"]:
            raise OSError(f"the new network namespace has interfaces {interfaces}, not only lo")
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            flags = struct.unpack("16sh22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, struct.pack("16sh22x", b"lo", 0)))[1]
            fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sh22x", b"lo", flags | _IFF_UP))
        yield
    finally:
        if libc.setns(original, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), "cannot return to the original network namespace")
        os.close(original)


class Cluster:
    """Two Ray nodes on 127.0.0.1: the head (``head_cpus`` CPUs) and node 2 (1 CPU, 2 fake
    GPUs, label zone=b), each with one :data:`SLOT`, each a ``ray start --block`` process of
    ours (start either, or both).
    """

    def __init__(self, workdir: Path, env: dict[str, str], head_cpus: int = 1) -> None:
        self.workdir = workdir
        self.head_cpus = head_cpus
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        # Short: Ray's socket paths live under it (a Unix socket path has at most 107 bytes).
        self.temp_dir = tempfile.mkdtemp(prefix="dlr-", dir="/tmp")
        self.env = {**os.environ, **env, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.head: subprocess.Popen[bytes] | None = None
        self.node2: subprocess.Popen[bytes] | None = None

    def _start(self, name: str, cpus: int, arguments: list[str]) -> subprocess.Popen[bytes]:
        log = self.workdir / f"{name}-{time.monotonic_ns()}.log"
        command = [shutil.which("ray") or "ray", "start", "--block", "--num-cpus", str(cpus), "--disable-usage-stats"]
        command += ["--resources", json.dumps({SLOT: 1})]
        process = subprocess.Popen(
            [*command, *arguments], env=self.env, stdout=log.open("wb"), stderr=subprocess.STDOUT
        )
        deadline = time.monotonic() + 90
        while "Ray runtime started" not in log.read_text(errors="replace"):
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                raise RuntimeError(f"Ray node {name} did not start:\n{log.read_text(errors='replace')}")
            time.sleep(0.2)
        return process

    def start_head(self) -> None:
        self.head = self._start(
            "head",
            self.head_cpus,
            ["--head", "--port", str(self.port), "--temp-dir", self.temp_dir, "--include-dashboard", "false"],
        )

    def start_node2(self) -> None:
        self.node2 = self._start(
            "node2",
            1,
            ["--address", self.address, "--num-gpus", str(NODE2_GPUS), "--labels", NODE2_LABEL],
        )

    @staticmethod
    def _stop(process: subprocess.Popen[bytes] | None, crash: bool) -> None:
        """Crash a node (SIGKILL its ``ray start``: Ray's reaper kills the node's processes
        at once), or stop it as ``ray stop`` does (SIGTERM: Ray drains it first, letting
        running actors go on for up to 30 s).
        """
        if process is None or process.poll() is not None:
            return
        process.send_signal(signal.SIGKILL if crash else signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def stop_node2(self, crash: bool = True) -> None:
        self._stop(self.node2, crash)
        self.node2 = None

    def stop_head(self, crash: bool = True) -> None:
        self._stop(self.head, crash)
        self.head = None

    def running(self) -> bool:
        return all(p is not None and p.poll() is None for p in (self.head, self.node2))

    def ensure_running(self) -> None:
        """Both nodes up (a test that stopped one may leave it so)."""
        if self.head is None or self.head.poll() is not None:
            self.stop_node2()  # a node outlives its head only to find it gone
            self.start_head()
        if self.node2 is None or self.node2.poll() is not None:
            self.start_node2()

    def leftovers(self) -> list[int]:
        """Pids of processes of this cluster still running (their command names its temp dir)."""
        pids = []
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError):
                    if self.temp_dir.encode() in (entry / "cmdline").read_bytes():
                        pids.append(int(entry.name))
        return pids

    def close(self) -> None:
        self.stop_node2(crash=False)
        self.stop_head(crash=False)
        deadline = time.monotonic() + 15
        while self.leftovers() and time.monotonic() < deadline:
            time.sleep(0.2)
        for pid in self.leftovers():  # ours: they name our temp dir
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
