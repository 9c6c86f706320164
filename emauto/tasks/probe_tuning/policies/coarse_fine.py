"""Coarse then fine: one policy for the first steps of an episode, another after them.

``cnn_shift``: the CNN measure-and-correct policy (`measure_correct`) for three rounds
(six steps: +60 nm probe, correct, +40 nm probe, correct, twice more), then the probe-shift
policy (`shift_correct`). The CNN brings a random start within reach fast but its B2/A2
reading stalls at 50-100 nm; the probe-shift measurement resolves
the rest. Three CNN rounds were chosen on episodes the benchmark does not use (seeds
7000-7079, within 31 Ronchigrams, with the four-frame probe-shift rounds: one, two and three
CNN rounds 92.5 %, 96.3 % and 96.3 % success, median 15, 17 and 15 Ronchigrams; once
refused fits are not applied, 91.3 %, 97.5 % and 96.3 %; with the earlier six-frame rounds,
seeds 7000-7039: 37.5 %, 45 % and 52.5 %).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from emauto.tasks.probe_tuning.policies.base import (
    Observation,
    ReportsMeasurements,
    StopDecision,
    TuningPolicy,
)
from emauto.tasks.probe_tuning.policies.envelope import MeasurementReport

#: Steps of the coarse policy before the fine one takes over (three CNN rounds).
CNN_SHIFT_COARSE_STEPS = 6


class CoarseFinePolicy:
    """``coarse`` for the first ``coarse_steps`` steps of an episode, then ``fine``."""

    def __init__(
        self, name: str, coarse: TuningPolicy, fine: TuningPolicy, coarse_steps: int
    ) -> None:
        if coarse_steps < 1:
            raise ValueError(f"coarse_steps must be >= 1, got {coarse_steps}")
        self.name = name
        self.coarse, self.fine, self.coarse_steps = coarse, fine, coarse_steps
        self._steps = 0

    def _active(self) -> TuningPolicy:
        return self.coarse if self._steps < self.coarse_steps else self.fine

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self._steps = 0
        self.coarse.reset(observation, info)
        self.fine.reset(observation, info)

    def stop(self) -> StopDecision | None:
        """The active policy's decision."""
        return self._active().stop()

    def suggest(self) -> np.ndarray:
        return self._active().suggest()

    def measurement_report(self) -> MeasurementReport:
        """The active policy's report, for the envelope (none from one that reports none)."""
        active = self._active()
        if isinstance(active, ReportsMeasurements):
            return active.measurement_report()
        return MeasurementReport(0, 0)

    def final_action(self) -> np.ndarray | None:
        """The active policy's last move."""
        return self._active().final_action()

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        self._active().ingest(action, observation, reward, info)
        self._steps += 1
