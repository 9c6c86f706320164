"""Measure by probe shifts and correct (`emauto.policies.probe_shift`): ``name = "shift"``.

Each round: a +40 nm defocus step, whose env frame is the measurement's reference; two
Ronchigrams the policy takes itself with the probe 0.3 nm beside the parked position along x
and y (`probe_shift.measure`); then one step that cancels the measurement, probe defocus
included (at most one step limit per knob). Four acquisitions a round. The policy needs the
microscope the env drives, wrapped in a `CountingMicroscope` so that its own frames are
counted and dosed like the env's, and the env's latest frame (``last_frame``). Without it,
or when that frame had less than a fifth of the measurement's exposure (at a tenth of the
benchmark's dose the reuse halved the success rate), the measurement takes its own four
frames, the fourth back at the parked position for drift and lens settling: six
acquisitions a round.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from emauto.microscope import Frame, Microscope
from emauto.policies.base import Observation
from emauto.policies.probe_shift import DEFAULT_DELTA_M, measure

#: The env's frame serves as the measurement's reference only with at least this fraction
#: of the measurement's exposure (chosen on held-out episodes at 2-20 ms and 0.2-2 ms).
MIN_REFERENCE_EXPOSURE_FRACTION = 0.2


class ProbeShiftPolicy:
    """Probe-shift measure-and-correct: ``name = "shift"``."""

    name = "shift"

    def __init__(
        self,
        knobs: Sequence[str],
        step_limits_m: Sequence[float] | np.ndarray,
        microscope: Microscope,
        probe_defocus_m: float = 40e-9,
        delta_m: float = DEFAULT_DELTA_M,
        last_frame: Callable[[], Frame | None] | None = None,
        exposure_s: float = 1e-2,
    ) -> None:
        self.knobs = tuple(knobs)
        self.step_limits_m = np.asarray(step_limits_m, dtype=np.float64)
        self.microscope = microscope
        self.probe_defocus_m = probe_defocus_m
        self.delta_m = delta_m
        self.last_frame = last_frame
        self.exposure_s = exposure_s
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
        reference = self.last_frame() if self.last_frame is not None else None
        if (
            reference is not None
            and reference.exposure_s < MIN_REFERENCE_EXPOSURE_FRACTION * self.exposure_s
        ):
            reference = None  # too dim: its noise would dominate the shifts
        try:
            self.measurement, _ = measure(
                self.microscope,
                self._position,
                self.knobs,
                self.delta_m,
                self.exposure_s,
                reference=reference,
                drift_frame=reference is None,
            )
        except ValueError:  # too few usable patches: probe again
            self.measurement = None
