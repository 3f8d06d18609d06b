"""What the client tests share: the API key of their servers, and a TCP proxy that drops
the first connection's answer (a server killed mid-answer, as the client sees it)."""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator

__all__ = ["KEY", "Proxy", "answer_dropping_proxy"]

KEY = "client-test-key"


class Proxy(str):
    """The proxy's URL; ``dropped``: how many answers it dropped."""

    dropped: int = 0


def _pipe(source: socket.socket, target: socket.socket, proxy: Proxy | None) -> None:
    """Copy ``source`` to ``target`` until either closes; with ``proxy``, close both at the
    first bytes instead (the request was received and run, its answer never arrives)."""
    with contextlib.suppress(OSError):
        while chunk := source.recv(65536):
            if proxy is not None:
                proxy.dropped += 1
                break
            target.sendall(chunk)
    for sock in (source, target):
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()


@contextlib.contextmanager
def answer_dropping_proxy(upstream: str, drops: int = 1) -> Iterator[Proxy]:
    """A proxy on 127.0.0.1 to ``upstream`` (``http://127.0.0.1:PORT``) whose first
    ``drops`` connections pass the request on and close without the answer.
    """
    host, port = upstream.removeprefix("http://").split(":")
    listener = socket.create_server(("127.0.0.1", 0))
    proxy = Proxy(f"http://127.0.0.1:{listener.getsockname()[1]}")
    connections = {"count": 0}

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                server = socket.create_connection((host, int(port)))
                connections["count"] += 1
                dropping = proxy if connections["count"] <= drops else None
                threading.Thread(target=_pipe, args=(client, server, None), daemon=True).start()
                threading.Thread(target=_pipe, args=(server, client, dropping), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield proxy
    finally:
        listener.close()
