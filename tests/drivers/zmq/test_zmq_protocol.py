"""The wire protocol: strict headers, binary arrays checked against their length, limits."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from emauto.bench.driver import StaticMicroscope
from emauto.drivers.zmq import protocol
from emauto.errors import ProtocolError
from emauto.microscope import ImageRequest, PositionsScan, RonchigramRequest


def request_frames(**overrides: object) -> list[bytes]:
    header = {"v": 1, "client": "c1", "seq": 1, "deadline_s": 1.0, "op": "read", "args": {}}
    header.update(overrides)
    return [json.dumps(header).encode()]


def test_request_round_trip_with_positions_as_binary() -> None:
    positions = np.array([[0.0, 1e-10], [2e-10, 3e-10]])
    request = ImageRequest(scan=PositionsScan(positions_m=positions), dwell_s=1e-6)
    frames = protocol.encode_request(client="c", seq=7, op="acquire", deadline_s=2, request=request)
    assert len(frames) == 2 and len(frames[1]) == positions.nbytes
    header, arrays = protocol.decode_request([bytes(f) for f in frames])
    assert (header.seq, header.op, header.client) == (7, "acquire", "c")
    decoded = protocol.parse_acquisition(header.args, arrays)
    assert isinstance(decoded, ImageRequest) and isinstance(decoded.scan, PositionsScan)
    np.testing.assert_array_equal(decoded.scan.positions_m, positions)


def test_frame_round_trip() -> None:
    scope = StaticMicroscope(shape=(32, 48))
    scope.set({"beam_blank": 0.0})
    frame = scope.acquire(RonchigramRequest(exposure_s=1e-3))
    frames = protocol.encode_reply(3, result=frame)
    assert len(frames[1]) == 32 * 48 * 4  # raw float32, no JSON for the pixels
    header, arrays = protocol.decode_reply([bytes(f) for f in frames])
    back = protocol.frame_from_reply(header.result, arrays)
    np.testing.assert_array_equal(back.data, frame.data)
    assert back.state == frame.state and back.request == frame.request


@pytest.mark.parametrize(
    ("frames", "fragment"),
    [
        (request_frames(extra=1), "extra"),
        (request_frames(v=2), "version 2"),
        (request_frames(op="format_disk"), "op"),
        (request_frames(seq="1"), "seq"),
        (request_frames(seq=-1), "seq"),
        (request_frames(client=""), "client"),
        (request_frames(client="a b"), "client"),
        (request_frames(deadline_s=0), "deadline_s"),
        ([b'{"v":1,"client":"c","seq":1,"deadline_s":NaN,"op":"read"}'], "NaN"),
        ([b'{"v":1,"client":"c","seq":1,"deadline_s":Infinity,"op":"read"}'], "Infinity"),
        ([b'{"v":1,"client":"c","seq":1,"deadline_s":1e999,"op":"read"}'], "finite"),
        ([b"\xff\xfe"], "UTF-8"),
        ([b"{not json"], "JSON"),
        ([b"[]"], "request header"),
        ([b"x" * (protocol.MAX_HEADER_BYTES + 1)], "exceeds the limit"),
        ([*request_frames(), b"1", b"2", b"3", b"4"], "frames"),
        ([*request_frames(), b"\x00" * 8], "announces 0 array"),
    ],
)
def test_malformed_requests(frames: list[bytes], fragment: str) -> None:
    with pytest.raises(ProtocolError, match=fragment):
        protocol.decode_request(frames)


def test_array_length_must_match_dtype_and_shape() -> None:
    meta = {"field": "positions_m", "dtype": "float64", "shape": [2, 2]}
    with pytest.raises(ProtocolError, match="needs 32 bytes, the frame has 31"):
        protocol.decode_request([*request_frames(arrays=[meta]), b"\x00" * 31])
    bad_dtype = {"field": "positions_m", "dtype": "object", "shape": [2]}
    with pytest.raises(ProtocolError, match="dtype"):
        protocol.decode_request([*request_frames(arrays=[bad_dtype]), b"\x00" * 16])


def test_setpoints_must_be_finite_floats() -> None:
    assert protocol.parse_set_args({"setpoints": {"C10": 1e-9, "C12a": 0}}) == {
        "C10": 1e-9,
        "C12a": 0.0,
    }
    for bad in ({"setpoints": {"C10": "1"}}, {"setpoints": {"C10": float("nan")}}, {"x": 1}):
        with pytest.raises(ProtocolError, match="set arguments"):
            protocol.parse_set_args(bad)


def test_positions_must_come_as_a_frame() -> None:
    args = {"request": {"kind": "image", "scan": {"mode": "positions", "positions_m": [[0, 0]]}}}
    with pytest.raises(ProtocolError, match="binary frame"):
        protocol.parse_acquisition(args, {})


def test_never_pickles() -> None:
    payload = pickle.dumps({"v": 1, "op": "read"})
    with pytest.raises(ProtocolError):
        protocol.decode_request([payload])
    package = Path(protocol.__file__).parent
    for path in package.glob("*.py"):
        source = path.read_text()
        assert "import pickle" not in source and "_pyobj" not in source, path
