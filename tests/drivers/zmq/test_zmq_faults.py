"""Faults: the server killed mid-request; dropped, duplicated and reordered messages."""

from __future__ import annotations

import socket as pysocket
import subprocess
import sys
import threading
import time
from typing import Any

import pytest
import zmq

from emauto.bench.driver import StaticMicroscope
from emauto.drivers.zmq.client import RemoteMicroscope
from emauto.errors import DeadlineExceededError
from emauto.microscope import RonchigramRequest


def free_port() -> int:
    with pysocket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_static_server(endpoint: str) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "emauto.bench.driver", endpoint], stdout=subprocess.PIPE, text=True
    )
    assert process.stdout is not None
    assert process.stdout.readline().strip() == endpoint
    return process


def test_server_killed_mid_request_then_back() -> None:
    endpoint = f"tcp://127.0.0.1:{free_port()}"
    first = start_static_server(endpoint)
    remote = RemoteMicroscope(endpoint, timeout_s=0.5, retries=2, backoff_s=0.05)
    try:
        remote.set({"beam_blank": 0.0})
        killer = threading.Timer(0.2, first.kill)
        killer.start()
        start = time.monotonic()
        with pytest.raises(DeadlineExceededError, match="no reply"):
            remote.acquire(RonchigramRequest(exposure_s=1e-3, wait_s=0.5))
        elapsed = time.monotonic() - start
        # 3 tries of (0.5 s + 0.5 s wait) plus backoff: the error comes within the deadline
        assert elapsed < 3 * 1.0 + 0.5 + 5.0  # generous slack for a loaded machine
        first.wait(timeout=10)
        second = start_static_server(endpoint)
        try:
            state = remote.set({"C10": 1e-9})  # the same client recovers by itself
            assert state.knobs["C10"] == 1e-9
        finally:
            second.terminate()
            second.wait(timeout=10)
    finally:
        first.kill()
        remote.close()


class FaultProxy:
    """ROUTER (clients) <-> DEALER (server) that drops, duplicates and reorders messages."""

    def __init__(self, server: str) -> None:
        context = zmq.Context.instance()
        self.front = context.socket(zmq.ROUTER)
        self.front.setsockopt(zmq.LINGER, 0)
        self.front.bind("tcp://127.0.0.1:*")
        self.endpoint = self.front.getsockopt_string(zmq.LAST_ENDPOINT)
        self.back = context.socket(zmq.DEALER)
        self.back.setsockopt(zmq.LINGER, 0)
        self.back.connect(server)
        self.counts = {"drop": 0, "duplicate": 0, "reorder": 0, "reply_drop": 0, "reply_dup": 0}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        poller = zmq.Poller()
        poller.register(self.front, zmq.POLLIN)
        poller.register(self.back, zmq.POLLIN)
        identity = b""
        held: list[bytes] | None = None
        requests = replies = 0
        while not self._stop.is_set():
            events = dict(poller.poll(20))
            if self.front in events:
                identity, *frames = self.front.recv_multipart()
                requests += 1
                kind = requests % 5
                if kind == 1:
                    self.counts["drop"] += 1
                    continue
                if kind == 3 and held is None:
                    held = frames  # hold it until the next message has passed
                    self.counts["reorder"] += 1
                    continue
                self.back.send_multipart(frames)
                if kind == 2:
                    self.back.send_multipart(frames)
                    self.counts["duplicate"] += 1
                if held is not None:
                    self.back.send_multipart(held)
                    held = None
            if self.back in events:
                frames = self.back.recv_multipart()
                replies += 1
                if replies % 7 == 4:
                    self.counts["reply_drop"] += 1
                    continue
                self.front.send_multipart([identity, *frames])
                if replies % 7 == 5:
                    self.front.send_multipart([identity, *frames])
                    self.counts["reply_dup"] += 1

    def close(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)
        self.front.close(linger=0)
        self.back.close(linger=0)


def test_dropped_duplicated_reordered_messages_apply_each_command_once(thread_server: Any) -> None:
    server = thread_server(StaticMicroscope(shape=(8, 8)))
    proxy = FaultProxy(server.endpoint)
    remote = RemoteMicroscope(proxy.endpoint, timeout_s=0.25, retries=8, backoff_s=0.01)
    try:
        targets = [k * 1e-8 for k in range(1, 13)]
        for target in targets:
            state = remote.set({"C10": target})
            assert state.knobs["C10"] == target
            assert remote.read().knobs["C10"] == target
        assert server.scope.microscope.read().knobs["C10"] == targets[-1]
    finally:
        remote.close()
        proxy.close()
    assert all(count > 0 for count in proxy.counts.values()), proxy.counts
    applied = [
        r
        for r in server.scope.audit.records
        if r["command"] == "set" and r["outcome"] == "accepted"
    ]
    assert [r["args"]["C10"] for r in applied] == targets  # each exactly once, in order


def test_a_restarted_client_with_the_same_id_is_served(thread_server: Any) -> None:
    server = thread_server(StaticMicroscope(shape=(8, 8)))
    for target in (1e-9, 2e-9):
        with RemoteMicroscope(server.endpoint, client_id="agent-7", timeout_s=5.0) as remote:
            assert remote.set({"C10": target}).knobs["C10"] == target


def test_acquisition_longer_than_the_deadline_is_refused(thread_server: Any) -> None:
    from emauto.drivers.zmq import protocol

    server = thread_server(StaticMicroscope(shape=(8, 8)))
    server.scope.set({"beam_blank": 0.0})
    socket = zmq.Context.instance().socket(zmq.DEALER)
    socket.setsockopt(zmq.LINGER, 0)
    socket.connect(server.endpoint)
    try:
        request = RonchigramRequest(exposure_s=2.0, wait_s=1.0)
        socket.send_multipart(
            protocol.encode_request(
                client="c", seq=1, op="acquire", deadline_s=1.0, request=request
            )
        )
        assert socket.poll(10_000)
        header, _ = protocol.decode_reply(socket.recv_multipart())
    finally:
        socket.close(linger=0)
    assert header.error is not None and header.error.type == "InvalidRequestError"
    assert "deadline of 1 s" in header.error.message
    assert server.scope.dose_used_e == 0.0
