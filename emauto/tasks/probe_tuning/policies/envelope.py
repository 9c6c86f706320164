"""The safe envelope every probe-tuning policy keeps (`base.run_episode` applies it).

A policy moves the corrector only within a bounded total excursion from the state the
episode started in, knob by knob; when its measurements keep failing, or when its next move
would leave the envelope, the episode loop takes the knobs back to the best state the
policy has evidence for (the start when it has none) and ends the episode with "needs the
operator" (`base.StopDecision.needs_operator`), rather than letting the policy wander: on a
real microscope a probe 400 nm out of focus is a lost probe, not a failed episode (issue 21:
every refused probe-shift measurement made `shift` probe 40 nm further out; after ten, C10
had walked +421 nm).

**The bound** (`envelope_bounds`), per knob: the half-width of the start distribution of
its aberration (`ProbeTuningConfig.start`: the aligned state lies within it of an
episode's start) plus `ENVELOPE_STEPS` step limits (`step_limits_m`: room for a
measurement's deliberate probe step, 40 nm of C10 for `shift` and `bo`, and for a
correction that overshoots by up to one step). With the defaults: C10 50 + 2 x 60 = 170 nm,
C12 20 + 2 x 25 = 70 nm, C21/C23 300 + 2 x 350 = 1000 nm. A policy that needs more than that
to align is outside what the episodes are drawn from, and outside what has been tested.

**Evidence** comes from policies that report their measurements (`MeasurementReport`,
through a ``measurement_report()`` method: `shift`): the Strehl ratio an accepted
measurement predicts for a state (the knobs then plus ``offset_m``, e.g. the probe defocus
taken off). A run of `MAX_REFUSED_ROUNDS` measurement rounds refused in a row ends the
episode as well. Policies that report nothing are kept within the bound and brought back to
the start.

Moves back are frameless knob moves of at most one step limit each (`return_actions`), as a
policy's final move is.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from emauto.tasks.probe_tuning.config import TUNING_KNOB_GROUPS, ProbeTuningConfig

#: Step limits of room beyond the start distribution's half-width, per knob.
ENVELOPE_STEPS = 2.0
#: Measurement rounds refused in a row after which the policy hands over. `shift` probes
#: 40 nm further out after each refusal before its first accepted measurement (a probe too
#: close to focus folds the pattern): three refusals are +120 nm of C10, past what any start
#: within the distribution needs.
MAX_REFUSED_ROUNDS = 3
#: A remaining move smaller than this fraction of a step limit is not made.
_NEGLIGIBLE_STEPS = 1e-6
#: Reason of a hand-over (`base.StopDecision.reason` starts with it).
NEEDS_OPERATOR = "needs the operator"


@dataclass(frozen=True)
class MeasurementReport:
    """What a measuring policy tells the envelope after each `ingest`.

    ``accepted`` / ``refused``: measurement rounds this episode whose measurement was
    accepted / all refused. ``predicted_strehl``: the Strehl ratio the latest accepted
    measurement predicts (0-1, from images only), for the state ``knobs now + offset_m``
    (m by knob; e.g. the probe defocus of the measurement taken off); None before any.
    """

    accepted: int
    refused: int
    predicted_strehl: float | None = None
    offset_m: Mapping[str, float] = field(default_factory=dict)


def envelope_bounds(config: ProbeTuningConfig) -> np.ndarray:
    """The largest total excursion (m) of each tuned knob from an episode's start, in action
    order: its aberration's start half-width + `ENVELOPE_STEPS` step limits."""
    bounds = []
    for name in config.aberrations:
        width = float(getattr(config.start, name))
        bound = width + ENVELOPE_STEPS * float(config.step_limits_m[name])
        bounds.extend([bound] * len(TUNING_KNOB_GROUPS[name]))
    return np.asarray(bounds, dtype=np.float64)


class Envelope:
    """Book-keeping of one episode's excursion from its start, the best evidenced state and
    the run of refused measurements.

    ``knobs``, ``step_limits_m`` and ``bounds_m`` in action order (m). The excursion is the
    sum of the knob changes the env made (``info["change_m"]``), from the start.
    """

    def __init__(
        self,
        knobs: Sequence[str],
        step_limits_m: Sequence[float] | np.ndarray,
        bounds_m: Sequence[float] | np.ndarray,
        max_refused_rounds: int = MAX_REFUSED_ROUNDS,
    ) -> None:
        self.knobs = tuple(knobs)
        self.step_limits_m = np.asarray(step_limits_m, dtype=np.float64)
        self.bounds_m = np.asarray(bounds_m, dtype=np.float64)
        n = len(self.knobs)
        if self.step_limits_m.shape != (n,) or self.bounds_m.shape != (n,):
            raise ValueError(
                f"expected {n} step limits and bounds, got {self.step_limits_m.shape} and "
                f"{self.bounds_m.shape}"
            )
        if not (np.all(self.step_limits_m > 0) and np.all(self.bounds_m > 0)):
            raise ValueError("step limits and bounds must be positive")
        if max_refused_rounds < 1:
            raise ValueError(f"max_refused_rounds must be >= 1, got {max_refused_rounds}")
        self.max_refused_rounds = max_refused_rounds
        self.reset()

    def reset(self) -> None:
        """A new episode: at the start, no evidence."""
        n = len(self.knobs)
        self.excursion_m = np.zeros(n)
        self.max_excursion_m = np.zeros(n)
        self.best_m = np.zeros(n)  # the best evidenced state, as an excursion
        self.best_strehl: float | None = None
        self.refused_in_a_row = 0
        self._refused = 0
        self._accepted = 0

    def change_of(self, action: np.ndarray) -> np.ndarray:
        """The knob change (m) ``action`` asks for (clipped to [-1, 1], as the env does)."""
        action = np.clip(np.asarray(action, dtype=np.float64).reshape(-1), -1.0, 1.0)
        return action * self.step_limits_m

    def allows(self, action: np.ndarray) -> bool:
        """Whether ``action`` keeps every knob within its bound of the start."""
        after = np.abs(self.excursion_m + self.change_of(action))
        return bool(np.all(after <= self.bounds_m * (1 + 1e-9)))

    def moved(self, change_m: Mapping[str, float] | np.ndarray) -> None:
        """Count a knob change the env made (m, by knob or in action order)."""
        if isinstance(change_m, Mapping):
            change = np.array([float(change_m.get(k, 0.0)) for k in self.knobs])
        else:
            change = np.asarray(change_m, dtype=np.float64).reshape(-1)
        self.excursion_m = self.excursion_m + change
        self.max_excursion_m = np.maximum(self.max_excursion_m, np.abs(self.excursion_m))

    def record(self, report: MeasurementReport) -> None:
        """A policy's report after an `ingest`: refusals in a row, and a better evidenced
        state where the latest accepted measurement predicts a higher Strehl ratio."""
        if report.accepted > self._accepted:
            self.refused_in_a_row = 0
            predicted = report.predicted_strehl
            if predicted is not None and math.isfinite(predicted):
                state = self.excursion_m + np.array(
                    [float(report.offset_m.get(k, 0.0)) for k in self.knobs]
                )
                inside = bool(np.all(np.abs(state) <= self.bounds_m * (1 + 1e-9)))
                if inside and (self.best_strehl is None or predicted > self.best_strehl):
                    self.best_strehl, self.best_m = float(predicted), state
        elif report.refused > self._refused:
            self.refused_in_a_row += report.refused - self._refused
        self._accepted, self._refused = report.accepted, report.refused

    @property
    def failing(self) -> bool:
        """`MAX_REFUSED_ROUNDS` measurement rounds (or more) refused in a row."""
        return self.refused_in_a_row >= self.max_refused_rounds

    def return_actions(self) -> list[np.ndarray]:
        """Frameless moves (actions in [-1, 1], at most one step limit per knob each) that
        take the knobs from where they are to the best evidenced state (the start without
        evidence)."""
        remaining = self.best_m - self.excursion_m
        steps = float(np.max(np.abs(remaining) / self.step_limits_m))
        if steps < _NEGLIGIBLE_STEPS:  # float32 actions leave femtometres: nothing to move
            return []
        moves = math.ceil(steps - _NEGLIGIBLE_STEPS)
        step = remaining / moves / self.step_limits_m
        return [np.clip(step, -1.0, 1.0).astype(np.float32) for _ in range(moves)]

    def excursion_by_knob(self) -> dict[str, float]:
        """The largest |excursion| from the start (m) of each knob so far."""
        return {k: float(v) for k, v in zip(self.knobs, self.max_excursion_m, strict=True)}
