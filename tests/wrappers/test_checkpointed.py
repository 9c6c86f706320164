"""CheckpointedMicroscope: set and acquire pass a checkpoint; a pause blanks, then unblanks."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from emauto.bench.driver import StaticMicroscope
from emauto.errors import AbortedError
from emauto.microscope import MicroscopeState, RonchigramRequest
from emauto.wrappers.checkpointed import CheckpointedMicroscope


class Log(StaticMicroscope):
    """Notes set and safe, in order, into a shared list."""

    def __init__(self, events: list[str]) -> None:
        super().__init__(shape=(16, 16))
        self.events = events

    def set(self, setpoints: Mapping[str, float]) -> MicroscopeState:
        self.events.append(f"set {dict(setpoints)}")
        return super().set(setpoints)

    def safe(self) -> None:
        self.events.append("safe")
        super().safe()


def test_running_passes_the_checkpoint_once_per_command() -> None:
    events: list[str] = []
    scope = CheckpointedMicroscope(Log(events), lambda: events.append("checkpoint"), lambda: False)
    scope.set({"C10": 1e-9})
    scope.acquire(RonchigramRequest(exposure_s=1e-3))
    scope.read()
    scope.describe()
    assert events == ["checkpoint", "set {'C10': 1e-09}", "checkpoint"]


def test_a_pause_blanks_waits_unblanks_and_checks_again() -> None:
    events: list[str] = []
    paused = [True]

    def checkpoint() -> None:
        events.append("checkpoint")
        paused[0] = False  # the operator resumed while the checkpoint waited

    scope = CheckpointedMicroscope(Log(events), checkpoint, lambda: paused[0])
    frame = scope.acquire(RonchigramRequest(exposure_s=1e-3))
    assert events == ["safe", "checkpoint", "set {'beam_blank': 0.0}", "checkpoint"]
    assert not frame.state.beam_blanked


def test_an_abort_stops_the_command_before_the_backend_sees_it() -> None:
    events: list[str] = []

    def checkpoint() -> None:
        raise AbortedError("the operator aborted the plan")

    scope = CheckpointedMicroscope(Log(events), checkpoint, lambda: False)
    with pytest.raises(AbortedError):
        scope.set({"C10": 1e-9})
    assert events == [] and scope.read().knobs["C10"] != 1e-9
