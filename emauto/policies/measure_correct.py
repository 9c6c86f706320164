"""Measure and correct with the CNN estimator, as vendor ML tuning does.

The first step after a reset is a known defocus (``probe_defocus_m``): the frame pair then
shows how the pattern changes with focus, which fixes the sign of defocus. Every later step
sets the tuned knobs to cancel the estimated aberrations of the latest frame (limited to
one step per knob), and the next pair measures what is left.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emauto.policies.base import Observation
from emauto.policies.estimator import Estimate, RonchigramEstimator, load_default_estimator


class MeasureCorrectPolicy:
    """CNN measure-and-correct: ``name = "cnn"``."""

    name = "cnn"

    def __init__(
        self,
        knobs: Sequence[str],
        step_limits_m: Sequence[float] | np.ndarray,
        estimator: RonchigramEstimator | None = None,
        probe_defocus_m: float = 40e-9,
        gain: float = 1.0,
    ) -> None:
        self.knobs = tuple(knobs)
        self.step_limits_m = np.asarray(step_limits_m, dtype=np.float64)
        self.estimator = estimator or load_default_estimator()
        self.probe_defocus_m = probe_defocus_m
        self.gain = gain
        self.estimate: Estimate | None = None
        self._probed = False

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self._probed = False
        self.estimate = None

    def suggest(self) -> np.ndarray:
        if not self._probed or self.estimate is None:
            change = np.zeros(len(self.knobs))
            if "C10" in self.knobs:
                change[self.knobs.index("C10")] = self.probe_defocus_m
            self._probed = True
        else:
            change = np.array([-self.gain * self.estimate.mean_m.get(k, 0.0) for k in self.knobs])
        return np.clip(change / self.step_limits_m, -1, 1).astype(np.float32)

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        self.estimate = self.estimator.estimate(observation["ronchigram"], info["change_m"])
