"""The daemon's control socket: malformed and multi-part messages get an error reply and the
socket keeps answering (real ZeroMQ sockets on loopback); hypothesis fuzzes it."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emauto.agent.control import ControlServer, send_command


@pytest.fixture
def control() -> Iterator[tuple[ControlServer, list[str]]]:
    seen: list[str] = []

    def handler(command: str) -> dict[str, Any]:
        seen.append(command)
        return {"state": "aborting" if command == "abort" else "running"}

    server = ControlServer("tcp://127.0.0.1:0", handler)
    server.address = server._socket.getsockopt_string(zmq.LAST_ENDPOINT)
    yield server, seen
    server.close()


def raw_request(address: str, frames: list[bytes], kind: int = zmq.REQ) -> dict[str, Any]:
    socket = zmq.Context.instance().socket(kind)
    socket.setsockopt(zmq.LINGER, 0)
    try:
        socket.connect(address)
        socket.send_multipart(frames)
        assert socket.poll(5000), "the control socket stopped answering"
        reply: dict[str, Any] = json.loads(socket.recv_multipart()[-1])
        return reply
    finally:
        socket.close(linger=0)


def test_two_part_message_is_refused_and_abort_still_answers(
    control: tuple[ControlServer, list[str]],
) -> None:
    server, seen = control
    reply = raw_request(server.address, [b'{"command": "abort"}', b"extra"])
    assert not reply["ok"] and reply["error"]["type"] == "ProtocolError"
    assert "single-part" in reply["error"]["message"]
    assert seen == []  # nothing was acted on
    assert send_command(server.address, "abort")["status"]["state"] == "aborting"
    assert seen == ["abort"]


def test_dealer_without_delimiter_and_garbage_are_answered(
    control: tuple[ControlServer, list[str]],
) -> None:
    server, seen = control
    assert not raw_request(server.address, [b"\xff\x00"], kind=zmq.DEALER)["ok"]
    assert not raw_request(server.address, [b"[" * 3000])["ok"]
    assert send_command(server.address, "status")["ok"]
    assert seen == ["status"]


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(
    frames=st.lists(st.binary(max_size=64), min_size=1, max_size=4)
    | st.lists(
        st.builds(
            lambda value: json.dumps({"command": value}).encode(),
            st.none() | st.integers() | st.text(max_size=8) | st.lists(st.integers(), max_size=2),
        ),
        min_size=1,
        max_size=3,
    )
)
def test_fuzzed_control_messages_never_act_and_never_wedge(
    control: tuple[ControlServer, list[str]], frames: list[bytes]
) -> None:
    server, seen = control
    valid = len(frames) == 1 and frames[0] in {
        json.dumps({"command": c}).encode() for c in ("status", "pause", "resume", "abort", "reset")
    }
    reply = raw_request(server.address, frames)
    assert reply["ok"] == valid
    assert seen == ([json.loads(frames[0])["command"]] if valid else [])  # invalid: no action
    seen.clear()
    assert send_command(server.address, "status")["ok"]
    seen.clear()
