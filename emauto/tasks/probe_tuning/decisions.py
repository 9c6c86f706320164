"""Measurement as an action: the decisions a probe-tuning agent makes between frames.

A decision is what an operator decides while tuning: measure the aberrations (a probe-shift
measurement, `policies.probe_shift.measure`, with the probe over-focused by 40 nm, or 40 nm
further out than it is), apply
the latest measurement's correction (with a gain per aberration group: the measurement reads
B2 about 30 % and A2 15-20 % low), apply it and stop, or stop as it is. `DecisionCore` turns
one decision into knob moves and frames on a `ProbeTuningEnv`, keeps the measurement and the
probe defocus, and describes what an agent may know as a vector (`observation`): no ground
truth. The training env (`measure_env.MeasureCorrectEnv`), the learned policy
(`policies.decider.DecisionPolicy`) and the hand-built expert (`expert_decision`, the
`shift` policy's rules in these terms) all go through it.

Frames: a measurement takes three (the probe step, whose env frame is the reference, and
two shifted frames the core takes itself on the env's microscope), a correction one, a
stop none (the probe defocus is taken off, and at ``correct_and_stop`` the correction
applied, without a frame). As in `shift`: once a measurement of the episode was accepted, a
refused one is retaken at once with the probe parked `shift_correct.RELOCATE_M` away (its
own reference and drift frames: four more), and a position that worked is kept (five frames
a measurement from then on). A decision that needs more frames than the budget has left
ends the episode at the budget.

Action: MultiDiscrete ``[5, 4, 4, 4]``: the mode (`Mode`), and the gain index (`GAINS`) for
C1/A1, for B2 and for A2.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from emauto import optics
from emauto.errors import MeasurementRefusedError
from emauto.tasks.probe_tuning.policies.probe_shift import DEFAULT_DELTA_M, MAX_MISFIT_M, measure
from emauto.tasks.probe_tuning.policies.shift_correct import RELOCATIONS, relocated
from emauto.wrappers.counting import CountingMicroscope

if TYPE_CHECKING:
    from emauto.tasks.probe_tuning.env import ProbeTuningEnv


class Mode(IntEnum):
    """What to do next."""

    MEASURE_NEAR = 0  # probe 40 nm over focus, measure
    MEASURE_FAR = 1  # probe 40 nm further out than now (at most one C1 step), measure
    CORRECT = 2  # apply the latest measurement (gains), probe defocus off: one frame
    CORRECT_AND_STOP = 3  # apply it without a frame and declare the probe aligned
    STOP = 4  # take the probe defocus off without a frame and declare the probe aligned


#: Probe over-focus of a near measurement and the step further out of a far one (m): the
#: measurement reads a fine speckle 30-80 nm out of focus, further out where large
#: aberrations fold the pattern (`shift` probes 40 nm further after a refusal). A far one
#: goes at most one C1 step limit out, so that a stop can always take it off without a
#: frame, and the probe never walks away when measurements keep failing.
PROBE_DEFOCUS_M = {Mode.MEASURE_NEAR: 40e-9, Mode.MEASURE_FAR: 40e-9}
#: Gains a correction may apply to the measured aberrations, per group.
GAINS = (0.75, 1.0, 1.25, 1.5)
UNIT_GAIN = GAINS.index(1.0)
#: Knob groups that share a gain, in action order after the mode.
GAIN_GROUPS = (("C10", "C12a", "C12b"), ("C21a", "C21b"), ("C23a", "C23b"))
ACTION_NVEC = (len(Mode), len(GAINS), len(GAINS), len(GAINS))
#: Frames each mode takes (a measurement at the env's own probe position; `DecisionCore.
#: frames_for` counts one away from it).
FRAMES = {
    Mode.MEASURE_NEAR: 3,
    Mode.MEASURE_FAR: 3,
    Mode.CORRECT: 1,
    Mode.CORRECT_AND_STOP: 0,
    Mode.STOP: 0,
}
#: Scale of each knob's value in the observation (m): the knob's start spread.
_SCALE_M = {"C1": 50e-9, "A1": 20e-9, "B2": 300e-9, "A2": 300e-9}
#: Length of the public observation vector.
OBSERVATION_SIZE = 7 + 5 + 7 + 7 + 6 + len(Mode)
#: Length of the privileged vector (the twin's truth, for a critic while training).
PRIVILEGED_SIZE = 7 + 2


@dataclass(frozen=True)
class Decision:
    """A mode and the gain of each group (`GAINS` values)."""

    mode: Mode
    gains: tuple[float, float, float] = (1.0, 1.0, 1.0)

    @classmethod
    def from_action(cls, action: np.ndarray | list[int] | tuple[int, ...]) -> Decision:
        """The decision of a MultiDiscrete action ``[mode, gain C1/A1, gain B2, gain A2]``."""
        values = [int(v) for v in np.asarray(action).ravel()]
        if len(values) != len(ACTION_NVEC) or any(
            not 0 <= v < n for v, n in zip(values, ACTION_NVEC, strict=True)
        ):
            raise ValueError(f"an action is {len(ACTION_NVEC)} indices below {ACTION_NVEC}")
        mode, *gains = values
        g1, g2, g3 = (GAINS[g] for g in gains)
        return cls(Mode(mode), (g1, g2, g3))

    def to_action(self) -> np.ndarray:
        """The MultiDiscrete action of this decision (gains must be `GAINS` values)."""
        return np.array([int(self.mode), *(GAINS.index(g) for g in self.gains)], dtype=np.int64)


@dataclass(frozen=True)
class Plan:
    """What a decision does now: a knob move with a frame (``action``, then a measurement
    if ``measure``), or the end of the episode (``final``: the frameless last move)."""

    action: np.ndarray | None
    measure: bool = False
    ends: bool = False
    declared: bool = False
    final: np.ndarray | None = None


class DecisionCore:
    """Turns decisions into moves and frames on one `ProbeTuningEnv`; remembers what was
    measured. The env's microscope must be the one the env acquires through (wrapped in a
    `CountingMicroscope` for an honest count of every frame)."""

    def __init__(self, env: ProbeTuningEnv, budget: int) -> None:
        if budget < 1:
            raise ValueError(f"the budget is at least the reset frame, got {budget}")
        self.env = env
        self.budget = budget
        self.knobs = tuple(env.knobs)
        if self.knobs != tuple(k for g in GAIN_GROUPS for k in g):
            raise ValueError(f"decisions need the knobs {GAIN_GROUPS}, the env has {self.knobs}")
        self.step_limits = np.asarray(env.step_limits, dtype=np.float64)
        self.scale_m = np.array(
            [_SCALE_M[n] for n in ("C1", "A1", "A1", "B2", "B2", "A2", "A2")], dtype=np.float64
        )
        description = env.microscope.describe()
        self._wavelength = optics.wavelength(description.energy_eV)
        self._aperture = env.config.convergence_rad
        #: How far a relocated measurement may park the probe (m): the scan range less the
        #: measurement's probe shift.
        self._relocation_limit_m = description.scan.max_offset_m - DEFAULT_DELTA_M
        self.reset({"acquisitions": 1, "probe_position_m": (0.0, 0.0)})

    # ------------------------------------------------------------------ state

    def reset(self, info: dict[str, Any]) -> None:
        """A new episode, after the env's reset (``info`` from it)."""
        self.env_frames = int(info["acquisitions"])
        self.own_frames = 0
        x, y = info["probe_position_m"]
        self.env_position = (float(x), float(y))
        self.position = self.env_position  # where measurements are taken
        self.accepted = 0  # measurements accepted this episode
        self.offset_m = 0.0  # deliberate probe over-focus (m) in C10
        self.estimate: np.ndarray | None = None  # parked-probe aberrations (m), knob order
        self.misfit_m = 0.0
        self.refused = 0  # refusals since the last accepted measurement
        self.measurements = 0
        self.previous_estimate = np.zeros(len(self.knobs))
        self.last_correction = np.zeros(len(self.knobs))  # knob change (m) of the last one
        self.last_mode: Mode | None = None
        self._pending: Mode | None = None

    @property
    def frames(self) -> int:
        """Frames taken this episode, the reset frame included."""
        return self.env_frames + self.own_frames

    @property
    def frames_left(self) -> int:
        return self.budget - self.frames

    def frames_for(self, mode: Mode) -> int:
        """Frames ``mode`` takes now (a relocated measurement: its own reference and drift
        frames beside the env's)."""
        if mode in PROBE_DEFOCUS_M and self.position != self.env_position:
            return FRAMES[mode] + 2
        return FRAMES[mode]

    def predicted_strehl(self) -> float:
        """The Strehl ratio the latest measurement predicts at the parked probe (0: none)."""
        if self.estimate is None:
            return 0.0
        ratio = optics.strehl_ratio_batch(
            self.estimate[None, :], list(self.knobs), self._wavelength, self._aperture
        )
        return float(ratio[0])

    def observation(self) -> np.ndarray:
        """What an agent knows, float32 (`OBSERVATION_SIZE`,): the latest estimate (scaled),
        whether there is one, refusals, misfit, the predicted Strehl ratio and its phase
        potential, the previous estimate and the correction made since (so that a policy can
        see how far a correction got), frames left, measurements taken, probe defocus,
        steps, measurements accepted, whether the probe measures away from the env's
        position, and the last mode (one-hot)."""
        estimate = np.zeros(len(self.knobs)) if self.estimate is None else self.estimate
        potential = 0.0
        if self.estimate is not None:
            variance = optics.phase_variance_batch(
                self.estimate[None, :], list(self.knobs), self._wavelength, self._aperture
            )[0]
            potential = -math.log(variance + 0.01) / math.log(100.0)
        last = np.zeros(len(Mode))
        if self.last_mode is not None:
            last[int(self.last_mode)] = 1.0
        vector = np.concatenate(
            [
                np.clip(estimate / self.scale_m, -5, 5),
                [
                    float(self.estimate is not None),
                    min(self.refused, 3) / 3,
                    min(self.misfit_m / MAX_MISFIT_M, 3.0),
                    self.predicted_strehl(),
                    potential,
                ],
                np.clip(self.previous_estimate / self.scale_m, -5, 5),
                np.clip(self.last_correction / self.scale_m, -5, 5),
                [
                    self.frames_left / self.budget,
                    min(self.measurements, 10) / 10,
                    self.offset_m / 60e-9,
                    min(self.env_frames, 30) / 30,
                    min(self.accepted, 5) / 5,
                    float(self.position != self.env_position),
                ],
                last,
            ]
        )
        return vector.astype(np.float32)

    # ------------------------------------------------------------------ decisions

    def plan(self, decision: Decision) -> Plan:
        """What ``decision`` does now. A correction without an accepted measurement is a
        `Mode.MEASURE_NEAR`; a decision whose frames do not fit in the budget left ends the
        episode (probe defocus off, not declared aligned)."""
        mode = decision.mode
        if self.estimate is None and mode in (Mode.CORRECT, Mode.CORRECT_AND_STOP):
            mode = Mode.MEASURE_NEAR
        if self.frames_for(mode) > self.frames_left:
            return Plan(None, ends=True, final=self._undo_offset())
        self.last_mode = mode
        if mode is Mode.STOP:
            return Plan(None, ends=True, declared=True, final=self._undo_offset())
        if mode is Mode.CORRECT_AND_STOP:
            return Plan(None, ends=True, declared=True, final=self._correction(decision.gains))
        if mode is Mode.CORRECT:
            self._pending = mode
            return Plan(self._correction(decision.gains))
        target = PROBE_DEFOCUS_M[mode]
        if mode is Mode.MEASURE_FAR:
            target = min(self.offset_m + target, float(self.step_limits[0]))
        change = np.zeros(len(self.knobs))
        change[0] = target - self.offset_m
        action = np.clip(change / self.step_limits, -1, 1)
        self.offset_m += float(action[0]) * float(self.step_limits[0])
        self._pending = mode
        return Plan(action.astype(np.float32), measure=True)

    def step_unobserved(self) -> None:
        """The env took the planned move's frame and the episode ended there (the budget):
        book the move (a correction took the probe defocus off) without measuring."""
        self.env_frames += 1
        mode, self._pending = self._pending, None
        if mode is Mode.CORRECT:
            self.estimate, self.offset_m = None, 0.0

    def after_step(self, info: dict[str, Any]) -> None:
        """The env took the frame of the planned move (``info`` from its step); a measuring
        decision now takes its two shifted frames and fits."""
        self.env_frames = int(info["acquisitions"])
        mode, self._pending = self._pending, None
        if mode is Mode.CORRECT:
            self.previous_estimate = (
                self.estimate if self.estimate is not None else 0 * self.scale_m
            )
            self.estimate = None
            self.offset_m = 0.0
            return
        if mode not in PROBE_DEFOCUS_M:
            return
        frame = self.env.last_frame
        exposure = float(frame.exposure_s) if frame is not None else 1e-2
        self.measurements += 1
        attempts = 1 + (RELOCATIONS if self.accepted else 0)
        for attempt in range(attempts):
            position = self.position
            if attempt > 0:
                if self.frames_left < 4:  # a relocated measurement takes four frames
                    break
                position = relocated(self.position, attempt, self._relocation_limit_m)
            at_env = position == self.env_position
            counter = CountingMicroscope(self.env.microscope)  # this measurement's frames
            try:
                measured, _ = measure(
                    counter,
                    position,
                    self.knobs,
                    exposure_s=exposure,
                    reference=frame if at_env else None,
                    drift_frame=not at_env,
                )
            except MeasurementRefusedError as exc:  # too few patches, or they disagree
                self.misfit_m = exc.misfit_m if exc.misfit_m is not None else 3 * MAX_MISFIT_M
                continue
            finally:
                self.own_frames += counter.acquisitions
            values = np.array([measured[k] for k in self.knobs])
            values[0] -= self.offset_m  # the estimate at the parked probe
            self.estimate, self.refused, self.misfit_m = values, 0, 0.0
            self.position, self.accepted = position, self.accepted + 1
            return
        self.estimate, self.refused = None, self.refused + 1

    def _correction(self, gains: tuple[float, float, float]) -> np.ndarray:
        assert self.estimate is not None
        gain = np.array([gains[0]] * 3 + [gains[1]] * 2 + [gains[2]] * 2)
        change = -gain * self.estimate
        change[0] -= self.offset_m
        self.last_correction = change.copy()
        self.last_correction[0] += self.offset_m
        return np.clip(change / self.step_limits, -1, 1).astype(np.float32)

    def _undo_offset(self) -> np.ndarray | None:
        if self.offset_m == 0.0:
            return None
        action = np.zeros(len(self.knobs), dtype=np.float32)
        action[0] = -self.offset_m / self.step_limits[0]
        return np.clip(action, -1, 1)


#: The expert's stop rule: correct and stop once a measurement predicts this Strehl ratio at
#: the parked probe. `shift`'s rule when the shipped `rl_decide` was trained (chosen on the
#: tuning seeds before two `shift` fixes; `shift` has since moved to 0.95 without the
#: correction, `shift_correct.STOP_STREHL`). Kept so that the expert is the one the shipped
#: actor imitated.
EXPERT_STOP_STREHL = 0.7


def expert_decision(core: DecisionCore) -> Decision:
    """The hand-built `shift` rules as decisions: measure (40 nm further out after a refusal),
    correct with unit gains, and correct-and-stop once the measurement predicts
    `EXPERT_STOP_STREHL`; after a correction, measure again. One rule `shift` lacks:
    a measurement whose correction could not be checked within the budget is applied at the
    end (`shift` leaves it unapplied at the budget)."""
    if core.estimate is None:
        return Decision(Mode.MEASURE_FAR if core.refused else Mode.MEASURE_NEAR)
    if core.predicted_strehl() >= EXPERT_STOP_STREHL:
        return Decision(Mode.CORRECT_AND_STOP)
    if core.frames_left < FRAMES[Mode.CORRECT] + FRAMES[Mode.MEASURE_NEAR]:
        return Decision(Mode.CORRECT_AND_STOP)  # no room to check it: apply it and end
    return Decision(Mode.CORRECT)
