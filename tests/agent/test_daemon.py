"""The daemon: a plan on the twin, control over its socket, and safe on every exit path."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from agent_helpers import short_plan

import emauto
from emauto.agent.control import ControlServer, send_command
from emauto.agent.daemon import Daemon, RunResult, run_daemon
from emauto.agent.plans import DaemonConfig
from emauto.agent.state import State
from emauto.drivers.zmq.server import MicroscopeServer
from emauto.errors import ConfigError
from emauto.sessions import Session
from emauto.units import load_yaml
from emauto.wrappers.safety import SafeMicroscope, SafetyConfig


def free_address() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"tcp://127.0.0.1:{probe.getsockname()[1]}"


def ends_safe(session: Path) -> bool:
    """The session's last microscope step is a safe() that left the beam blanked."""
    last = Session(session).steps[-1]
    return last.kind == "safe" and last.data["beam_blanked"] is True


def test_a_plan_runs_recorded_and_ends_safe(recorded_run: RunResult) -> None:
    assert recorded_run.exit_status == "success" and recorded_run.safe
    align, survey = recorded_run.tasks
    assert align["policy"] == "shift" and 2 <= align["acquisitions"] <= 13
    assert align["start_strehl"] < 0.5
    assert survey["shape"] == [32, 32]
    session = Session(recorded_run.session)
    assert session.exit_status == "success" and session.tasks() == ["align_probe", "survey"]
    assert session.start["policies"][0]["policy"] == "shift"
    assert session.start["plan"][0]["seed"] == 5
    assert len(session.episode) >= 1
    assert ends_safe(recorded_run.session)


def run_in_thread(daemon: Daemon) -> tuple[threading.Thread, list[RunResult]]:
    results: list[RunResult] = []
    thread = threading.Thread(target=lambda: results.append(daemon.run()))
    thread.start()
    return thread, results


def wait_progress(daemon: Daemon, frames: int) -> None:
    deadline = time.monotonic() + 120
    while daemon.status()["progress"]["done"] < frames:
        assert time.monotonic() < deadline, daemon.status()
        time.sleep(0.02)


def test_pause_blanks_resume_continues_and_abort_ends_safe(
    tmp_path: Path, tiny_sim_uri: str
) -> None:
    daemon = Daemon(
        short_plan(tiny_sim_uri, max_acquisitions=200), session=tmp_path / "s", progress=False
    )
    control = ControlServer(free_address(), daemon.handle)
    try:
        thread, results = run_in_thread(daemon)
        wait_progress(daemon, 3)
        reply = send_command(control.address, "pause")
        assert reply["ok"] and reply["status"]["state"] == "paused"
        time.sleep(0.5)
        done = daemon.status()["progress"]["done"]
        time.sleep(0.3)
        assert daemon.status()["progress"]["done"] == done  # nothing acquired while paused
        assert send_command(control.address, "resume")["status"]["state"] == "running"
        wait_progress(daemon, done + 2)
        assert send_command(control.address, "abort")["status"]["state"] == "aborting"
        thread.join(60)
        refused = send_command(control.address, "resume")
        assert not refused["ok"] and refused["error"]["type"] == "AgentStateError"
    finally:
        control.close()
    assert results[0].exit_status == "abort" and results[0].safe
    assert daemon.machine.state == State.IDLE
    session = Session(tmp_path / "s")
    assert session.exit_status == "abort"
    kinds = [s.kind for s in session.steps]
    paused_at = kinds.index("safe")  # the pause blanked the beam
    assert session.steps[paused_at].data["beam_blanked"] is True
    assert session.steps[paused_at + 1].action == {"set": {"beam_blank": 0.0}}  # resumed
    assert ends_safe(tmp_path / "s")


def test_a_crashed_policy_trips_the_daemon_and_ends_safe(
    tmp_path: Path, tiny_sim_uri: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from emauto.tasks.probe_tuning.policies.base import RunsToTheBudget

    class Crashing(RunsToTheBudget):
        name = "crashing"
        calls = 0

        def reset(self, observation: Any, info: Any) -> None:
            pass

        def suggest(self) -> np.ndarray:
            self.calls += 1
            if self.calls > 2:
                raise RuntimeError("policy bug")
            return np.zeros(7, dtype=np.float32)

        def ingest(self, *args: Any) -> None:
            pass

    import emauto.tasks.probe_tuning.policies.registry as registry

    monkeypatch.setattr(registry, "make_policy", lambda *a, **k: Crashing())
    daemon = Daemon(short_plan(tiny_sim_uri), session=tmp_path / "s", progress=False)
    result = daemon.run()
    assert result.exit_status == "fail" and "policy bug" in result.error and result.safe
    assert daemon.machine.state == State.TRIPPED
    assert Session(tmp_path / "s").exit_status == "fail"
    assert ends_safe(tmp_path / "s")
    daemon.handle("reset")
    assert daemon.machine.state == State.IDLE


def test_a_lost_link_trips_the_daemon_and_the_server_watchdog_blanks_the_beam(
    tmp_path: Path, tiny_sim_uri: str
) -> None:
    twin = emauto.connect(tiny_sim_uri)
    scope = SafeMicroscope(twin, SafetyConfig(heartbeat_interval_s=0.1, missed_heartbeats=3))
    server = MicroscopeServer(scope, "tcp://127.0.0.1:*")
    endpoint = server.open()
    serving = threading.Thread(target=server.serve_forever, kwargs={"poll_ms": 10})
    serving.start()
    scope.start_watchdog()
    config = short_plan(f"{endpoint}?timeout=2&retries=0", max_acquisitions=500)
    config = config.model_copy(update={"heartbeat_s": 0.03})
    daemon = Daemon(config, session=tmp_path / "s", progress=False)
    thread, results = run_in_thread(daemon)
    try:
        wait_progress(daemon, 3)
        server.stop()  # the link is gone: no more replies, no more heartbeats
        serving.join(10)
        thread.join(60)
        assert results[0].exit_status == "fail" and not results[0].safe
        assert daemon.machine.state == State.TRIPPED
        deadline = time.monotonic() + 5
        while not twin.read().beam_blanked:  # the server's watchdog went safe on its own
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert Session(tmp_path / "s").exit_status == "fail"
    finally:
        server.close()
        scope.close()


def test_run_daemon_serves_status_over_the_control_socket(
    tmp_path: Path, tiny_sim_uri: str
) -> None:
    address = free_address()
    config = short_plan(tiny_sim_uri).model_copy(update={"control": address})
    results: list[RunResult] = []
    thread = threading.Thread(
        target=lambda: results.append(run_daemon(config, session=tmp_path / "s"))
    )
    thread.start()
    statuses = []
    while thread.is_alive():
        with contextlib.suppress(emauto.errors.DeadlineExceededError):
            statuses.append(send_command(address, "status", timeout_s=0.5))
        time.sleep(0.05)
    assert results[0].exit_status == "success"
    assert any(s["ok"] and s["status"]["state"] == "running" for s in statuses)


def test_the_control_socket_rejects_malformed_commands(tmp_path: Path) -> None:
    import zmq

    calls: list[str] = []
    server = ControlServer(free_address(), lambda c: calls.append(c) or {"state": "idle"})
    context = zmq.Context.instance()
    try:
        for raw in (b"not json", b'{"command": "explode"}', b'{"command": "status", "x": 1}'):
            request = context.socket(zmq.REQ)
            request.connect(server.address)
            request.send(raw)
            assert request.poll(2000)
            reply = request.recv_json()
            request.close(linger=0)
            assert reply["ok"] is False and reply["error"]["type"] == "ProtocolError"
        assert calls == []
        assert send_command(server.address, "status")["status"] == {"state": "idle"}
    finally:
        server.close()


@pytest.mark.parametrize(
    ("yaml_text", "where"),
    [
        ("plan: [{kind: align_probe}, {kind: align_probe}]\n", "task names must be unique"),
        ("plan: [{kind: dance}]\n", "plan.0"),
        ("control: tcp://0.0.0.0:5580\n", "loopback"),
        ("plan: [{kind: align_probe, policy: magic}]\n", "plan.0.align_probe.policy"),
        ("plan: [{kind: align_probe, env: {max_steps: -1}}]\n", "plan.0.align_probe.env.max_steps"),
    ],
)
def test_bad_daemon_configs_name_the_bad_field(tmp_path: Path, yaml_text: str, where: str) -> None:
    path = tmp_path / "daemon.yaml"
    path.write_text(yaml_text)
    with pytest.raises(ConfigError, match=where.replace(".", r"\.")):
        load_yaml(path, DaemonConfig)


def test_policy_versions_name_the_weights() -> None:
    from emauto.agent.plans import AlignProbeTask

    rl = AlignProbeTask(policy="rl").provenance()
    assert {"weights_sha256", "estimator_sha256"} <= set(rl)
    assert "weights_sha256" in AlignProbeTask(policy="cnn").provenance()
    assert "weights_sha256" not in AlignProbeTask(policy="shift").provenance()
