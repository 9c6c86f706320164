"""``handoff``: the learned decision policy while its measurement is confident, Bayesian
optimisation when it is not, and the operator when neither makes progress.

The primary is a decision policy (`decider.DecisionPolicy`: ``rl_decide`` from the
registry, or any policy on a `decisions.DecisionCore`, e.g. the expert ``shift_decide``).
Its measurement is judged by what the core knows, no ground truth:

- `MAX_REFUSALS` measurements refused in a row (the patches disagree: folding optics or a
  strong scatterer), or
- `STALL_MEASUREMENTS` accepted measurements in a row that predict no higher a Strehl ratio
  than the best before them (its corrections make no progress), or
- a declared stop whose measurement predicts less than `CONFIDENT_STREHL`

hand the episode to the fallback (`bayesopt.BayesOptPolicy.take_over`, from the knobs as
they are, the core's probe defocus and its latest accepted measurement included). The
fallback's own stop ends the episode when it is confident (declared aligned). When it
cannot make progress either (`FALLBACK_REFUSALS` refused before it has accepted one,
or the budget has no room for another evaluation before it is confident) the policy stops
with ``aligned=False`` and a reason that says the probe needs the operator; its final move
still leaves the fallback's best state. A primary that ends the episode without declaring
(no frames left) also hands it to the operator.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

from emauto.tasks.probe_tuning.policies.base import Observation, StopDecision
from emauto.tasks.probe_tuning.policies.bayesopt import BayesOptPolicy
from emauto.tasks.probe_tuning.policies.decider import DecisionPolicy

#: Refused measurements in a row that end trust in a measurement.
MAX_REFUSALS = 2
#: Accepted measurements in a row without a better predicted Strehl ratio: no progress.
STALL_MEASUREMENTS = 2
#: Refused measurements of the fallback before its first accepted one (each probes further
#: out of focus) after which it cannot make progress.
FALLBACK_REFUSALS = 3
#: A declared stop is trusted when its measurement predicts at least this Strehl ratio;
#: below it `bo` finishes the episode from there. Chosen on tuning episodes 7000-7019 with
#: the expert as the primary: 0.7 (the expert's own threshold) 12/20 aligned, 5 false dones;
#: 0.9 15/20, 1.
CONFIDENT_STREHL = 0.9
#: Start of the reason of every stop that hands the probe to a person.
NEEDS_OPERATOR = "needs the operator"


class HandoffPolicy:
    """Primary decision policy, fallback optimiser, then the operator: ``name = "handoff"``."""

    name = "handoff"

    def __init__(self, primary: DecisionPolicy, fallback: BayesOptPolicy) -> None:
        self.primary = primary
        self.fallback = fallback
        self.mode: Literal["primary", "fallback"] = "primary"
        self.handed_over_because = ""
        self._info: dict[str, Any] = {}
        self._predictions: list[float] = []
        self._measurements = 0

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self.primary.reset(observation, info)
        self.mode = "primary"
        self.handed_over_because = ""
        self._info = dict(info)
        self._predictions, self._measurements = [], 0

    def stop(self) -> StopDecision | None:
        if self.mode == "primary":
            reason = self._distrust()
            if reason is None:
                decision = self.primary.stop()
                if decision is None:
                    return None
                if decision.aligned and decision.confidence >= CONFIDENT_STREHL:
                    return decision
                if not decision.aligned:  # out of frames under the primary
                    return StopDecision(
                        False,
                        decision.confidence,
                        f"{NEEDS_OPERATOR}: {decision.reason}",
                        needs_operator=True,
                    )
                reason = f"a stop predicting Strehl {decision.confidence:.2f} only"
            self._hand_over(reason)
        return self._fallback_stop()

    def suggest(self) -> np.ndarray:
        policy = self.primary if self.mode == "primary" else self.fallback
        return policy.suggest()

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        self._info = dict(info)
        if self.mode == "fallback":
            self.fallback.ingest(action, observation, reward, info)
            return
        self.primary.ingest(action, observation, reward, info)
        core = self.primary.core
        if core.measurements > self._measurements and core.estimate is not None:
            self._predictions.append(core.predicted_strehl())
        self._measurements = core.measurements

    def final_action(self) -> np.ndarray | None:
        policy = self.primary if self.mode == "primary" else self.fallback
        return policy.final_action()

    # ------------------------------------------------------------------ internals

    def _distrust(self) -> str | None:
        """Why the primary's measurement is not to be trusted now (None: it is)."""
        core = self.primary.core
        if core.refused >= MAX_REFUSALS:
            return f"{core.refused} measurements refused in a row"
        history = self._predictions
        if len(history) > STALL_MEASUREMENTS:
            before = max(history[:-STALL_MEASUREMENTS])
            if max(history[-STALL_MEASUREMENTS:]) <= before:
                return f"{STALL_MEASUREMENTS} measurements without progress"
        return None

    def _hand_over(self, reason: str) -> None:
        core = self.primary.core
        reading = None
        if core.estimate is not None:  # accepted at the present knobs: the defocus back on
            reading = core.estimate.copy()
            reading[0] += core.offset_m
        self.fallback.take_over(self._info, core.offset_m, reading)
        self.mode = "fallback"
        self.handed_over_because = reason

    def _fallback_stop(self) -> StopDecision | None:
        fallback = self.fallback
        if fallback.accepted == 0 and fallback.refusals >= FALLBACK_REFUSALS:
            confidence = fallback.confidence() or 0.0
            return StopDecision(
                False,
                confidence,
                f"{NEEDS_OPERATOR}: the learned policy handed over ({self.handed_over_because}) "
                f"and Bayesian optimisation had {fallback.refusals} measurements refused",
                needs_operator=True,
            )
        decision = fallback.stop()
        if decision is None or decision.aligned:
            return decision
        return StopDecision(
            False,
            decision.confidence,
            f"{NEEDS_OPERATOR}: the learned policy handed over ({self.handed_over_because}) "
            f"and Bayesian optimisation is not confident ({decision.reason})",
            needs_operator=True,
        )
