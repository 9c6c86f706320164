"""Malformed, truncated, oversized and random frames: the server stays up and the backend is
never called (hypothesis drives a raw DEALER socket against a real server)."""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator, Mapping
from typing import Any

import pytest
import zmq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from emauto.bench.driver import StaticMicroscope
from emauto.drivers.zmq import protocol
from emauto.drivers.zmq.client import RemoteMicroscope
from emauto.microscope import Frame, ImageRequest, MicroscopeState, RonchigramRequest


class SpyMicroscope(StaticMicroscope):
    """Counts every call that reaches the backend after construction."""

    def __init__(self) -> None:
        super().__init__(shape=(8, 8))
        self.calls: list[str] = []

    def read(self) -> MicroscopeState:
        self.calls.append("read")
        return super().read()

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        self.calls.append("set")
        return super().set(setpoints)

    def acquire(self, request: RonchigramRequest | ImageRequest) -> Frame:
        self.calls.append("acquire")
        return super().acquire(request)

    def safe(self) -> None:
        self.calls.append("safe")
        super().safe()


@pytest.fixture(scope="module")
def fuzz_target() -> Iterator[tuple[Any, SpyMicroscope, zmq.Socket[Any]]]:
    from zmq_helpers import ThreadServer

    spy = SpyMicroscope()
    server = ThreadServer(spy)
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(server.endpoint)
    yield server, spy, socket
    socket.close(linger=0)
    server.close()


SEQ = itertools.count(1)


def valid_header() -> dict[str, Any]:
    # a new client id each time: a repeated (client, seq) is answered from the ledger without
    # reaching the handler, and a fuzzed huge seq would make every later request stale
    n = next(SEQ)
    return {"v": 1, "client": f"fuzz-{n}", "seq": n, "deadline_s": 1.0, "op": "set", "args": {}}


def mutate(raw: bytes, cut: int, flip: int) -> bytes:
    if not raw:
        return raw
    raw = raw[: max(1, cut % (len(raw) + 1))]
    data = bytearray(raw)
    data[flip % len(data)] ^= 0xFF
    return bytes(data)


garbage = st.lists(st.binary(max_size=256), min_size=1, max_size=5)
json_junk = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
).map(lambda value: [json.dumps(value).encode()])
headers = st.builds(
    lambda key, value: [json.dumps({**valid_header(), key: value}).encode()],
    st.sampled_from(["v", "client", "seq", "deadline_s", "op", "args", "arrays", "zz"]),
    # never a valid op name: a valid "read" or "safe" would rightly reach the backend
    st.none()
    | st.integers()
    | st.text(max_size=6).filter(lambda text: text not in protocol.OPS)
    | st.lists(st.integers(), max_size=3),
)
truncated = st.builds(
    lambda cut, flip: [mutate(json.dumps(valid_header()).encode(), cut, flip)],
    st.integers(min_value=0, max_value=200),
    st.integers(min_value=0, max_value=200),
)
bad_arrays = st.builds(
    lambda shape, size: [
        json.dumps(
            {
                **valid_header(),
                "op": "acquire",
                "arrays": [{"field": "positions_m", "dtype": "float64", "shape": shape}],
            }
        ).encode(),
        b"\x00" * size,
    ],
    st.lists(st.integers(min_value=0, max_value=64), max_size=3),
    st.integers(min_value=0, max_value=600),
)


def assert_alive_and_untouched(socket: zmq.Socket[Any], spy: SpyMicroscope) -> None:
    # drain whatever error replies arrived, then prove the server still answers
    while socket.poll(0):
        socket.recv_multipart()
    hello = protocol.encode_request(client="probe", seq=1, op="hello", deadline_s=1.0)
    socket.send_multipart(hello)
    while True:  # late error replies to earlier frames may come first
        assert socket.poll(5000), "the server stopped answering"
        header, _ = protocol.decode_reply(socket.recv_multipart())
        if header.ok:
            break
    assert spy.calls == []


@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.one_of(garbage, json_junk, headers, truncated, bad_arrays))
def test_fuzzed_frames_never_reach_the_backend(
    fuzz_target: tuple[Any, SpyMicroscope, zmq.Socket[Any]], frames: list[bytes]
) -> None:
    server, spy, socket = fuzz_target
    socket.send_multipart(frames)
    if socket.poll(1000):  # a stale seq (lower than the last) is dropped: no reply
        header, _ = protocol.decode_reply(socket.recv_multipart())
        assert not header.ok and header.error is not None
    assert spy.calls == []
    assert server.thread.is_alive()


def test_server_survives_fuzzing_and_oversized_messages(
    fuzz_target: tuple[Any, SpyMicroscope, zmq.Socket[Any]],
) -> None:
    server, spy, socket = fuzz_target
    # an oversized frame: the transport drops the connection (ZMQ_MAXMSGSIZE); never buffered
    big = zmq.Context.instance().socket(zmq.DEALER)
    big.setsockopt(zmq.LINGER, 0)
    big.connect(server.endpoint)
    big.send_multipart([b"{}", b"\x00" * (protocol.MAX_REQUEST_FRAME_BYTES + 1)])
    big.close(linger=0)
    assert_alive_and_untouched(socket, spy)
    rejected = server.server.rejected
    assert rejected > 0
    # and a well-formed client still works end to end afterwards
    with RemoteMicroscope(server.endpoint, timeout_s=5.0) as remote:
        assert remote.read().knobs["C10"] == 0.0
    assert spy.calls == ["read", "safe"]  # close() makes the microscope safe
    spy.calls.clear()


# hostile shapes (issue 17): deep nesting, huge integers, wrong JSON types where numbers
# belong, too many parts; none may stop the server or reach the backend
deep = st.builds(
    lambda opener, depth: [(opener * depth).encode()],
    st.sampled_from(["[", '{"a":', "[{}", '{"v":[']),
    st.integers(min_value=33, max_value=60_000),
)
huge_numbers = st.builds(
    lambda digits, key: [
        json.dumps({**valid_header(), key: 0}).replace('": 0', '": ' + "9" * digits, 1).encode()
    ],
    st.integers(min_value=33, max_value=6000),
    st.sampled_from(["seq", "v", "deadline_s"]),
)
not_a_number = st.sampled_from(["0.01", True, False, None, [], {}, "1e-3"])
wrong_types = st.builds(
    lambda field, value, kind: [
        json.dumps(
            {
                **valid_header(),
                "op": "acquire",
                "args": {
                    "request": (
                        {"kind": "ronchigram", "exposure_s": 1e-3, field: value}
                        if kind == "ronchigram"
                        else {
                            "kind": "image",
                            "scan": {"mode": "raster", "shape": [4, value]},
                            "dwell_s": 1e-6,
                        }
                    )
                },
            }
        ).encode()
    ],
    st.sampled_from(["exposure_s", "wait_s", "probe_position_m"]),
    not_a_number,
    st.sampled_from(["ronchigram", "image"]),
)
bad_limits = st.builds(
    lambda field, value: [
        json.dumps(
            {**valid_header(), "op": "set_limits", "args": {"config": {field: value}}}
        ).encode()
    ],
    st.sampled_from(["dose_budget_e", "heartbeat_interval_s", "missed_heartbeats", "readback"]),
    st.sampled_from(["0.01", [], {}, -1, 0, "yes", 1e300]),
)
many_parts = st.builds(
    lambda count, size: [json.dumps(valid_header()).encode()] + [b"\x00" * size] * count,
    st.integers(min_value=4, max_value=24),
    st.integers(min_value=0, max_value=4096),
)


@settings(
    max_examples=200,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(frames=st.one_of(deep, huge_numbers, wrong_types, bad_limits, many_parts))
def test_hostile_messages_never_stop_the_server_or_reach_the_backend(
    fuzz_target: tuple[Any, SpyMicroscope, zmq.Socket[Any]], frames: list[bytes]
) -> None:
    server, spy, socket = fuzz_target
    before = server.scope.config
    socket.send_multipart(frames)
    assert socket.poll(5000), "no reply to a hostile message"
    header, _ = protocol.decode_reply(socket.recv_multipart())
    if header.ok:  # only a limits change that is valid may pass (e.g. missed_heartbeats: 1)
        assert json.loads(frames[0])["op"] == "set_limits"
        server.scope.set_limits(before)
    assert spy.calls == []
    assert server.thread.is_alive() and server.server.crashes == 0
