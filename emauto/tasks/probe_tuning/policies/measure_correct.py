"""Measure and correct with the CNN estimator, as vendor ML tuning does.

The estimator is precise when the latest frame is well out of focus (a fine speckle that
carries the aberrations) and poor near focus (a nearly flat frame), and it needs a known
change between its two frames to tell over- from under-focus. So the policy alternates:

1. **probe**: add a known defocus (``probe_defocus_m``, +60 nm from a random start so the
   frame cannot land near focus, +40 nm once corrected) and measure the aberrations there;
2. **correct**: cancel every tuned aberration of that measurement, the probe defocus with
   it, in one step (limited to one step per knob), which lands near the aligned state.

A successful episode therefore takes 3 Ronchigrams (reset, probe, correct), 5 with one
more round.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emauto.models.estimator import Estimate, RonchigramEstimator, load_default_estimator
from emauto.tasks.probe_tuning.policies.base import Observation, ProbeOffset, StopDecision


class MeasureCorrectPolicy:
    """CNN probe-and-correct: ``name = "cnn"``."""

    name = "cnn"

    def __init__(
        self,
        knobs: Sequence[str],
        step_limits_m: Sequence[float] | np.ndarray,
        estimator: RonchigramEstimator | None = None,
        first_probe_m: float = 60e-9,
        probe_defocus_m: float = 40e-9,
    ) -> None:
        self.knobs = tuple(knobs)
        self.step_limits_m = np.asarray(step_limits_m, dtype=np.float64)
        self.estimator = estimator or load_default_estimator()
        self.first_probe_m = first_probe_m
        self.probe_defocus_m = probe_defocus_m
        self.estimate: Estimate | None = None
        self._next = "probe"
        self._rounds = 0
        self._offset = ProbeOffset(self.knobs, self.step_limits_m)

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self.estimate = None
        self._next = "probe"
        self._rounds = 0
        self._offset = ProbeOffset(self.knobs, self.step_limits_m)

    def stop(self) -> StopDecision | None:
        """No stop rule: the estimate is too coarse near focus to say the probe is aligned."""
        return None

    def suggest(self) -> np.ndarray:
        change = np.zeros(len(self.knobs))
        estimate = self.estimate
        if self._next == "probe" or estimate is None:
            if "C10" in self.knobs:
                size = self.first_probe_m if self._rounds == 0 else self.probe_defocus_m
                change[self.knobs.index("C10")] = size
            action = np.clip(change / self.step_limits_m, -1, 1).astype(np.float32)
            self._offset.add(action)
            return action
        change = np.array([-estimate.mean_m.get(k, 0.0) for k in self.knobs])
        self._offset.offset_m = 0.0  # the correction cancels the probe defocus with it
        return np.clip(change / self.step_limits_m, -1, 1).astype(np.float32)

    def final_action(self) -> np.ndarray | None:
        """The probe defocus off, if the episode ends between a probe and its correction."""
        return self._offset.undo()

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        self.estimate = self.estimator.estimate(observation["ronchigram"], info["change_m"])
        if self._next == "probe":
            self._next = "correct"
        else:
            self._next, self._rounds = "probe", self._rounds + 1
