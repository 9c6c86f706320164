"""Baseline: Nelder-Mead (scipy) on the image-derived objective, one acquisition per value.

scipy's Nelder-Mead wants to call the objective itself; here it runs in a worker thread
whose objective hands each point to `suggest` and waits for `ingest` to return the measured
score: scipy's algorithm, the policy interface's ask/tell. Points are offsets from the
episode's start in step-limit units; a point more than one step away is reached in several
steps, every one an acquisition that counts.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
from scipy.optimize import minimize

from emauto.tasks.probe_tuning.policies.base import Observation, RunsToTheBudget
from emauto.tasks.probe_tuning.policies.objective import RonchigramObjective

#: The longest suggest() waits for the optimiser thread's next point (s).
ASK_TIMEOUT_S = 60.0


class _StopOptimisationError(Exception):
    """Ends the optimiser thread when an episode ends."""


class NelderMeadPolicy(RunsToTheBudget):
    """Derivative-free simplex search: ``name = "simplex"``."""

    name = "simplex"

    def __init__(
        self,
        knobs: Sequence[str],
        objective: RonchigramObjective,
        initial_step: float = 0.35,
        max_evaluations: int = 1000,
    ) -> None:
        self.knobs = tuple(knobs)
        self.objective = objective
        self.initial_step = initial_step
        self.max_evaluations = max_evaluations
        self._asks: queue.Queue[np.ndarray | None] = queue.Queue()
        self._tells: queue.Queue[float | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._position = np.zeros(len(self.knobs))
        self._target: np.ndarray | None = None
        self._start_score = 0.0
        self._error: BaseException | None = None

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        self.close()
        self._position = np.zeros(len(self.knobs))
        self._start_score = self.objective(observation["ronchigram"], info["change_m"])
        self._asks, self._tells = queue.Queue(), queue.Queue()
        self._target = None
        self._thread = threading.Thread(target=self._optimise, daemon=True)
        self._thread.start()

    def suggest(self) -> np.ndarray:
        if self._target is None:
            self._target = self._asks.get(timeout=ASK_TIMEOUT_S)
            if self._error is not None:
                raise RuntimeError("the Nelder-Mead optimiser failed") from self._error
            if self._target is None:  # the optimiser finished: stay put
                return np.zeros(len(self.knobs), dtype=np.float32)
        return np.clip(self._target - self._position, -1, 1).astype(np.float32)

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        self._position = self._position + np.asarray(action, dtype=np.float64)
        if self._target is not None and np.allclose(self._position, self._target, atol=1e-9):
            self._target = None
            self._tells.put(self.objective(observation["ronchigram"], info["change_m"]))

    def close(self) -> None:
        """Stop the optimiser thread (called on every reset)."""
        if self._thread is not None and self._thread.is_alive():
            self._tells.put(None)
            self._thread.join(timeout=5)
        self._thread = None

    def _optimise(self) -> None:
        start = np.zeros(len(self.knobs))

        def negative_score(x: np.ndarray) -> float:
            if np.array_equal(x, start):
                return -self._start_score  # measured at reset: no acquisition
            self._asks.put(np.array(x, dtype=np.float64))
            score = self._tells.get()
            if score is None:
                raise _StopOptimisationError
            return -score

        simplex = np.vstack([start, start + self.initial_step * np.eye(len(self.knobs))])
        try:
            minimize(
                negative_score,
                start,
                method="Nelder-Mead",
                options={
                    "initial_simplex": simplex,
                    "maxfev": self.max_evaluations,
                    "xatol": 1e-3,
                    "fatol": 1e-3,
                },
            )
        except _StopOptimisationError:
            return
        except Exception as exc:  # handed to suggest(), which raises it in the caller
            self._error = exc
        self._asks.put(None)
