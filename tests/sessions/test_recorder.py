"""The recorder at the Microscope boundary, the session reader, torn tails and corruption."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import emauto
from emauto.bench.driver import StaticMicroscope
from emauto.errors import (
    NonFiniteSetpointError,
    SessionCorruptError,
    SessionError,
    UnknownKnobError,
)
from emauto.microscope import RonchigramRequest
from emauto.sessions import Session
from emauto.sessions.store import DOCUMENTS, FRAMES
from emauto.wrappers.recording import RecordingMicroscope


def record_static(path: Path, steps: int = 3) -> RecordingMicroscope:
    scope = RecordingMicroscope.open(StaticMicroscope((32, 32)), path, {"seed": 7})
    for i in range(steps):
        scope.set({"C10": 1e-9 * (i + 1)})
        scope.acquire(RonchigramRequest(exposure_s=1e-3, probe_position_m=(1e-9 * i, 0.0)))
    return scope


def test_documents_follow_event_model_and_frames_round_trip(tmp_path: Path) -> None:
    scope = record_static(tmp_path / "s", steps=2)
    frame = scope.acquire(RonchigramRequest(exposure_s=2e-3))
    scope.close()
    names = [json.loads(line)[0] for line in (tmp_path / "s" / DOCUMENTS).read_text().splitlines()]
    assert names[:2] == ["start", "descriptor"] and names[-1] == "stop"
    assert set(names[2:-1]) == {"event"}
    session = Session(tmp_path / "s")
    assert session.complete and session.exit_status == "success"
    assert session.start["seed"] == 7 and session.start["backend"] == "static"
    assert [s.kind for s in session.steps] == ["set", "acquire"] * 2 + ["acquire", "safe"]
    assert session.steps[2].knob("C10") == pytest.approx(2e-9)
    stored = session.frame(session.steps[4])
    assert np.array_equal(stored.data, frame.data)
    assert stored.request == frame.request and stored.dose_e == frame.dose_e
    assert session.steps[-1].data["beam_blanked"] is True  # close() went safe, recorded


def test_rejected_commands_are_recorded_and_change_nothing(tmp_path: Path) -> None:
    scope = record_static(tmp_path / "s", steps=1)
    before = scope.read().knobs["C10"]
    with pytest.raises(NonFiniteSetpointError):
        scope.set({"C10": float("nan")})
    with pytest.raises(UnknownKnobError):
        scope.set({"C99": 1.0})
    assert scope.read().knobs["C10"] == before
    scope.close()
    rejected = [s for s in Session(tmp_path / "s").steps if s.kind == "rejected"]
    assert [s.error.split(":")[0] for s in rejected] == [
        "NonFiniteSetpointError",
        "UnknownKnobError",
    ]
    assert rejected[0].action == {"set": {"C10": "nan"}}


def test_twin_sessions_record_ground_truth(tmp_path: Path, tiny_sim_uri: str) -> None:
    scope = emauto.connect(tiny_sim_uri, record=tmp_path / "s", metadata={"policy": "none"})
    scope.set({"C10": 40e-9})
    scope.acquire(RonchigramRequest(exposure_s=1e-3, wait_s=1.0))
    scope.close()
    session = Session(tmp_path / "s")
    assert session.start["uri"] == tiny_sim_uri and session.start["policy"] == "none"
    after = session.steps[1]
    assert after.truth("C10") == pytest.approx(40e-9, rel=0.05)
    assert 0 <= after.truth() < 0.5  # 40 nm of defocus: a poor probe


def test_a_new_session_needs_an_empty_folder(tmp_path: Path) -> None:
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "other.txt").write_text("x")
    with pytest.raises(SessionError, match="not empty"):
        record_static(tmp_path / "s")


def test_a_torn_last_line_is_left_out_and_cut_only_on_request(tmp_path: Path) -> None:
    record_static(tmp_path / "s").recorder._log.close()  # a crash: no stop document
    log = tmp_path / "s" / DOCUMENTS
    intact = log.read_bytes()
    log.write_bytes(intact + b'["event",{"uid":"abc","da')
    session = Session(tmp_path / "s")  # reading changes nothing
    assert session.torn_bytes == len(b'["event",{"uid":"abc","da') and not session.complete
    assert session.exit_status == "incomplete" and len(session.steps) == 6
    assert log.read_bytes() == intact + b'["event",{"uid":"abc","da'
    assert Session(tmp_path / "s", repair=True).torn_bytes > 0  # asked for: cut off
    assert log.read_bytes() == intact
    assert Session(tmp_path / "s").torn_bytes == 0
    read_only = tmp_path / "t"
    record_static(read_only).recorder._log.close()
    (read_only / DOCUMENTS).write_bytes((read_only / DOCUMENTS).read_bytes() + b"[\n")
    assert Session(read_only).torn_bytes == 2  # a bad last line with its newline is torn too
    assert (read_only / DOCUMENTS).read_bytes().endswith(b"[\n")


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda p: (p / DOCUMENTS).write_text('["start",{}]\nnot json\n["stop",{}]\n'), "line 2"),
        (lambda p: (p / DOCUMENTS).write_text('["event",{}]\n'), "must be 'start'"),
        (lambda p: (p / DOCUMENTS).unlink(), "missing"),
        (lambda p: __import__("shutil").rmtree(p / FRAMES), "missing"),
        (lambda p: (p / DOCUMENTS).write_text(""), "must be 'start'"),
    ],
)
def test_corrupt_sessions_raise_a_clear_error(tmp_path: Path, damage, message: str) -> None:  # type: ignore[no-untyped-def]
    record_static(tmp_path / "s").close()
    damage(tmp_path / "s")
    with pytest.raises(SessionCorruptError, match=message):
        Session(tmp_path / "s")


def test_a_missing_frame_is_a_clear_error(tmp_path: Path) -> None:
    record_static(tmp_path / "s").close()
    session = Session(tmp_path / "s")
    import shutil

    shutil.rmtree(tmp_path / "s" / FRAMES / session.steps[1].frame_key)
    with pytest.raises(SessionCorruptError, match="unreadable"):
        session.frame(session.steps[1])
    with pytest.raises(SessionCorruptError, match="no frame"):
        session.frame(session.steps[0])
    with pytest.raises(SessionCorruptError, match="no such session"):
        Session(tmp_path / "nowhere")


def test_environments_record_their_commands_and_steps(tmp_path: Path, tiny_sim_uri: str) -> None:
    from emauto.tasks.probe_tuning.env import ProbeTuningEnv

    env = ProbeTuningEnv(tiny_sim_uri, record=tmp_path / "env")
    env.reset(seed=0)
    for _ in range(2):
        env.step(np.full(7, 0.1, dtype=np.float32))
    env.close()
    session = Session(tmp_path / "env")
    assert session.exit_status == "success" and session.start["env"] == "emauto/ProbeTuning-v0"
    assert len(session.episode) == 2 and len(session.acquisitions()) == 3
    assert session.episode[0].action == pytest.approx(np.full(7, 0.1))


def test_the_benchmark_records_each_method(tmp_path: Path, tiny_sim_uri: str) -> None:
    from emauto.tasks.probe_tuning.bench import run_probe_tuning_benchmark

    run_probe_tuning_benchmark(
        ["random"], episodes=2, microscope=tiny_sim_uri, budget_steps=2, record=tmp_path
    )
    session = Session(tmp_path / "random")
    assert session.complete and len(session.episode) == 4


@pytest.mark.parametrize(
    ("close", "status"),
    [
        (lambda scope: scope.close(), "abort"),  # a finally: close() asks for success
        (lambda scope: scope.__exit__(KeyboardInterrupt, KeyboardInterrupt(), None), "abort"),
    ],
)
def test_a_session_closed_while_ctrl_c_propagates_is_an_abort(  # type: ignore[no-untyped-def]
    tmp_path: Path, close, status: str
) -> None:
    scope = record_static(tmp_path / "s", steps=1)
    with pytest.raises(KeyboardInterrupt):
        try:
            raise KeyboardInterrupt
        finally:
            close(scope)
    session = Session(tmp_path / "s")
    assert session.exit_status == status and session.stop is not None
    assert "KeyboardInterrupt" in session.stop["reason"]
    assert session.steps[-1].kind == "safe"  # made safe, recorded, before the stop document


def test_a_session_closed_while_an_error_propagates_is_a_failure(tmp_path: Path) -> None:
    scope = record_static(tmp_path / "s", steps=1)
    with pytest.raises(RuntimeError):
        try:
            raise RuntimeError("lost the link")
        finally:
            scope.close()
    stop = Session(tmp_path / "s").stop
    assert stop is not None and stop["exit_status"] == "fail"
    assert stop["reason"] == "RuntimeError: lost the link"
    scope = record_static(tmp_path / "t", steps=1)
    try:
        raise RuntimeError("handled")
    except RuntimeError:
        pass
    scope.close()  # after a handled error: the truth is success
    assert Session(tmp_path / "t").exit_status == "success"
