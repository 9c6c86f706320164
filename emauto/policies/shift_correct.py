"""Measure by probe shifts and correct (`emauto.policies.probe_shift`): ``name = "shift"``.

Each round: a +40 nm defocus step (the env's frame there lets the lenses settle), a
measurement from four Ronchigrams the policy takes itself at the parked probe position and
0.15 nm beside it (`probe_shift.measure`), then one step that cancels the measurement, probe
defocus included (at most one step limit per knob). Six acquisitions a round. The policy
needs the microscope the env drives, wrapped in a `CountingMicroscope` so that its own
frames are counted and dosed like the env's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from emauto.microscope import Microscope
from emauto.policies.base import Observation
from emauto.policies.probe_shift import measure


class ProbeShiftPolicy:
    """Probe-shift measure-and-correct: ``name = "shift"``."""

    name = "shift"

    def __init__(
        self,
        knobs: Sequence[str],
        step_limits_m: Sequence[float] | np.ndarray,
        microscope: Microscope,
        probe_defocus_m: float = 40e-9,
        delta_m: float = 1.5e-10,
    ) -> None:
        self.knobs = tuple(knobs)
        self.step_limits_m = np.asarray(step_limits_m, dtype=np.float64)
        self.microscope = microscope
        self.probe_defocus_m = probe_defocus_m
        self.delta_m = delta_m
        self.measurement: dict[str, float] | None = None
        self._position = (0.0, 0.0)

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self.measurement = None
        x, y = info["probe_position_m"]
        self._position = (float(x), float(y))

    def suggest(self) -> np.ndarray:
        change = np.zeros(len(self.knobs))
        if self.measurement is None:
            if "C10" in self.knobs:
                change[self.knobs.index("C10")] = self.probe_defocus_m
        else:
            change = np.array([-self.measurement.get(k, 0.0) for k in self.knobs])
        return np.clip(change / self.step_limits_m, -1, 1).astype(np.float32)

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        if self.measurement is not None:  # a correction was made: probe again next
            self.measurement = None
            return
        try:
            self.measurement, _ = measure(
                self.microscope, self._position, self.knobs, delta_m=self.delta_m
            )
        except ValueError:  # too few usable patches: probe again
            self.measurement = None
