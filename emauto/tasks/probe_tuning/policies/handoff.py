"""``handoff``: the learned policy while it is sure, Bayesian optimisation when it is not,
and the operator when neither is.

The primary is the shipped RL policy, ``rl_belief`` (`belief_stop.BeliefStopPolicy`): a
learned actor that reads `bo`'s posterior and chooses, at every decision point, to measure
again, to declare the probe aligned, or to hand over. Here a hand-over while the budget
still has room for an evaluation is not the end: `bo` goes on from the same belief (the
same posterior, nothing measured twice) with its own, conservative stop rule
(`bayesopt.STOP_STREHL`: declared aligned when the posterior expects that Strehl ratio).
When the budget has no room for another evaluation and neither has declared, the policy
stops at `bo`'s aligned point without declaring and says the probe needs the operator;
the state it leaves is still scored, like every method's.

No ground truth is read: the actor's features and `bo`'s posterior come from the
measurements only.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np

from emauto.tasks.probe_tuning.policies.base import StopDecision
from emauto.tasks.probe_tuning.policies.bayesopt import STOP_STREHL
from emauto.tasks.probe_tuning.policies.belief_stop import BeliefStopPolicy, Choice, Decide
from emauto.tasks.probe_tuning.policies.objective import AberrationMeter, MeasuringOptimiser

#: Start of the reason of every stop that hands the probe to a person.
NEEDS_OPERATOR = "needs the operator"


class HandoffPolicy(BeliefStopPolicy):
    """``rl_belief``, with `bo`'s own stop rule where the actor would hand over early."""

    def __init__(
        self,
        knobs: Sequence[str],
        step_limits_m: Sequence[float] | np.ndarray,
        meter: AberrationMeter,
        decide: Decide,
        seed: int = 0,
    ) -> None:
        self._actor_decide = decide
        self.mode: Literal["primary", "fallback"] = "primary"
        super().__init__(knobs, step_limits_m, meter, self._primary, name="handoff", seed=seed)

    def reset(self, observation: Any, info: dict[str, Any]) -> None:
        super().reset(observation, info)
        self.mode = "primary"
        self.stop_strehl = np.inf  # the actor decides while it is the primary

    def _primary(self, features: np.ndarray, can_measure: bool) -> Choice:
        """The actor's choice, except that a hand-over with room to measure hands the
        episode to `bo` (which then measures)."""
        choice = self._actor_decide(features, can_measure)
        if choice == Choice.OPERATOR and can_measure:
            self.mode = "fallback"
            self.stop_strehl = STOP_STREHL
            return Choice.MEASURE
        return choice

    def stop(self) -> StopDecision | None:
        if self.mode == "primary":
            return super().stop()
        decision = MeasuringOptimiser.stop(self)  # bo's own rule from here on
        if decision is None or decision.aligned:
            return decision
        return StopDecision(
            False,
            decision.confidence,
            f"{NEEDS_OPERATOR}: the learned policy handed over and Bayesian optimisation is "
            f"not confident ({decision.reason})",
            needs_operator=True,
        )
