"""Exactly-once across reply-cache eviction and server restarts (kill -9), and "was it
applied?" after a lost reply: real sockets on loopback, the server in a subprocess."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import zmq

from emauto.bench.driver import StaticMicroscope
from emauto.bench.security import ServerProcess
from emauto.drivers.zmq import protocol
from emauto.drivers.zmq.client import RemoteMicroscope
from emauto.errors import AlreadyAppliedError, OutcomeUnknownError
from emauto.microscope import RonchigramRequest

ACQUIRE = RonchigramRequest(exposure_s=1e-3)


class Raw:
    """A raw DEALER socket that sends chosen sequence numbers (a client retrying)."""

    def __init__(self, endpoint: str, client: str = "agent-1") -> None:
        self.client = client
        self.socket = zmq.Context.instance().socket(zmq.DEALER)
        self.socket.setsockopt(zmq.LINGER, 0)
        self.socket.connect(endpoint)

    def send(self, seq: int, op: str, args: dict[str, Any] | None = None, **kw: Any) -> None:
        frames = protocol.encode_request(
            client=self.client, seq=seq, op=op, deadline_s=5.0, args=args, **kw
        )
        self.socket.send_multipart(frames)

    def reply(self, timeout_ms: int = 5000) -> protocol.Reply | None:
        if not self.socket.poll(timeout_ms):
            return None
        header, _ = protocol.decode_reply(self.socket.recv_multipart())
        return header

    def call(self, seq: int, op: str, args: dict[str, Any] | None = None, **kw: Any) -> Any:
        self.send(seq, op, args, **kw)
        reply = self.reply()
        assert reply is not None, f"no reply to {op} seq {seq}"
        return reply

    def close(self) -> None:
        self.socket.close(linger=0)


def accepted(records: list[dict[str, Any]], command: str) -> list[dict[str, Any]]:
    return [r for r in records if r["command"] == command and r["outcome"] == "accepted"]


@pytest.fixture
def server_process(tmp_path: Path) -> Iterator[ServerProcess]:
    server = ServerProcess(tmp_path / "state").start()
    yield server
    server.kill()


def test_retries_after_kill_and_restart_are_never_applied_twice(
    server_process: ServerProcess,
) -> None:
    raw = Raw(server_process.endpoint)
    try:
        assert raw.call(1, "set", {"setpoints": {"beam_blank": 0.0}}).ok
        first = raw.call(5, "set", {"setpoints": {"C10": 2e-9}})
        assert first.ok
        server_process.kill()  # the reply was "lost": the client retries after a restart
        server_process.start()
        again = raw.call(5, "set", {"setpoints": {"C10": 2e-9}})
        assert again.ok and again.result == first.result  # the recorded reply, not re-applied
        assert raw.call(6, "acquire", request=ACQUIRE).ok
        server_process.kill()
        server_process.start()
        retry = raw.call(6, "acquire", request=ACQUIRE)
        assert not retry.ok and retry.error is not None
        assert retry.error.type == "AlreadyAppliedError"
        # a stale set (seq 4 < 6) after the restart is dropped: C10 is not rolled back
        raw.send(4, "set", {"setpoints": {"C10": 0.0}})
        assert raw.reply(timeout_ms=500) is None
        state = raw.call(7, "read")
        assert state.ok and state.result["knobs"]["C10"] == 0.0  # a fresh backend...
        # ... which never saw the stale set: the audit log holds each command once
        records = server_process.audit()
        assert [r["args"]["C10"] for r in accepted(records, "set") if "C10" in r["args"]] == [2e-9]
        assert len(accepted(records, "acquire")) == 1
        applied = raw.call(8, "applied", {"seq": 6}).result
        assert applied["state"] == "applied" and applied["op"] == "acquire"
        assert raw.call(9, "applied", {"seq": 5}).result["state"] == "applied"
    finally:
        raw.close()


def test_killed_mid_command_is_reported_interrupted_not_reapplied(
    server_process: ServerProcess,
) -> None:
    raw = Raw(server_process.endpoint)
    try:
        assert raw.call(1, "set", {"setpoints": {"beam_blank": 0.0}}).ok
        raw.send(2, "acquire", request=RonchigramRequest(exposure_s=1e-3, wait_s=3.0))
        assert raw.reply(timeout_ms=700) is None  # still acquiring
        server_process.kill()
        server_process.start()
        retry = raw.call(2, "acquire", request=RonchigramRequest(exposure_s=1e-3, wait_s=3.0))
        assert not retry.ok and retry.error is not None
        assert retry.error.type == "OutcomeUnknownError"
        assert raw.call(3, "applied", {"seq": 2}).result["state"] == "interrupted"
        assert accepted(server_process.audit(), "acquire") == []
        # a request that never arrived: not_received, and a late copy is fenced off
        assert raw.call(4, "applied", {"seq": 10}).result["state"] == "not_received"
        raw.send(10, "set", {"setpoints": {"C10": 5e-9}})
        assert raw.reply(timeout_ms=500) is None
    finally:
        raw.close()


def test_remote_microscope_asks_whether_its_last_command_was_applied(
    server_process: ServerProcess,
) -> None:
    remote = RemoteMicroscope(server_process.endpoint, timeout_s=2.0, retries=0)
    try:
        remote.set({"beam_blank": 0.0})
        assert remote.applied()["state"] == "applied"
        assert remote.hello["exactly_once"] == "persistent"
    finally:
        remote.close(safe=False)


def test_eviction_by_other_clients_never_reapplies_or_rolls_back(thread_server: Any) -> None:
    server = thread_server(StaticMicroscope(shape=(64, 64)), max_cache_bytes=64 << 10)
    raw = Raw(server.endpoint)
    try:
        assert raw.call(1, "set", {"setpoints": {"beam_blank": 0.0}}).ok
        assert raw.call(2, "set", {"setpoints": {"C10": 1e-9}}).ok
        assert raw.call(3, "set", {"setpoints": {"C10": 2e-9}}).ok
        assert raw.call(4, "acquire", request=ACQUIRE).ok
        dose = server.scope.dose_used_e
        for index in range(100):  # more client ids than the old cache of 64 held
            other = RemoteMicroscope(server.endpoint, client_id=f"other-{index}")
            other.acquire(ACQUIRE) if index % 10 == 0 else other.read()
            other.close(safe=False)
        others = server.scope.dose_used_e - dose
        retry = raw.call(4, "acquire", request=ACQUIRE)  # its image was evicted
        assert not retry.ok and retry.error is not None
        assert retry.error.type == "AlreadyAppliedError"
        assert server.scope.dose_used_e == dose + others  # not acquired again
        raw.send(2, "set", {"setpoints": {"C10": 1e-9}})  # a stale copy
        assert raw.reply(timeout_ms=300) is None
        assert server.scope.microscope.read().knobs["C10"] == 2e-9
    finally:
        raw.close()


def test_typed_errors_round_trip() -> None:
    for cls in (AlreadyAppliedError, OutcomeUnknownError):
        info = protocol.ErrorInfo(type=cls.__name__, message="m")
        from emauto.drivers.zmq.client import error_from_reply

        assert isinstance(error_from_reply(info), cls)
    assert json.dumps({"ok": True})


def test_forgotten_clients_raise_a_floor_that_a_huge_seq_cannot_push_past_the_clock(
    tmp_path: Path,
) -> None:
    import time

    from emauto.drivers.zmq.ledger import Ledger

    ledger = Ledger(tmp_path / "ledger.jsonl", max_clients=2)
    ledger.start("u/hostile", (1 << 62) - 1, "safe")
    ledger.finish("u/hostile", (1 << 62) - 1, "safe", ok=True)
    ledger.finish("u/a", 5, "read", ok=True)
    ledger.finish("u/b", 7, "set", ok=True, header=b'{"v":1}')
    assert not ledger.knows("u/hostile")
    assert ledger.floor <= time.time_ns() // 1000  # a new client starts above it
    ledger.close()
    again = Ledger(tmp_path / "ledger.jsonl", max_clients=2)  # replayed and compacted
    assert ledger.floor <= again.floor <= time.time_ns() // 1000
    last = again.last("u/b")
    assert last is not None and last.header == '{"v":1}' and last.ok
