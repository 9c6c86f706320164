"""``rl_belief``: a learned policy that decides, on `bo`'s posterior, whether to measure again,
declare the probe aligned, or hand over to the operator.

The Bayesian surrogate of `bayesopt` is the policy's belief state: after every probe-shift
measurement (three Ronchigrams, counted at the Microscope boundary) its posterior over the
aberrations at the episode's start says where the probe is aligned and how sure it is. The
decision the surrogate cannot make well is *when to stop*: its own expected Strehl ratio is
conservative (`bayesopt.STOP_STREHL` rarely fires within 31 frames, though 97 % of the
states it would leave are aligned). Here a small actor (`decider.DecisionActor` layers) reads
`FEATURE_NAMES` — numbers from the measurements only, never from ground truth — and chooses
one `Choice` at every decision point:

- ``MEASURE``: the next evaluation (`bo`'s: at the posterior's aligned point, probe over-focused);
- ``DECLARE``: move to the aligned point (probe defocus off, no frame) and declare it aligned;
- ``OPERATOR``: move there and stop without declaring it ("needs the operator").

When the budget has no room for another evaluation the actor still chooses between declaring
and handing over (``MEASURE`` there means handing over). The actor is trained by
`belief_training` (PPO with a privileged critic on recorded episodes) and ships as tensors
plus JSON (`StopActor`).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

import numpy as np

from emauto.models.weights import shipped_path
from emauto.tasks.probe_tuning.policies.base import StopDecision
from emauto.tasks.probe_tuning.policies.bayesopt import BayesOptPolicy
from emauto.tasks.probe_tuning.policies.decider import DecisionActor
from emauto.tasks.probe_tuning.policies.objective import AberrationMeter


class Choice(enum.IntEnum):
    """What the actor can do at a decision point."""

    MEASURE = 0
    DECLARE = 1
    OPERATOR = 2


#: The aberration groups the features summarise, in order (C1, A1, B2, A2).
GROUPS = ("C10", "C12", "C21", "C23")
#: What the actor reads, in order; every entry is computed from the measurements alone.
FEATURE_NAMES: tuple[str, ...] = (
    "frames_left_fraction",
    "accepted_measurements / 10",
    "refused_measurements / 10",
    "relocated",
    "last_measurement_refused",
    "expected_strehl",
    "log10 expected phase variance (rad^2)",
    *(f"log10 posterior sd {g} / step limit" for g in GROUPS),
    "log10 phase variance of the last reading, defocus off (rad^2)",
    "log10 move of the aligned point by the last measurement / step limit",
    *(f"log1p rms innovation {g}" for g in GROUPS),
)
FEATURE_SIZE = len(FEATURE_NAMES)
#: The shipped actor.
DEFAULT_STOP_ACTOR = shipped_path("probe_tuning_belief") / "actor.pt"
#: Features are clipped to this range (the actor's training range).
FEATURE_LIMIT = 10.0

Decide = Callable[[np.ndarray, bool], Choice]


class StopActor(DecisionActor):
    """`DecisionActor` layers for the ``rl_belief`` features and its three choices."""

    format: ClassVar[str] = "emauto-belief-stop-actor/1"
    observation_size: ClassVar[int] = FEATURE_SIZE
    action_nvec: ClassVar[tuple[int, ...]] = (len(Choice),)


def actor_decide(actor: StopActor) -> Decide:
    """``decide(features, can_measure)``: the actor's most probable choice."""

    def decide(features: np.ndarray, can_measure: bool) -> Choice:
        return Choice(int(actor.act(features)[0]))

    return decide


class BeliefStopPolicy(BayesOptPolicy):
    """`bo`'s evaluations, with each stop decided by ``decide(features, can_measure)``."""

    def __init__(
        self,
        knobs: Sequence[str],
        step_limits_m: Sequence[float] | np.ndarray,
        meter: AberrationMeter,
        decide: Decide,
        name: str = "rl_belief",
        seed: int = 0,
    ) -> None:
        missing = sorted({k[:3] for k in knobs} - set(GROUPS))
        if missing:
            raise ValueError(f"the learned stop reads C1, A1, B2, A2 only; not {missing}")
        super().__init__(knobs, step_limits_m, meter, stop_strehl=np.inf, seed=seed)
        self.name = name
        self._decide = decide
        self._groups = [np.array([k[:3] == g for k in self.knobs]) for g in GROUPS]
        self._choice: Choice | None = None
        self._reset_features()

    def _reset_features(self) -> None:
        self._choice = None
        self._innovation = np.zeros(len(GROUPS))
        self._moved = 0.0
        self._last_reading: np.ndarray | None = None
        self._last_defocus = 0.0
        self._last_refused = False

    # ------------------------------------------------------------------ the belief

    def start(self) -> None:
        super().start()
        self._reset_features()

    def observe(self, x: np.ndarray, measured: np.ndarray) -> None:
        before = self.aligned_point()
        if self._xs:
            self._innovation = self._innovation_of(x, measured)
        self._last_reading = measured.copy()
        self._last_defocus = float(self.defocus_m)
        self._last_refused = False
        super().observe(x, measured)
        after = self.aligned_point()
        if before is not None and after is not None:
            self._moved = float(np.linalg.norm((after - before) / self.step_limits_m))

    def refused(self, x: np.ndarray) -> None:
        self._last_refused = True

    def _innovation_of(self, x: np.ndarray, measured: np.ndarray) -> np.ndarray:
        """RMS per group of (reading - posterior prediction) / predicted sd, before the
        reading is used."""
        mean, covariance = self.posterior()
        n_knobs = len(self.knobs)
        sigma = self._base + self._relative * np.abs(measured)
        z = np.zeros(n_knobs)
        for k in range(n_knobs):
            row = np.zeros(len(mean))
            row[k] = self._scale[k]
            row[n_knobs + self._group[k]] = x[k]
            predicted = float(row @ mean)
            variance = float(row @ covariance @ row) + sigma[k] ** 2
            z[k] = (measured[k] - predicted) / np.sqrt(variance)
        return np.array([np.sqrt(np.mean(z[g] ** 2)) for g in self._groups])

    def features(self) -> np.ndarray:
        """`FEATURE_NAMES` (float32), from the measurements only."""
        left = self.meter.frames_left()
        limit = getattr(self.meter.microscope, "limit", None)
        fraction = left / limit if left is not None and limit else 1.0
        confidence = self.confidence()
        expected_strehl = 0.0 if confidence is None else confidence
        expected_variance, spread = 1e3, np.full(len(GROUPS), 1.0)
        if self.start_samples is not None and self._aligned is not None:
            residual = self.start_samples + self._aligned
            expected_variance = float(np.mean(self.meter.phase_variance(residual)))
            sd = np.std(self.start_samples, axis=0) / self.step_limits_m
            spread = np.array([np.sqrt(np.mean(sd[g] ** 2)) for g in self._groups])
        reading_variance = 1e3
        if self._last_reading is not None:
            reading = self._last_reading.copy()
            reading[self._c1] -= self._last_defocus
            reading = reading / self._gain_mean[self._group]
            reading_variance = float(self.meter.phase_variance(reading))
        values = np.array(
            [
                fraction,
                self.accepted / 10,
                self.refusals / 10,
                float(self.meter.relocated),
                float(self._last_refused),
                expected_strehl,
                np.log10(expected_variance + 1e-6),
                *np.log10(spread + 1e-6),
                np.log10(reading_variance + 1e-6),
                np.log10(self._moved + 1e-6),
                *np.log1p(self._innovation),
            ]
        )
        return np.clip(values, -FEATURE_LIMIT, FEATURE_LIMIT).astype(np.float32)

    # ------------------------------------------------------------------ TuningPolicy

    def reset(self, observation: Any, info: dict[str, Any]) -> None:
        super().reset(observation, info)
        self._reset_features()

    def stop(self) -> StopDecision | None:
        if self._choice is None:
            if self.accepted == 0 and self._room_to_measure():
                return None  # nothing is known yet: measure
            can_measure = self._room_to_measure()
            choice = self._decide(self.features(), can_measure)
            if choice == Choice.MEASURE and can_measure:
                return None
            self._choice = Choice.DECLARE if choice == Choice.DECLARE else Choice.OPERATOR
        left = self.meter.frames_left()
        if not self._final_move_fits() and (left is None or left >= 1):
            self._settling = True  # one step with a frame first, then the final move
            return None
        confidence = self.confidence()
        value = 0.0 if confidence is None else float(confidence)
        if self._choice == Choice.DECLARE:
            return StopDecision(True, value, "the learned stop declares the probe aligned")
        return StopDecision(
            False, value, "needs the operator: not aligned with confidence", needs_operator=True
        )

    def stop_point(self) -> np.ndarray:
        """Where a stop now leaves the knobs: offset from the episode's start (m)."""
        return self._final_point()

    def final_move_fits(self) -> bool:
        """Whether a stop now reaches `stop_point` in one frameless move."""
        return self._final_move_fits()

    def _room_to_measure(self) -> bool:
        left = self.meter.frames_left()
        reserve = int(self.defocus_m > self.step_limits_m[self._c1])
        return left is None or left >= self.meter.evaluation_frames() + reserve
