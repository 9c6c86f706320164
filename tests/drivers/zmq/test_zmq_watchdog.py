"""Lost heartbeats: the server goes safe within the configured bound and stays there until an
operator resets it; every exit path of the server leaves the microscope safe."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from zmq_helpers import ServerProcess, write_server_config

from emauto.bench.driver import StaticMicroscope
from emauto.drivers.zmq.client import RemoteMicroscope
from emauto.errors import WatchdogTrippedError
from emauto.microscope import RonchigramRequest
from emauto.wrappers.safety import SafetyConfig

WATCHDOG = SafetyConfig(heartbeat_interval_s=0.1, missed_heartbeats=3)


def wait_for(condition: Any, timeout_s: float = 20.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.02)
    return False


def test_silent_agent_trips_the_watchdog_until_operator_reset(thread_server: Any) -> None:
    server = thread_server(StaticMicroscope(shape=(8, 8)), WATCHDOG)
    with RemoteMicroscope(server.endpoint, timeout_s=5.0) as remote:
        remote.set({"beam_blank": 0.0})
        silent_from = time.monotonic()
        assert wait_for(lambda: remote.status()["tripped"])  # status is not a heartbeat
        assert time.monotonic() - silent_from >= 0.3  # not before the configured bound
        assert remote.read().beam_blanked
        with pytest.raises(WatchdogTrippedError, match="operator must reset"):
            remote.set({"beam_blank": 0.0})
        with pytest.raises(WatchdogTrippedError):
            remote.acquire(RonchigramRequest(exposure_s=1e-3))
        remote.heartbeat()
        assert remote.status()["tripped"]  # heartbeats do not clear it
        remote.reset_watchdog()  # loopback without CURVE: an operator
        remote.set({"beam_blank": 0.0})
        assert not remote.read().beam_blanked
    events = [r for r in server.scope.audit.records if r["command"] == "watchdog"]
    assert len(events) == 1 and events[0]["args"]["bound_s"] == pytest.approx(0.3)
    # the server checks between polls (10 ms here): it trips just past the bound, not later
    assert 0.3 < events[0]["args"]["silent_s"] < 0.3 + 2.0


def test_heartbeat_thread_keeps_the_watchdog_quiet(thread_server: Any) -> None:
    relaxed = SafetyConfig(heartbeat_interval_s=0.2, missed_heartbeats=5)  # 1 s: room for load
    server = thread_server(StaticMicroscope(shape=(8, 8)), relaxed)
    with RemoteMicroscope(server.endpoint, timeout_s=5.0, heartbeat_s=0.05) as remote:
        remote.set({"beam_blank": 0.0})
        time.sleep(1.5)
        assert not remote.status()["tripped"]
        assert not remote.read().beam_blanked


def test_server_exit_leaves_the_microscope_safe(tmp_path: Path, sim_config_file: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    config = write_server_config(
        tmp_path / "server.yaml",
        "sim",
        sim_config=sim_config_file,
        audit_log=str(audit),
        safety={"heartbeat_interval_s": 0.2, "missed_heartbeats": 2},
    )
    server = ServerProcess(config).start()
    try:
        with RemoteMicroscope(server.endpoint, timeout_s=30.0) as remote:
            remote.set({"beam_blank": 0.0})
            assert wait_for(lambda: remote.status()["tripped"])
            assert remote.read().beam_blanked
    finally:
        assert server.stop() == 0
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    commands = [(r["command"], r["outcome"]) for r in records]
    assert ("watchdog", "event") in commands
    assert commands[-2:] == [("safe", "accepted"), ("close", "accepted")]


def test_client_close_goes_safe_unless_handing_over(thread_server: Any) -> None:
    server = thread_server(StaticMicroscope(shape=(8, 8)))
    remote = RemoteMicroscope(server.endpoint, timeout_s=5.0)
    remote.set({"beam_blank": 0.0})
    remote.close(safe=False)
    assert not server.scope.microscope.read().beam_blanked
    remote = RemoteMicroscope(server.endpoint, timeout_s=5.0)
    remote.close()
    assert server.scope.microscope.read().beam_blanked


def test_long_acquisition_by_a_heartbeating_client_does_not_trip(thread_server: Any) -> None:
    from emauto.bench.security import SlowScanMicroscope
    from emauto.microscope import ImageRequest, RasterScan

    backend = SlowScanMicroscope(shape=(8, 8), s_per_point=1.2 / 4096)  # a 1.2 s scan
    server = thread_server(backend, WATCHDOG)  # bound 0.3 s: 4 x shorter than the scan
    with RemoteMicroscope(server.endpoint, timeout_s=5.0, heartbeat_s=0.05) as remote:
        remote.set({"beam_blank": 0.0})
        remote.acquire(ImageRequest(scan=RasterScan(shape=(64, 64)), dwell_s=2e-4))
        time.sleep(0.2)
        assert not remote.status()["tripped"]
        remote.set({"C10": 1e-9})  # not refused
    assert not [r for r in server.scope.audit.records if r["command"] == "watchdog"]


def test_other_clients_polling_do_not_keep_a_dead_controller_alive(thread_server: Any) -> None:
    server = thread_server(StaticMicroscope(shape=(8, 8)), WATCHDOG)
    agent = RemoteMicroscope(server.endpoint, timeout_s=5.0, client_id="agent")
    agent.set({"beam_blank": 0.0})
    agent.close(safe=False)  # the controlling agent dies, beam on
    died = time.monotonic()
    with RemoteMicroscope(server.endpoint, timeout_s=5.0, client_id="monitor") as monitor:
        tripped = False
        while time.monotonic() - died < 5.0 and not tripped:
            monitor.read()  # a second client polling every 0.1 s
            tripped = monitor.status()["tripped"]
            time.sleep(0.1)
        assert tripped, "a monitor's reads kept the dead agent's watchdog alive"
        assert monitor.read().beam_blanked
    events = [r for r in server.scope.audit.records if r["command"] == "watchdog"]
    assert events[0]["args"]["controller"].startswith("agent@")
    assert events[0]["args"]["silent_s"] < 0.3 + 2.0
