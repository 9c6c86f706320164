"""The long-running daemon: a queue of plans, one session each, tripped until reset, a lost
link seen within the heartbeat bound (a real `emauto serve` killed), and `ctl submit`."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from agent_helpers import short_plan
from test_daemon import free_address

from emauto.agent.control import send_command
from emauto.agent.daemon import Daemon, needs_operator, plan_from_file
from emauto.agent.demo import _start_server, _stop_server
from emauto.agent.state import State
from emauto.errors import AgentStateError, ConfigError, DeadlineExceededError
from emauto.sessions import Session

SURVEY = {"kind": "acquire_image", "name": "survey", "shape": [16, 16], "fov_m": 1e-9}


def wait_until(predicate: Any, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline
        time.sleep(0.02)


def serving(daemon: Daemon) -> threading.Thread:
    thread = threading.Thread(target=daemon.serve, kwargs={"queue_config_plan": False})
    thread.start()
    return thread


def test_plans_queue_run_one_at_a_time_and_a_trip_holds_the_queue_until_reset(
    tmp_path: Path, tiny_sim_uri: str
) -> None:
    config = short_plan(tiny_sim_uri).model_copy(update={"sessions": tmp_path})
    daemon = Daemon(config, progress=False)
    thread = serving(daemon)
    try:
        first = daemon.submit({"name": "one", "plan": [SURVEY]})
        broken = daemon.submit({"name": "broken", "plan": [{**SURVEY, "detector": "nothing"}]})
        after = daemon.submit({"name": "after", "plan": [SURVEY]})
        assert [p["id"] for p in daemon.status()["queue"]] == [first.id, broken.id, after.id]
        wait_until(lambda: daemon.machine.state == State.TRIPPED)
        time.sleep(0.5)  # tripped: the next plan waits for an operator
        status = daemon.status()
        assert [p["name"] for p in status["queue"]] == ["after"]
        assert [h["exit_status"] for h in status["history"]] == ["success", "fail"]
        with pytest.raises(AgentStateError, match="cannot resume while tripped"):
            daemon.handle("resume")
        daemon.handle("reset")
        wait_until(lambda: len(daemon.history) == 3)
        assert daemon.history[-1]["exit_status"] == "success"
        sessions = [Path(h["session"]) for h in daemon.history]
        assert len(set(sessions)) == 3  # each plan its own session
        assert Session(sessions[0]).exit_status == "success"
        assert Session(sessions[1]).exit_status == "fail"
        assert Session(sessions[2]).start["plan_name"] == "after"
    finally:
        daemon.stop()
        thread.join(30)
    assert not thread.is_alive()


def test_a_submitted_plan_is_validated_and_names_the_bad_field(
    tmp_path: Path, tiny_sim_uri: str
) -> None:
    daemon = Daemon(short_plan(tiny_sim_uri), progress=False)
    with pytest.raises(ConfigError, match=r"plan\.0\.align_probe\.policy"):
        daemon.submit({"plan": [{"kind": "align_probe", "policy": "magic"}]})
    with pytest.raises(ConfigError, match="task names must be unique"):
        daemon.submit({"plan": [SURVEY, SURVEY]})
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"name": "mine", "plan": [SURVEY], "extra": 1}))
    with pytest.raises(ConfigError, match="unknown keys"):
        plan_from_file(path)
    assert daemon.status()["queue"] == []


def test_needs_operator_reads_the_task_outcome() -> None:
    align = {"kind": "align_probe", "ended_by": "policy"}
    assert needs_operator({**align, "declared_aligned": True}) is None
    assert "without declaring" in str(needs_operator({**align, "declared_aligned": False}))
    assert needs_operator({**align, "ended_by": "budget", "declared_aligned": False}) is None
    assert needs_operator({"kind": "align_probe", "refused": 2}) == "2 measurements refused"
    assert needs_operator({"kind": "acquire_image", "needs_operator": "odd image"}) == "odd image"


@pytest.mark.slow  # starts `emauto serve` in a subprocess
def test_a_killed_server_trips_the_daemon_within_the_heartbeat_bound(
    tmp_path: Path, tiny_sim_uri: str
) -> None:
    uri = free_address()
    server = _start_server(uri, tiny_sim_uri, tmp_path / "server.log")
    try:
        config = short_plan(f"{uri}?timeout=5&retries=0", max_acquisitions=2000)
        config = config.model_copy(update={"heartbeat_s": 0.25, "link_timeout_s": 1.5})
        daemon = Daemon(config, session=tmp_path / "s", progress=False)
        results: list[Any] = []
        worker = threading.Thread(target=lambda: results.append(daemon.run()))
        worker.start()
        wait_until(lambda: daemon.status()["progress"]["done"] >= 2, 120)
        assert daemon.status()["link"]["state"] == "up"
        os.kill(server.pid, signal.SIGKILL)
        killed = time.monotonic()
        wait_until(lambda: daemon.machine.state == State.TRIPPED, 10)
        seen_after = time.monotonic() - killed
        status = daemon.status()
        assert seen_after <= 2.0, seen_after
        assert status["link"]["state"] == "lost" and "lost link" in status["reason"]
        worker.join(30)
        assert results[0].exit_status == "fail"
        with pytest.raises(AgentStateError, match="cannot abort while tripped"):
            daemon.handle("abort")
        assert daemon.machine.state == State.TRIPPED  # until an operator resets it
        daemon.handle("reset")
        assert daemon.machine.state == State.IDLE
    finally:
        server.wait(10) if server.poll() is not None else _stop_server(server)


@pytest.mark.slow  # the daemon and ctl as subprocesses
def test_the_long_running_daemon_takes_plans_from_ctl_submit(
    tmp_path: Path, tiny_sim_uri: str
) -> None:
    control = free_address()
    config = tmp_path / "daemon.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "microscope": tiny_sim_uri,
                "control": control,
                "sessions": str(tmp_path / "sessions"),
                "plan": [SURVEY],
                "console": {"enabled": False},
            }
        )
    )
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({"name": "from-ctl", "plan": [SURVEY]}))
    daemon = subprocess.Popen(
        [sys.executable, "-m", "emauto", "daemon", "--config", str(config), "--empty"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip

    def status(timeout_s: float = 0.5) -> dict[str, Any]:
        try:
            return dict(send_command(control, "status", timeout_s=timeout_s)["status"])
        except DeadlineExceededError:  # not listening yet
            return {}

    try:
        wait_until(lambda: daemon.poll() is None and status(), 120)
        done = subprocess.run(
            [sys.executable, "-m", "emauto", "ctl", "submit", str(plan), "--control", control],
            capture_output=True, text=True, timeout=60, check=False,
        )  # fmt: skip
        assert done.returncode == 0 and json.loads(done.stdout)["ok"], done.stderr
        wait_until(lambda: status().get("history"), 120)
        now = status(timeout_s=10)
        history = now["history"]
        assert history[0]["name"] == "from-ctl" and history[0]["exit_status"] == "success"
        assert now["state"] == "idle" and daemon.poll() is None  # still up, waiting for plans
        assert send_command(control, "shutdown")["ok"]
        out, err = daemon.communicate(timeout=60)
    finally:
        if daemon.poll() is None:
            daemon.kill()
    assert daemon.returncode == 0, err
    assert json.loads(out)["history"][0]["name"] == "from-ctl"
