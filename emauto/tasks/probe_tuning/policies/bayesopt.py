"""Bayesian optimisation (BoTorch/GPyTorch) of the image-derived objective.

A GP (`SingleTaskGP`, Matern-5/2 with ARD) over knob offsets from the episode's start, in
step-limit units, models the `RonchigramObjective` score. The next point maximises LogEI
(or UCB) inside a trust region around the best point so far (TuRBO-style: the box doubles
after a success, halves after two failures). Each point is one acquisition; a point beyond
one step is reached in several, all counted.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from emauto.tasks.probe_tuning.policies.base import Observation, RunsToTheBudget
from emauto.tasks.probe_tuning.policies.objective import RonchigramObjective


class BayesOptPolicy(RunsToTheBudget):
    """GP + LogEI/UCB in a trust region: ``name = "bo"``."""

    name = "bo"

    def __init__(
        self,
        knobs: Sequence[str],
        objective: RonchigramObjective,
        acquisition: Literal["logei", "ucb"] = "logei",
        trust_radius: float = 0.6,
        min_radius: float = 0.02,
        max_radius: float = 2.0,
        seed: int = 0,
    ) -> None:
        self.knobs = tuple(knobs)
        self.objective = objective
        self.acquisition = acquisition
        self.initial_radius = trust_radius
        self.min_radius = min_radius
        self.max_radius = max_radius
        self.seed = seed
        self._rng = np.random.default_rng(seed)
        self._x: list[np.ndarray] = []
        self._y: list[float] = []
        self._position = np.zeros(len(self.knobs))
        self._target: np.ndarray | None = None
        self.radius = trust_radius
        self._failures = 0

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self._position = np.zeros(len(self.knobs))
        self._x = [self._position.copy()]
        self._y = [self.objective(observation["ronchigram"], info["change_m"])]
        self._target = None
        self.radius = self.initial_radius
        self._failures = 0

    def suggest(self) -> np.ndarray:
        if self._target is None:
            self._target = self._next_point()
        return np.clip(self._target - self._position, -1, 1).astype(np.float32)

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        self._position = self._position + np.asarray(action, dtype=np.float64)
        if self._target is not None and np.allclose(self._position, self._target, atol=1e-9):
            self._target = None
        score = self.objective(observation["ronchigram"], info["change_m"])
        improved = score > max(self._y) + 1e-3
        self._x.append(self._position.copy())
        self._y.append(score)
        if self._target is None:  # a planned point reached: update the trust region
            if improved:
                self.radius, self._failures = min(2 * self.radius, self.max_radius), 0
            else:
                self._failures += 1
                if self._failures >= 2:
                    self.radius, self._failures = max(self.radius / 2, self.min_radius), 0

    def _next_point(self) -> np.ndarray:
        best = self._x[int(np.argmax(self._y))]
        low, high = best - self.radius, best + self.radius
        if len(self._x) < 2:  # one point cannot fit a GP: try a random point in the region
            return best + self._rng.uniform(-self.radius, self.radius, len(self.knobs))
        return self._maximise_acquisition(low, high)

    def _maximise_acquisition(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        from botorch.acquisition import LogExpectedImprovement, UpperConfidenceBound
        from botorch.exceptions.errors import ModelFittingError
        from botorch.fit import fit_gpytorch_mll
        from botorch.models import SingleTaskGP
        from botorch.models.transforms import Normalize, Standardize
        from botorch.optim import optimize_acqf
        from gpytorch.mlls import ExactMarginalLogLikelihood

        torch.manual_seed(int(self._rng.integers(2**31)))
        x = torch.tensor(np.array(self._x), dtype=torch.float64)
        y = torch.tensor(self._y, dtype=torch.float64)[:, None]
        span = np.max(np.abs(np.array(self._x)), axis=0) + self.radius
        box = torch.tensor(np.array([-span, span]), dtype=torch.float64)
        model = SingleTaskGP(
            x,
            y,
            input_transform=Normalize(len(self.knobs), bounds=box),
            outcome_transform=Standardize(1),
        )
        with contextlib.suppress(ModelFittingError):  # a failed fit keeps the prior; BO goes on
            fit_gpytorch_mll(ExactMarginalLogLikelihood(model.likelihood, model))
        if self.acquisition == "ucb":
            acquisition: Any = UpperConfidenceBound(model, beta=4.0)
        else:
            acquisition = LogExpectedImprovement(model, best_f=y.max())
        bounds = torch.tensor(np.array([low, high]), dtype=torch.float64)
        candidate, _ = optimize_acqf(acquisition, bounds, q=1, num_restarts=4, raw_samples=256)
        return candidate[0].detach().numpy().astype(np.float64)
