"""Hardening (issue 17): hostile headers, strict types, memory bounds before allocation."""

from __future__ import annotations

import json
import tracemalloc
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from emauto.bench.driver import StaticMicroscope
from emauto.cli import main
from emauto.drivers.zmq import protocol
from emauto.drivers.zmq.client import RemoteMicroscope
from emauto.errors import ConfigError, InvalidRequestError
from emauto.wrappers.safety import SafetyConfig


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


def acquire_frames(request: dict[str, Any], seq: int = 1) -> list[bytes]:
    header = {
        "v": 1,
        "client": "typed",
        "seq": seq,
        "deadline_s": 5.0,
        "op": "acquire",
        "args": {"request": request},
    }
    return [json.dumps(header).encode()]


@pytest.mark.parametrize(
    "request_body",
    [
        {"kind": "ronchigram", "exposure_s": "0.01"},
        {"kind": "ronchigram", "exposure_s": True},  # was 1 s of beam
        {"kind": "ronchigram", "exposure_s": 1e-3, "wait_s": False},
        {"kind": "image", "scan": {"mode": "raster", "shape": [8, 8]}, "dwell_s": "1e-6"},
        {"kind": "image", "scan": {"mode": "raster", "shape": [8, True]}, "dwell_s": 1e-6},
        {"kind": "image", "scan": {"mode": "raster", "shape": [8, 8.0]}, "dwell_s": 1e-6},
    ],
)
def test_acquire_refuses_strings_and_booleans_for_numbers(
    thread_server: Any, raw_socket: Any, request_body: dict[str, Any]
) -> None:
    server = thread_server(StaticMicroscope(shape=(8, 8)))
    server.scope.set({"beam_blank": 0.0})
    socket = raw_socket(server.endpoint)
    reply = ask(socket, acquire_frames(request_body))
    assert not reply.ok and reply.error.type == "ProtocolError", reply
    assert server.scope.dose_used_e == 0.0
    # an integer is a valid float: the strict wire is not stricter than JSON
    ok = ask(socket, acquire_frames({"kind": "ronchigram", "exposure_s": 1}, seq=2))
    assert ok.ok and server.scope.dose_used_e > 0


def test_set_limits_refuses_booleans_and_strings(thread_server: Any) -> None:
    server = thread_server(StaticMicroscope(shape=(8, 8)), SafetyConfig(dose_budget_e=1e9))
    with RemoteMicroscope(server.endpoint, timeout_s=5.0) as remote:
        for bad in (
            {"dose_budget_e": True},
            {"dose_budget_e": "1e12"},
            {"heartbeat_interval_s": True},
            {"knobs": {"C10": {"max_step": "1e-9"}}},
        ):
            with pytest.raises(ConfigError, match="valid number"):
                remote.set_limits(bad)
    assert server.scope.config.dose_budget_e == 1e9


def test_operator_set_limits_with_only_knobs_keeps_watchdog_and_budget(
    thread_server: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = SafetyConfig(dose_budget_e=1e12, heartbeat_interval_s=2.0, missed_heartbeats=4)
    server = thread_server(StaticMicroscope(shape=(8, 8)), config)
    limits = tmp_path / "knobs.yaml"
    limits.write_text("knobs:\n  C10: {lower: -1.0e-6, upper: 1.0e-6}\n")
    argv = ["operator", "set-limits", "--file", str(limits), "--connect", server.endpoint]
    assert main(argv) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["heartbeat_interval_s"] == 2.0 and status["missed_heartbeats"] == 4
    assert status["dose_budget_e"] == 1e12
    assert server.scope.describe().knobs["C10"].upper == 1e-6
    # a second file merges knob by knob, field by field
    limits.write_text("knobs:\n  C10: {max_step: 1.0e-8}\n  C12a: {upper: 1.0e-7}\n")
    assert main(argv) == 0
    capsys.readouterr()
    knobs = server.scope.describe().knobs
    assert knobs["C10"].upper == 1e-6 and knobs["C10"].max_step == 1e-8
    assert knobs["C12a"].upper == 1e-7
    # --replace needs the whole configuration: refused with a clear error, nothing changes
    assert main([*argv, "--replace"]) != 0
    assert "incomplete" in capsys.readouterr().err
    assert server.scope.config.heartbeat_interval_s == 2.0
    # null restores a default explicitly (here: no dose budget)
    with RemoteMicroscope(server.endpoint, timeout_s=5.0) as remote:
        assert remote.set_limits({"dose_budget_e": None})["dose_budget_e"] is None
        assert remote.status()["heartbeat_interval_s"] == 2.0


# --------------------------------------------------------------------------- memory bounds


def test_many_large_parts_are_rejected_without_copying(thread_server: Any, raw_socket: Any) -> None:
    server = thread_server(StaticMicroscope(shape=(8, 8)))
    socket = raw_socket(server.endpoint)
    assert hello(socket).ok
    parts = [b"{}"] + [b"\x00" * (4 << 20)] * 12  # 12 x 4 MiB, each under ZMQ_MAXMSGSIZE
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        reply = ask(socket, parts)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert not reply.ok and "frames" in reply.error.message
    # the sender's own 48 MiB are not traced (bytes built before start); the server copied
    # nothing out of the message before rejecting it
    assert peak < 8 << 20, f"peak {peak / 2**20:.1f} MiB traced while rejecting"
    assert hello(socket, seq=2).ok


def test_reply_cache_is_bounded_in_bytes(thread_server: Any) -> None:
    from emauto.microscope import RonchigramRequest

    server = thread_server(StaticMicroscope(shape=(256, 256)), max_cache_bytes=1 << 20)
    server.scope.set({"beam_blank": 0.0})
    for index in range(16):  # 16 clients, 256 KiB each
        remote = RemoteMicroscope(server.endpoint, timeout_s=5.0, client_id=f"img-{index}")
        remote.acquire(RonchigramRequest(exposure_s=1e-3))
        remote.close(safe=False)
        assert server.server.cache_bytes <= 1 << 20
    assert server.server.cache_bytes > 0


def test_twin_refuses_oversized_scans_before_allocating(tiny_sim_uri: str) -> None:
    import emauto
    from emauto.errors import InvalidRequestError
    from emauto.microscope import ImageRequest, LineSegment, RasterScan, SegmentsScan

    scope = emauto.connect(tiny_sim_uri)
    try:
        scope.set({"beam_blank": 0.0})
        most = scope.describe().scan.max_positions
        raster = ImageRequest(scan=RasterScan(shape=(8192, 8192)), dwell_s=1e-6)
        segment = LineSegment(start_m=(0.0, 0.0), end_m=(1e-9, 1e-9), n_points=65536)
        segments = ImageRequest(scan=SegmentsScan(segments=(segment,) * 1000), dwell_s=1e-6)
        for request in (raster, segments):
            tracemalloc.start()
            try:
                with pytest.raises(InvalidRequestError, match=f"at most {most}"):
                    scope.acquire(request)
                _, peak = tracemalloc.get_traced_memory()
            finally:
                tracemalloc.stop()
            assert peak < 16 << 20, f"{peak / 2**20:.0f} MiB allocated before the check"
    finally:
        scope.close()


def test_safety_layer_refuses_oversized_scans_before_the_backend(thread_server: Any) -> None:
    from emauto.microscope import ImageRequest, RasterScan

    server = thread_server(StaticMicroscope(shape=(8, 8)))
    server.scope.set({"beam_blank": 0.0})
    with (
        RemoteMicroscope(server.endpoint, timeout_s=5.0) as remote,
        pytest.raises(InvalidRequestError, match="at most 1048576"),
    ):
        remote.acquire(ImageRequest(scan=RasterScan(shape=(2048, 1024)), dwell_s=1e-7))
    assert server.scope.dose_used_e == 0.0


def test_a_flood_of_bad_messages_writes_a_bounded_audit_log(
    tmp_path: Path, thread_server: Any, raw_socket: Any
) -> None:
    from emauto.wrappers.audit import AuditLog

    server = thread_server(StaticMicroscope(shape=(8, 8)))
    path = tmp_path / "audit.jsonl"
    server.scope.audit = AuditLog(path, max_rejects_per_s=20)
    socket = raw_socket(server.endpoint)
    for _ in range(2000):
        socket.send_multipart([b"not json"])
    replies = 0
    while replies < 2000 and socket.poll(5000):
        socket.recv_multipart()
        replies += 1
    assert replies == 2000  # every one answered...
    server.close()
    lines = path.read_text().splitlines()
    rejected = [line for line in lines if '"rejected"' in line]
    # ... but at most 20 written per second, the rest summarised
    assert len(rejected) <= 20 * 30 and len(lines) < 2000
    summaries = [json.loads(line) for line in lines if '"command": "audit"' in line]
    assert sum(s["args"]["suppressed"] for s in summaries) + len(rejected) == 2000
