"""Hand-off: a policy that gives up makes the daemon blank the beam, pause and ask; the
question and the answer are in the session and `emauto replay` shows them."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from agent_helpers import short_plan
from handoff_policy_helper import GivesUp

from emauto.agent.daemon import Daemon, RunResult
from emauto.agent.state import State
from emauto.errors import AgentStateError
from emauto.sessions import Session


@pytest.fixture
def gives_up(monkeypatch: pytest.MonkeyPatch) -> None:
    import emauto.tasks.probe_tuning.policies.registry as registry

    monkeypatch.setattr(registry, "make_policy", lambda *a, **k: GivesUp())


def start(daemon: Daemon) -> tuple[threading.Thread, list[RunResult]]:
    results: list[RunResult] = []
    thread = threading.Thread(target=lambda: results.append(daemon.run()))
    thread.start()
    deadline = time.monotonic() + 60
    while daemon.status()["question"] is None:
        assert time.monotonic() < deadline and thread.is_alive(), daemon.status()
        time.sleep(0.02)
    return thread, results


@pytest.mark.usefixtures("gives_up")
def test_approve_goes_on_and_the_session_records_question_and_answer(
    tmp_path: Path, tiny_sim_uri: str
) -> None:
    daemon = Daemon(short_plan(tiny_sim_uri), session=tmp_path / "s", progress=False)
    thread, results = start(daemon)
    status = daemon.status()
    assert status["state"] == "paused" and status["question"]["choices"] == [
        "approve",
        "take_over",
        "abort",
    ]
    assert "without declaring the probe aligned" in status["question"]["text"]
    with pytest.raises(AgentStateError, match="waits for an answer"):
        daemon.handle("resume")
    daemon.handle("answer", {"choice": "approve"})
    thread.join(60)
    result = results[0]
    assert result.exit_status == "success" and result.safe
    assert result.tasks[0]["operator"] == "approve" and result.tasks[1]["kind"] == "acquire_image"
    session = Session(tmp_path / "s")
    assert [(e["kind"], e["choice"]) for e in session.operator] == [
        ("question", ""),
        ("answer", "approve"),
    ]
    assert session.operator[0]["task"] == "align_probe"
    assert session.operator[0]["question_id"] == session.operator[1]["question_id"] == 1
    # the beam was blanked while the daemon asked
    kinds = [s.kind for s in session.steps]
    assert "safe" in kinds[: kinds.index("acquire", len(kinds) - 3)]


@pytest.mark.usefixtures("gives_up")
@pytest.mark.parametrize(("how", "status"), [("take_over", "abort"), ("abort-button", "abort")])
def test_take_over_or_abort_ends_the_plan_safe(
    tmp_path: Path, tiny_sim_uri: str, how: str, status: str
) -> None:
    daemon = Daemon(short_plan(tiny_sim_uri), session=tmp_path / "s", progress=False)
    thread, results = start(daemon)
    if how == "abort-button":
        daemon.handle("abort")
    else:
        daemon.handle("answer", {"choice": how})
    thread.join(60)
    assert results[0].exit_status == status and results[0].safe
    assert len(results[0].tasks) == 1  # the survey never ran
    assert daemon.machine.state == State.IDLE
    answers = [e["choice"] for e in Session(tmp_path / "s").operator if e["kind"] == "answer"]
    assert answers == ["take_over" if how == "take_over" else "abort"]


def test_replay_shows_the_hand_off(
    recorded_session: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from emauto.cli import main

    assert main(["replay", str(recorded_session)]) == 0
    assert json.loads(capsys.readouterr().out)["operator"] == []


@pytest.mark.usefixtures("gives_up")
def test_replay_of_a_session_with_a_hand_off_lists_it(
    tmp_path: Path, tiny_sim_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from emauto.cli import main

    daemon = Daemon(short_plan(tiny_sim_uri), session=tmp_path / "s", progress=False)
    thread, _ = start(daemon)
    daemon.handle("answer", {"choice": "approve"})
    thread.join(60)
    assert main(["replay", str(tmp_path / "s")]) == 0
    shown = json.loads(capsys.readouterr().out)["operator"]
    assert [e["kind"] for e in shown] == ["question", "answer"] and shown[1]["choice"] == "approve"


@pytest.mark.usefixtures("gives_up")
def test_a_question_nobody_answers_is_aborted_after_the_timeout(
    tmp_path: Path, tiny_sim_uri: str
) -> None:
    config = short_plan(tiny_sim_uri).model_copy(update={"handoff_timeout_s": 0.3})
    result = Daemon(config, session=tmp_path / "s", progress=False).run()
    assert result.exit_status == "abort" and result.safe and len(result.tasks) == 1
    answer = Session(tmp_path / "s").operator[-1]
    assert answer["choice"] == "abort" and answer["text"].startswith("daemon (no answer")
