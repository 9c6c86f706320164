"""`SimulatedMicroscope.aberrations_after_move`: what a move would leave, lag and hysteresis
included, with nothing changed (the training labels of `rl_belief`)."""

from __future__ import annotations

import pytest

from emauto.drivers.sim.twin import SimulatedMicroscope
from emauto.errors import InvalidRequestError


def test_a_predicted_move_is_the_real_one_and_changes_nothing(carbon: SimulatedMicroscope) -> None:
    state = carbon.read()
    carbon.set({"C21a": state.knobs["C21a"] + 200e-9})  # away ...
    before = carbon.true_aberrations()
    change = {"C21a": -120e-9, "C10": 3e-9}  # ... and back: the backlash band shows
    predicted = carbon.aberrations_after_move(change, 0.1)
    assert carbon.true_aberrations() == before  # nothing moved
    now = carbon.read().knobs
    carbon.set({k: now[k] + v for k, v in change.items()})
    real = carbon.aberrations_after(0.1)
    assert abs(predicted.C21a - real.C21a) < 1e-15
    assert abs(predicted.C10 - real.C10) < 1e-15
    naive = before.C21a - 120e-9  # without lag and hysteresis: nanometres off
    assert abs(real.C21a - naive) > 2e-9


def test_only_aberration_knobs_and_a_real_wait(carbon: SimulatedMicroscope) -> None:
    with pytest.raises(InvalidRequestError):
        carbon.aberrations_after_move({"stage_x": 1e-9}, 0.1)
    with pytest.raises(InvalidRequestError):
        carbon.aberrations_after_move({"C10": 1e-9}, float("nan"))
