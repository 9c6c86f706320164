"""RecordingMicroscope below and above other wrappers: the twin's ground truth is recorded."""

from __future__ import annotations

from pathlib import Path

import pytest

import emauto
from emauto.bench.driver import StaticMicroscope
from emauto.microscope import RonchigramRequest
from emauto.sessions import Session
from emauto.wrappers.counting import CountingMicroscope
from emauto.wrappers.recording import RecordingMicroscope
from emauto.wrappers.safety import SafeMicroscope, SafetyConfig


def test_ground_truth_is_recorded_through_wrappers(tmp_path: Path, tiny_sim_uri: str) -> None:
    twin = emauto.connect(tiny_sim_uri)
    counter = CountingMicroscope(SafeMicroscope(twin, SafetyConfig()))
    scope = RecordingMicroscope.open(counter, tmp_path / "s")
    assert scope.recorder.with_truth
    scope.set({"C10": 40e-9})
    scope.acquire(RonchigramRequest(exposure_s=1e-3, wait_s=1.0))
    scope.close()
    assert counter.acquisitions == 1
    step = Session(tmp_path / "s").steps[1]
    assert step.truth("C10") == pytest.approx(40e-9, rel=0.05) and 0 <= step.truth() < 0.5


def test_no_truth_is_recorded_without_a_twin(tmp_path: Path) -> None:
    scope = RecordingMicroscope.open(CountingMicroscope(StaticMicroscope((16, 16))), tmp_path)
    assert not scope.recorder.with_truth
    with scope:
        scope.acquire(RonchigramRequest(exposure_s=1e-3))
    session = Session(tmp_path)
    assert session.exit_status == "success" and [s.kind for s in session.steps] == [
        "acquire",
        "safe",
    ]
