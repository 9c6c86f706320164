"""Hardening (issue 17): hostile headers, strict types, memory bounds before allocation."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import zmq

from emauto.bench.driver import StaticMicroscope
from emauto.drivers.zmq import protocol


@pytest.fixture
def raw_socket() -> Iterator[Any]:
    """A factory of raw DEALER sockets connected to an endpoint, closed after the test."""
    sockets: list[zmq.Socket[Any]] = []

    def make(endpoint: str) -> zmq.Socket[Any]:
        socket = zmq.Context.instance().socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(endpoint)
        sockets.append(socket)
        return socket

    yield make
    for socket in sockets:
        socket.close(linger=0)


def ask(socket: zmq.Socket[Any], frames: list[bytes], timeout_ms: int = 5000) -> Any:
    """Send ``frames`` and return the decoded reply header (fails when none comes)."""
    socket.send_multipart(frames)
    assert socket.poll(timeout_ms), "no reply: the server stopped answering"
    header, _ = protocol.decode_reply(socket.recv_multipart())
    return header


def hello(socket: zmq.Socket[Any], seq: int = 1) -> Any:
    return ask(socket, protocol.encode_request(client="probe", seq=seq, op="hello", deadline_s=1))


@pytest.mark.parametrize(
    "raw",
    [
        b"1" * 5000,  # int() refuses > 4300 digits with ValueError
        b'{"seq": ' + b"9" * 5000 + b"}",
        b"[" * 100_000,  # RecursionError in the JSON decoder
        b'{"a":' * 40_000,
    ],
    ids=["int-5000-digits", "seq-5000-digits", "open-brackets", "nested-objects"],
)
def test_hostile_json_header_is_rejected_and_the_server_stays_up(
    thread_server: Any, raw_socket: Any, raw: bytes
) -> None:
    server = thread_server(StaticMicroscope(shape=(8, 8)))
    socket = raw_socket(server.endpoint)
    reply = ask(socket, [raw])
    assert not reply.ok and reply.error.type == "ProtocolError"
    assert hello(socket).ok
    assert server.thread.is_alive() and server.server.crashes == 0
