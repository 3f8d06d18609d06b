"""The frames between the server and its worker processes, over a real socket pair."""

from __future__ import annotations

import asyncio
import os
import pickle
import socket
import threading

import pytest
import uvloop

from deepaas_like.workers import framing


def _read_all(sock: socket.socket, count: int, chunk: int | None = None) -> list[object]:
    reader = framing.Reader()
    messages: list[object] = []
    while len(messages) < count:
        data = os.read(sock.fileno(), chunk or reader.read_size())
        assert data, "the other end closed before every message came"
        messages += [framing.loads(frame) for frame in reader.feed(data)]
    return messages


def test_messages_arrive_whole_and_in_order_whatever_the_reads_boundaries():
    left, right = socket.socketpair()
    with left, right:
        sent = [("call", "predict", {"n": i}, f"id-{i}", None) for i in range(50)] + [None, b"\x00" * 1000]
        for message in sent:
            framing.send(left.fileno(), message)
        assert _read_all(right, len(sent), chunk=7) == sent  # reads that cut headers and bodies


def test_several_messages_in_one_read():
    left, right = socket.socketpair()
    with left, right:
        for n in range(3):
            framing.send(left.fileno(), n)
        reader = framing.Reader()
        frames = reader.feed(os.read(right.fileno(), reader.read_size()))
        assert [framing.loads(frame) for frame in frames] == [0, 1, 2]


def test_a_message_larger_than_the_socket_buffer():
    left, right = socket.socketpair()
    with left, right:
        big = os.urandom(8 * 1024 * 1024)  # far past a socket's buffer: writes are partial
        writer = threading.Thread(target=framing.send, args=(left.fileno(), ("ok", big)))
        writer.start()
        reader = framing.Reader()
        assert reader.read_size() == framing.READ_SIZE
        (message,) = _read_all(right, 1)
        writer.join()
        assert message == ("ok", big)


def test_a_frame_that_cannot_be_unpickled_leaves_the_next_ones_readable():
    left, right = socket.socketpair()
    with left, right:
        broken = pickle.dumps(("ok", 1))[:-3]
        os.write(left.fileno(), framing.HEADER.pack(len(broken)) + broken)
        framing.send(left.fileno(), ("ok", 2))
        reader = framing.Reader()
        frames: list[bytes | memoryview] = []
        while len(frames) < 2:
            frames += reader.feed(os.read(right.fileno(), reader.read_size()))
        with pytest.raises(pickle.UnpicklingError):
            framing.loads(frames[0])
        assert framing.loads(frames[1]) == ("ok", 2)


def test_an_unpicklable_message_writes_nothing():
    left, right = socket.socketpair()
    with left, right:
        with pytest.raises((pickle.PicklingError, TypeError, AttributeError)):
            framing.send(left.fileno(), lambda: None)
        framing.send(left.fileno(), "next")
        assert _read_all(right, 1) == ["next"]


def test_a_closed_peer_is_an_os_error():
    left, right = socket.socketpair()
    right.close()
    with left, pytest.raises(OSError):
        framing.send(left.fileno(), "anyone?")


def test_marshmallow_missing_arrives_as_itself():
    import marshmallow

    import deepaas_like.model.plugin  # noqa: F401 - registers how ``missing`` is pickled

    left, right = socket.socketpair()
    with left, right:
        framing.send(left.fileno(), {"load_default": marshmallow.missing})
        (message,) = _read_all(right, 1)
        assert message["load_default"] is marshmallow.missing  # type: ignore[index]


def _read_in_thread(sock: socket.socket, count: int) -> tuple[threading.Thread, list[object]]:
    received: list[object] = []
    thread = threading.Thread(target=lambda: received.extend(_read_all(sock, count)))
    thread.start()
    return thread, received


def test_send_waits_for_room_on_a_non_blocking_descriptor():
    # uvloop's add_reader makes the descriptor non-blocking: a write past the socket's
    # buffer must wait for the reader, not fail half-written with BlockingIOError.
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        big = os.urandom(8 * 1024 * 1024)
        thread, received = _read_in_thread(right, 2)
        framing.send(left.fileno(), ("ok", big))
        framing.send(left.fileno(), "next")
        thread.join(timeout=60)
        assert received == [("ok", big), "next"]


def test_a_writer_keeps_what_the_socket_cannot_take_and_writes_it_in_order():
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        writer = framing.Writer(left.fileno())
        big = os.urandom(4 * 1024 * 1024)
        assert writer.write(("ok", big)) is False, "the socket's buffer cannot hold 4 MiB"
        assert writer.write("next") is False, "kept behind the first, not written before it"
        assert writer.pending > 0
        thread, received = _read_in_thread(right, 2)
        assert writer.drain(timeout=60)
        thread.join(timeout=60)
        assert writer.pending == 0
        assert received == [("ok", big), "next"]


def test_a_writer_that_nobody_reads_does_not_wait():
    left, right = socket.socketpair()
    with left, right:
        left.setblocking(False)
        writer = framing.Writer(left.fileno())
        assert writer.write(os.urandom(4 * 1024 * 1024)) is False
        assert writer.drain(timeout=0.2) is False, "drain gives up after its timeout"
        right.close()
        with pytest.raises(OSError):
            writer.drain(timeout=10)


def _on(loop: str, main) -> None:
    with asyncio.Runner(loop_factory=uvloop.new_event_loop if loop == "uvloop" else None) as runner:
        runner.run(main())


async def _until(condition, what: str) -> None:
    for _ in range(6000):  # a liveness bound of a minute, for a busy machine
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"{what} did not happen")


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_loop_writer_returns_at_once_and_the_loop_writes_the_rest_in_order(loop):
    async def main() -> None:
        left, right = socket.socketpair()
        with left, right:
            left.setblocking(False)
            writer = framing.LoopWriter(left.fileno(), asyncio.get_running_loop(), lambda: lost.append(True))
            big = os.urandom(4 * 1024 * 1024)
            writer.send(("ok", big))  # nobody reads yet: it must not wait
            writer.send("next")
            assert writer.pending > 0
            thread, received = _read_in_thread(right, 2)
            await _until(lambda: not writer.pending, "writing what was pending")
            thread.join(timeout=60)
            assert received == [("ok", big), "next"]
            assert not asyncio.get_running_loop().remove_writer(left.fileno()), "still watched with nothing to write"

    lost: list[bool] = []
    _on(loop, main)
    assert lost == []


@pytest.mark.parametrize("loop", ["uvloop", "asyncio"])
def test_a_loop_writer_says_when_the_reader_is_gone(loop):
    async def main() -> None:
        left, right = socket.socketpair()
        with left:
            left.setblocking(False)
            writer = framing.LoopWriter(left.fileno(), asyncio.get_running_loop(), lambda: lost.append(True))
            writer.send(os.urandom(4 * 1024 * 1024))
            right.close()
            await _until(lambda: lost, "telling that the reader is gone")
            assert writer.pending == 0, "what nobody can read is dropped"
            with pytest.raises(OSError):
                writer.send("more")

    lost: list[bool] = []
    _on(loop, main)
    assert lost == [True]
