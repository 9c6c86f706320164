"""The one interface every probe-tuning policy implements, and the episode loop.

A policy is told where an episode starts (`reset`), proposes the next action
(`suggest`: Box[-1, 1]^n, ``action x step limit`` is the knob change), and learns what
that action produced (`ingest`). The benchmark, the evaluation command and the agent
daemon drive RL, Bayesian optimisation, the CNN and the baselines through this loop only.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

from emauto.wrappers.counting import CountingMicroscope

Observation = dict[str, np.ndarray]
#: ``on_step(action, reward, terminated, truncated, info)`` after each env step.
StepCallback = Callable[[np.ndarray, float, bool, bool, dict[str, Any]], None]


@runtime_checkable
class TuningPolicy(Protocol):
    """Suggest an action, ingest its result; one episode at a time."""

    name: str

    def reset(self, observation: Observation, info: dict[str, Any]) -> None:
        """Start an episode from its first observation."""

    def suggest(self) -> np.ndarray:
        """The next action, float32 in [-1, 1]^n."""

    def ingest(
        self, action: np.ndarray, observation: Observation, reward: float, info: dict[str, Any]
    ) -> None:
        """What `action` produced."""


@dataclass
class EpisodeResult:
    """One episode: success, cost (acquisitions include the reset frame) and the path."""

    success: bool
    acquisitions: int
    acquisitions_to_success: int | None
    final_strehl: float
    best_strehl: float
    dose_e: float
    dose_to_success_e: float | None
    wall_s: float
    strehl_path: list[float] = field(default_factory=list)


def run_episode(
    env: gym.Env[Any, Any],
    policy: TuningPolicy,
    seed: int,
    counter: CountingMicroscope | None = None,
    max_acquisitions: int | None = None,
    on_step: StepCallback | None = None,
    options: dict[str, Any] | None = None,
) -> EpisodeResult:
    """Run one episode of ``policy`` on ``env`` from ``reset(seed=seed)``.

    Success, for every method alike: the env's ``info["is_success"]`` at any acquisition
    (ground-truth Strehl >= the threshold on a twin). The episode ends there, at the env's
    own end, or once ``max_acquisitions`` are spent. ``on_step(action, reward, terminated,
    truncated, info)`` is told every step (recording, progress); ``options`` go to
    ``env.reset``. With ``counter`` (the env's
    microscope, wrapped) acquisitions and dose are counted at the Microscope boundary, so
    frames a policy takes itself count too; otherwise the env's count is used.
    """

    def spent() -> tuple[int, float]:
        if counter is not None:
            return counter.acquisitions, counter.dose_e
        return int(info["acquisitions"]), float(info["dose_e"])

    started = time.perf_counter()
    if counter is not None:
        counter.reset_counts()
    observation, info = env.reset(seed=seed, options=options)
    policy.reset(observation, info)
    path = [float(info["strehl"])]
    success_at, success_dose = spent() if info["is_success"] else (None, None)
    done = success_at is not None
    while not done:
        action = np.asarray(policy.suggest(), dtype=np.float32)
        observation, reward, terminated, truncated, info = env.step(action)
        path.append(float(info["strehl"]))
        if on_step is not None:
            on_step(action, float(reward), bool(terminated), bool(truncated), info)
        acquisitions, _ = spent()
        over_budget = max_acquisitions is not None and acquisitions > max_acquisitions
        if info["is_success"] and not over_budget:
            success_at, success_dose = spent()
        done = terminated or truncated or success_at is not None or over_budget
        if not done:
            policy.ingest(action, observation, float(reward), info)
            acquisitions, _ = spent()
            done = max_acquisitions is not None and acquisitions >= max_acquisitions
    acquisitions, dose = spent()
    return EpisodeResult(
        success=success_at is not None,
        acquisitions=acquisitions,
        acquisitions_to_success=success_at,
        final_strehl=path[-1],
        best_strehl=max(path),
        dose_e=dose,
        dose_to_success_e=success_dose,
        wall_s=time.perf_counter() - started,
        strehl_path=path,
    )
