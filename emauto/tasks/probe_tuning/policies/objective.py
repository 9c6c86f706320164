"""What the optimisers (`bo`, `simplex`) measure: aberrations by probe shifts, and the
episode mechanics they share.

Each objective evaluation is a probe-shift measurement (`probe_shift.measure`): the env's
step to the point to evaluate, with the probe over-focused by `PROBE_DEFOCUS_M`, takes the
reference frame, and the policy takes two frames of its own with the probe 0.3 nm beside it,
through the env's microscope (a `CountingMicroscope`: every frame is counted and dosed, and
one past the episode's budget is refused). Three Ronchigrams an evaluation. It returns the
measured aberration VECTOR (m, at the point measured, probe defocus included); its scalar
summary is the phase variance over the aperture (rad^2, `phase_variance`) and the Strehl
ratio it predicts (`strehl`). Measured from images only: usable on hardware.

The measurement reads C1 to about 0.7 nm and A1 to 0.6-0.9 nm near alignment, B2 to 15-22 nm
and A2 to 8-10 nm, but B2 about 30 % and A2 15-20 % low (`probe_shift`): the optimisers
learn or search the gain that undoes that.

A refused measurement (its patches disagree) is not used. Before any measurement of the
episode was accepted the probe is likely too close to focus for its aberrations (the
pattern folds): the next evaluation probes `FURTHER_M` further out; once one is accepted
the next ones are back at `PROBE_DEFOCUS_M` (`bo` on tuning episodes 7000-7019: 19/20
aligned, against 16/20 staying further out, which also needs a frame to take the larger
defocus off at the end). After one was accepted a
strong scatterer is the likely cause: the measurement is retaken at once with the probe
parked `shift_correct.RELOCATE_M` away (its own reference and a drift frame: four frames),
and that position is kept (as `shift` does).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from emauto import optics
from emauto.errors import MeasurementRefusedError
from emauto.microscope import Frame, Microscope
from emauto.tasks.probe_tuning.policies.base import Observation, StopDecision
from emauto.tasks.probe_tuning.policies.probe_shift import (
    DEFAULT_DELTA_M,
    auto_exposure_s,
    measure,
)
from emauto.tasks.probe_tuning.policies.shift_correct import RELOCATE_M
from emauto.wrappers.counting import CountingMicroscope

#: Probe over-focus of each measurement (m): the measurement reads a fine speckle 30-80 nm
#: out of focus.
PROBE_DEFOCUS_M = 40e-9
#: Extra over-focus after a refusal before any measurement was accepted (m), up to
#: `MAX_PROBE_DEFOCUS_M`.
FURTHER_M = 30e-9
MAX_PROBE_DEFOCUS_M = 100e-9
#: Ronchigrams an evaluation takes: the env's step (the reference) and two shifted frames.
EVALUATION_FRAMES = 3
#: Added to the phase variance before its logarithm (rad^2): the objective of `simplex`.
VARIANCE_FLOOR = 0.01


class AberrationMeter:
    """Probe-shift measurements on the env's microscope at its parked probe, and what a
    measured vector predicts.

    ``microscope``: the one the env acquires through (a `CountingMicroscope` for an honest
    count; its ``limit`` is the episode's budget, read by `frames_left`). ``last_frame``:
    the env's latest frame (the reference, and the exposure of the episode's dose).
    ``max_exposure_s``: auto-exposure. When the env's frame is too noisy for a measurement
    (`probe_shift.auto_exposure_s`: a faint or low-contrast Ronchigram), the measurement
    takes its own frames, exposed longer, up to this: one frame more (its own reference)
    and more dose. None: always the env's exposure (matched dose).
    """

    def __init__(
        self,
        knobs: Sequence[str],
        microscope: Microscope,
        last_frame: Callable[[], Frame | None] | None = None,
        aperture_rad: float = 0.030,
        wavelength_m: float | None = None,
        delta_m: float = DEFAULT_DELTA_M,
        exposure_s: float = 1e-2,
        max_exposure_s: float | None = None,
    ) -> None:
        if max_exposure_s is not None and not (
            math.isfinite(max_exposure_s) and max_exposure_s > 0
        ):
            raise ValueError(f"max_exposure_s must be a positive time (s), got {max_exposure_s}")
        self.knobs = tuple(knobs)
        self.max_exposure_s = max_exposure_s
        self._exposure_for: tuple[Frame | None, float | None] = (None, None)
        self.microscope = microscope
        self.last_frame = last_frame
        self.aperture_rad = aperture_rad
        description = microscope.describe()
        self.wavelength_m = (
            wavelength_m if wavelength_m is not None else optics.wavelength(description.energy_eV)
        )
        self.delta_m = delta_m
        self.exposure_s = exposure_s
        self._reach_m = description.scan.max_offset_m
        self.env_position = (0.0, 0.0)
        self.position = (0.0, 0.0)
        self.relocated = False

    def reset(self, info: dict[str, Any]) -> None:
        """A new episode: the env's parked probe position."""
        x, y = info["probe_position_m"]
        self.env_position = self.position = (float(x), float(y))
        self.relocated = False

    def frames_left(self) -> int | None:
        """Frames the counting microscope still allows (None: no budget, or not counted)."""
        if isinstance(self.microscope, CountingMicroscope) and self.microscope.limit is not None:
            return self.microscope.limit - self.microscope.acquisitions
        return None

    def evaluation_frames(self) -> int:
        """Frames the next evaluation takes: three; five at a relocated probe (its own
        reference and a drift frame), else four with a longer exposure than the env's (its
        own reference)."""
        if self.position != self.env_position:
            return EVALUATION_FRAMES + 2
        return EVALUATION_FRAMES + (1 if self._longer_exposure() is not None else 0)

    def _longer_exposure(self) -> float | None:
        """`probe_shift.auto_exposure_s` for the env's last frame (judged once a frame:
        `stop` and `measure` both ask)."""
        frame = self.last_frame() if self.last_frame is not None else None
        if frame is None or frame is not self._exposure_for[0]:
            self._exposure_for = (
                frame,
                auto_exposure_s(frame, self.aperture_rad, self.max_exposure_s),
            )
        return self._exposure_for[1]

    def measure(self, relocate: bool = False) -> np.ndarray | None:
        """The aberrations (m, knob order) at the present optics, None when refused.

        ``relocate``: after a refusal, measure once more `RELOCATE_M` away (kept if it
        works). `AcquisitionBudgetError` when the budget refuses a frame.
        """
        exposure = self._exposure()
        longer = self._longer_exposure()
        if longer is not None:
            exposure = longer
        positions = [self.position]
        if relocate and not self.relocated:
            positions.append(self._relocated())
        for position in positions:
            reference = None if longer is not None else self._reference(position)
            try:
                fit, _ = measure(
                    self.microscope,
                    position,
                    self.knobs,
                    self.delta_m,
                    exposure,
                    reference=reference,
                    # frames of its own at a new position: a drift frame too (auto-exposure's
                    # at the env's position come after the env's settled frame: none)
                    drift_frame=(reference is None and longer is None)
                    or position != self.env_position,
                )
            except MeasurementRefusedError:
                continue
            if position != self.position:
                self.position, self.relocated = position, True
            return np.array([fit[k] for k in self.knobs], dtype=np.float64)
        return None

    def phase_variance(self, aberrations: np.ndarray) -> np.ndarray:
        """Phase variance (rad^2) over the aperture of aberration vectors (..., K) (m)."""
        batch = np.atleast_2d(aberrations)
        return optics.phase_variance_batch(
            batch, list(self.knobs), self.wavelength_m, self.aperture_rad
        ).reshape(np.shape(aberrations)[:-1])

    def strehl(self, aberrations: np.ndarray) -> np.ndarray:
        """Strehl ratio of aberration vectors (..., K) (m)."""
        batch = np.atleast_2d(aberrations)
        return optics.strehl_ratio_batch(
            batch, list(self.knobs), self.wavelength_m, self.aperture_rad
        ).reshape(np.shape(aberrations)[:-1])

    def _exposure(self) -> float:
        frame = self.last_frame() if self.last_frame is not None else None
        return float(frame.exposure_s) if frame is not None else self.exposure_s

    def _reference(self, position: tuple[float, float]) -> Frame | None:
        if self.last_frame is None or position != self.env_position:
            return None
        return self.last_frame()

    def _relocated(self) -> tuple[float, float]:
        x, y = self.position
        limit = self._reach_m - self.delta_m
        return (
            min(max(x + RELOCATE_M, -limit), limit),
            min(max(y, -limit), limit),
        )


class MeasuringOptimiser:
    """The episode mechanics of an optimiser whose evaluations are probe-shift measurements.

    It keeps the knob offset from the episode's start (``x``, m, knob order; from the env's
    actual changes, ``info["change_m"]``), steps to the next point to evaluate (`target`,
    the probe over-focused), measures there, and hands each accepted measurement to
    `observe`. A subclass says where the probe is aligned (`aligned_point`), how sure it is
    (`confidence`: the Strehl ratio it expects there) and where to evaluate next
    (`next_point`, default the aligned point). It stops when its confidence reaches
    ``stop_strehl`` (declared aligned), or when the budget has no room for another
    evaluation (not declared); its final move (no frame) goes
    to the aligned point with the probe defocus off, at its stop and at the budget alike.
    """

    name = "measuring"

    def __init__(
        self,
        knobs: Sequence[str],
        step_limits_m: Sequence[float] | np.ndarray,
        meter: AberrationMeter,
        stop_strehl: float,
        probe_defocus_m: float = PROBE_DEFOCUS_M,
    ) -> None:
        self.knobs = tuple(knobs)
        if "C10" not in self.knobs:
            raise ValueError(f"the optimisers measure with a defocused probe: no C10 in {knobs}")
        self.step_limits_m = np.asarray(step_limits_m, dtype=np.float64)
        self.meter = meter
        self.stop_strehl = stop_strehl
        self.probe_defocus_m = probe_defocus_m
        self._c1 = self.knobs.index("C10")
        self.x = np.zeros(len(self.knobs))
        self.defocus_m = probe_defocus_m
        self.accepted = 0
        self.refusals = 0
        self.evaluations = 0
        self._settling = False
        self.target = self._defocused(self.x)

    # ------------------------------------------------------------------ for subclasses

    def start(self) -> None:
        """A new episode (after `x` and the meter were reset)."""

    def observe(self, x: np.ndarray, measured: np.ndarray) -> None:
        """An accepted measurement ``measured`` (m) at the knob offset ``x`` (m)."""
        raise NotImplementedError

    def refused(self, x: np.ndarray) -> None:
        """A refused measurement at ``x`` (nothing was learnt)."""

    def aligned_point(self) -> np.ndarray | None:
        """The knob offset (m) where the probe is believed aligned, None before any."""
        raise NotImplementedError

    def confidence(self) -> float | None:
        """The Strehl ratio expected at `aligned_point`, from the measurements only."""
        raise NotImplementedError

    def next_point(self) -> np.ndarray | None:
        """The next point to evaluate (before the probe defocus is added)."""
        return self.aligned_point()

    # ------------------------------------------------------------------ TuningPolicy

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self.meter.reset(info)
        self.x = np.zeros(len(self.knobs))
        self.defocus_m = self.probe_defocus_m
        self.accepted = self.refusals = self.evaluations = 0
        self._settling = False
        self.start()
        self.target = self._defocused(self.x)

    def stop(self) -> StopDecision | None:
        confidence = self.confidence()
        declared = confidence is not None and confidence >= self.stop_strehl
        left = self.meter.frames_left()
        reserve = int(self.defocus_m > self.step_limits_m[self._c1])  # a settling step
        out_of_frames = left is not None and left < self.meter.evaluation_frames() + reserve
        if not (declared or out_of_frames):
            return None
        if not self._final_move_fits() and (left is None or left >= 1):
            self._settling = True  # one step with a frame first, then the final move
            return None
        value = 0.0 if confidence is None else confidence
        if declared:
            return StopDecision(True, value, "the measurements predict an aligned probe")
        if self.accepted == 0:  # nothing measured: the operator must look
            return StopDecision(
                False,
                value,
                "needs the operator: no measurement was accepted",
                needs_operator=True,
            )
        return StopDecision(
            False, value, "no frames left for another evaluation; not aligned with confidence"
        )

    def suggest(self) -> np.ndarray:
        target = self._final_point() if self._settling else self.target
        return np.clip((target - self.x) / self.step_limits_m, -1, 1).astype(np.float32)

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        change = info.get("change_m")
        if change is not None:
            self.x = self.x + np.array([float(change[k]) for k in self.knobs])
        else:
            self.x = self.x + np.asarray(action, dtype=np.float64) * self.step_limits_m
        if self._settling:
            return
        self.evaluations += 1
        measured = self.meter.measure(relocate=self.accepted > 0)
        if measured is None:
            self.refusals += 1
            self.refused(self.x.copy())
            if self.accepted == 0:  # likely too close to focus: probe further out
                further = min(FURTHER_M, MAX_PROBE_DEFOCUS_M - self.defocus_m)
                self.defocus_m += further
                self.target = self.x.copy()
                self.target[self._c1] += further
            else:
                self.target = self._defocused(self._next_or_here())
            return
        self.accepted += 1
        self.observe(self.x.copy(), measured)
        self.defocus_m = self.probe_defocus_m  # corrected from here on: back to the usual
        self.target = self._defocused(self._next_or_here())

    def final_action(self) -> np.ndarray | None:
        """To the aligned point, probe defocus off (no frame); before any measurement only
        the probe defocus off."""
        action = np.clip((self._final_point() - self.x) / self.step_limits_m, -1, 1)
        return action.astype(np.float32) if np.any(action != 0) else None

    # ------------------------------------------------------------------ internals

    def _final_point(self) -> np.ndarray:
        point = self.aligned_point()
        if point is None:
            point = self.x.copy()
            point[self._c1] -= self._offset_now()
        return point

    def _final_move_fits(self) -> bool:
        return bool(np.all(np.abs(self._final_point() - self.x) <= self.step_limits_m * 1.000001))

    def _next_or_here(self) -> np.ndarray:
        point = self.next_point()
        if point is None:
            point = self.x.copy()
            point[self._c1] -= self._offset_now()
        return point

    def _offset_now(self) -> float:
        """The deliberate probe defocus at ``x`` before any measurement (m)."""
        return float(self.x[self._c1])

    def _defocused(self, point: np.ndarray) -> np.ndarray:
        target = np.array(point, dtype=np.float64)
        target[self._c1] += self.defocus_m
        return target


def log_variance(meter: AberrationMeter, aberrations: np.ndarray) -> float:
    """``ln(phase variance + VARIANCE_FLOOR)`` of one aberration vector (m): lower is better."""
    return math.log(float(meter.phase_variance(aberrations)) + VARIANCE_FLOOR)
