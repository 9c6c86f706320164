"""Measure by probe shifts and correct (`probe_shift`): ``name = "shift"``.

Each round: a +40 nm defocus step, whose env frame is the measurement's reference; two
Ronchigrams the policy takes itself with the probe 0.3 nm beside the parked position along x
and y (`probe_shift.measure`); then one step that cancels the measurement, probe defocus
included (at most one step limit per knob). Four acquisitions a round. The policy needs the
microscope the env drives, wrapped in a `CountingMicroscope` so that its own frames are
counted and dosed like the env's, and the env's latest frame (``last_frame``). Without it
the measurement takes its own four frames, the fourth back at the parked position for drift
and lens settling: six acquisitions a round. A measurement the fit refuses (its patches
disagree) is not applied.
Before any measurement of the episode has been accepted the optics are the likely cause (a
probe still too close to focus for the aberrations, where the pattern folds), so the next
step probes again, 40 nm further out. After one has been accepted the specimen is (a strong
scatterer under the probe, as on Au nanoparticles): the measurement is retaken at once with
the probe parked `RELOCATE_M` away (its own reference and drift frame: four frames), and a
position that worked is kept for later rounds (six acquisitions a round from then on).

**Dose**: the policy's own frames take the env's exposure (the episode's dose condition),
read from the env's latest frame; ``exposure_s`` is used only without one.

**Stop**: after an accepted measurement, the aberrations it reads at the parked probe (the
probe defocus taken off) predict a Strehl ratio (`optics.strehl_ratio_batch` at the env's
wavelength and aperture). When that prediction reaches `STOP_STREHL` the previous
correction has converged: the policy stops, and its final action applies this
measurement's correction without another frame. At the budget it only takes its probe
defocus off again (a correction read past the budget is not applied).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from emauto import optics
from emauto.microscope import Frame, Microscope
from emauto.tasks.probe_tuning.policies.base import Observation, ProbeOffset, StopDecision
from emauto.tasks.probe_tuning.policies.envelope import MeasurementReport
from emauto.tasks.probe_tuning.policies.probe_shift import DEFAULT_DELTA_M, auto_exposure_s, measure

#: How far to move the parked probe after a refused measurement (m), and how often. Chosen on
#: held-out episodes, `shift` success on carbon / Au on carbon: relocating once, but only
#: after a measurement was accepted, 91 % / 75 %; once at any time 87.5 % / 77.5 %; twice
#: 79 % / 65 %; never 91 % / 70 %.
RELOCATE_M = 5e-9
RELOCATIONS = 1
#: Stop once a measurement at the parked probe predicts at least this Strehl ratio. Chosen on
#: the tuning seeds 700000-700079 only (benchmarks/experiments/stop_threshold.py, JSON in
#: benchmarks/stop-threshold-latest.json), by the rule fixed before the run: the highest
#: success rate, ties to fewer acquisitions. Re-run after the fixes of the probe defocus
#: undone twice at the budget and of frames taken past the budget: every candidate from 0.6
#: to 0.95, correcting at the stop or not, gave 31-45 % (intervals overlap); 0.95 without
#: the correction came first (45 %, false dones 1 %: it rarely stops, and runs to the budget).
STOP_STREHL = 0.95
#: At a stop, apply the last measurement's correction (True) or only take the probe defocus
#: off (False: the state measured good is kept as it is). Chosen with `STOP_STREHL`.
CORRECT_AT_STOP = False


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
        wavelength_m: float | None = None,
        aperture_rad: float = 0.030,
        stop_strehl: float = STOP_STREHL,
        correct_at_stop: bool = CORRECT_AT_STOP,
        max_exposure_s: float | None = None,
    ) -> None:
        self.knobs = tuple(knobs)
        self.max_exposure_s = max_exposure_s
        self.step_limits_m = np.asarray(step_limits_m, dtype=np.float64)
        self.microscope = microscope
        self.probe_defocus_m = probe_defocus_m
        self.delta_m = delta_m
        self.last_frame = last_frame
        self.exposure_s = exposure_s
        self.measurement: dict[str, float] | None = None
        self._env_position = (0.0, 0.0)
        self._position = (0.0, 0.0)
        description = microscope.describe()
        self._reach_m = description.scan.max_offset_m
        self.wavelength_m = (
            wavelength_m if wavelength_m is not None else optics.wavelength(description.energy_eV)
        )
        self.aperture_rad = aperture_rad
        self.stop_strehl = stop_strehl
        self.correct_at_stop = correct_at_stop
        self._measured = False  # a measurement of this episode was accepted
        self._offset = ProbeOffset(self.knobs, self.step_limits_m)
        self._predicted: float | None = None  # Strehl ratio the latest measurement predicts
        self._stopping = False
        self._rounds = [0, 0]  # measurement rounds accepted, refused (for the envelope)

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self.measurement = None
        x, y = info["probe_position_m"]
        self._env_position = self._position = (float(x), float(y))
        self._measured = False
        self._offset = ProbeOffset(self.knobs, self.step_limits_m)
        self._predicted = None
        self._stopping = False
        self._rounds = [0, 0]

    def measurement_report(self) -> MeasurementReport:
        """Rounds accepted / refused this episode; the latest accepted measurement's
        predicted Strehl ratio is for the knobs with the probe defocus taken off."""
        offset = {"C10": -self._offset.offset_m} if "C10" in self.knobs else {}
        predicted = self._predicted if self.measurement is not None else None
        return MeasurementReport(self._rounds[0], self._rounds[1], predicted, offset)

    def stop(self) -> StopDecision | None:
        """Stop when the latest measurement, probe defocus off, predicts `stop_strehl`."""
        if self.measurement is None or self._predicted is None:
            return None
        if self._predicted < self.stop_strehl:
            return None
        self._stopping = True
        return StopDecision(True, self._predicted, "the last correction converged")

    def suggest(self) -> np.ndarray:
        if self.measurement is None:
            return self._probe()
        self._offset.offset_m = 0.0  # the correction takes the probe defocus off with it
        return self._correction()

    def final_action(self) -> np.ndarray | None:
        """After a stop: this measurement's correction (or, with ``correct_at_stop`` False,
        the probe defocus off). At the budget: the probe defocus off."""
        if self._stopping and self.measurement is not None and self.correct_at_stop:
            return self._correction()
        return self._offset.undo()

    def _probe(self) -> np.ndarray:
        change = np.zeros(len(self.knobs))
        if "C10" in self.knobs:
            change[self.knobs.index("C10")] = self.probe_defocus_m
        action = np.clip(change / self.step_limits_m, -1, 1).astype(np.float32)
        self._offset.add(action)
        return action

    def _correction(self) -> np.ndarray:
        assert self.measurement is not None
        change = np.array([-self.measurement.get(k, 0.0) for k in self.knobs])
        return np.clip(change / self.step_limits_m, -1, 1).astype(np.float32)

    def _predict(self, measurement: dict[str, float]) -> float:
        """The Strehl ratio of the measured aberrations with the probe defocus taken off."""
        values = dict(measurement)
        if "C10" in values:
            values["C10"] -= self._offset.offset_m
        names = list(values)
        coefficients = np.array([[values[n] for n in names]], dtype=np.float64)
        ratio = optics.strehl_ratio_batch(coefficients, names, self.wavelength_m, self.aperture_rad)
        return float(ratio[0])

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        if self.measurement is not None:  # a correction was made: probe again next
            self.measurement, self._predicted = None, None
            return
        exposure = self._exposure()
        frame = self.last_frame() if self.last_frame is not None else None
        longer = auto_exposure_s(frame, self.aperture_rad, self.max_exposure_s)
        for attempt in range(1 + (RELOCATIONS if self._measured else 0)):
            position = self._position if attempt == 0 else self._relocated(attempt)
            reference = None if longer is not None else self._reference(position)
            try:
                self.measurement, _ = measure(
                    self.microscope,
                    position,
                    self.knobs,
                    self.delta_m,
                    exposure if longer is None else longer,
                    reference=reference,
                    # auto-exposure's own frames follow the env's settled frame: no drift frame
                    drift_frame=(reference is None and longer is None)
                    or position != self._env_position,
                )
            except ValueError:  # too few usable patches, or they disagree: move and retry
                continue
            self._position, self._measured = position, True
            self._predicted = self._predict(self.measurement)
            self._rounds[0] += 1
            return
        # every attempt refused: self.measurement stays None, so the next step probes again
        self._rounds[1] += 1

    def _exposure(self) -> float:
        """The env's exposure (its latest frame's), else ``exposure_s``."""
        frame = self.last_frame() if self.last_frame is not None else None
        return float(frame.exposure_s) if frame is not None else self.exposure_s

    def _reference(self, position: tuple[float, float]) -> Frame | None:
        """The env's latest frame, if it was taken at ``position``."""
        if self.last_frame is None or position != self._env_position:
            return None
        return self.last_frame()

    def _relocated(self, attempt: int) -> tuple[float, float]:
        return relocated(self._position, attempt, self._reach_m - self.delta_m)


def relocated(position: tuple[float, float], attempt: int, limit_m: float) -> tuple[float, float]:
    """``RELOCATE_M`` from ``position``, a third of a turn further each attempt, kept within
    +-``limit_m`` (the scan range less the measurement's probe shift)."""
    angle = 2 * math.pi * attempt / 3
    x, y = position
    return (
        min(max(x + RELOCATE_M * math.cos(angle), -limit_m), limit_m),
        min(max(y + RELOCATE_M * math.sin(angle), -limit_m), limit_m),
    )
