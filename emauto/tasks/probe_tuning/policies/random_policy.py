"""Uniformly random actions: the floor every method must beat."""

from __future__ import annotations

from typing import Any

import numpy as np

from emauto.tasks.probe_tuning.policies.base import Observation, RunsToTheBudget


class RandomPolicy(RunsToTheBudget):
    """Random actions in [-1, 1]^n from a seeded generator: ``name = "random"``."""

    name = "random"

    def __init__(self, n_knobs: int, seed: int = 0) -> None:
        self.n_knobs = n_knobs
        self._rng = np.random.default_rng(seed)

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        return None

    def suggest(self) -> np.ndarray:
        return self._rng.uniform(-1, 1, self.n_knobs).astype(np.float32)

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        return None
