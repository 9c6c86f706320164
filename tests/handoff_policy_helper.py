"""A probe-tuning policy that gives up (stops without declaring the probe aligned)."""

from __future__ import annotations

from typing import Any

import numpy as np

from emauto.tasks.probe_tuning.policies.base import RunsToTheBudget, StopDecision


class GivesUp(RunsToTheBudget):
    """Suggests nothing twice, then stops without declaring the probe aligned."""

    name = "gives_up"

    def __init__(self) -> None:
        self.calls = 0

    def reset(self, observation: Any, info: Any) -> None:
        self.calls = 0

    def stop(self) -> StopDecision | None:
        if self.calls >= 2:
            return StopDecision(aligned=False, confidence=0.1, reason="cannot make progress")
        return None

    def suggest(self) -> np.ndarray:
        self.calls += 1
        return np.zeros(7, dtype=np.float32)

    def ingest(self, *args: Any) -> None:
        pass
