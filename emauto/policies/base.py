"""The one interface every probe-tuning policy implements, and the episode loop.

A policy is told where an episode starts (`reset`), proposes the next action
(`suggest`: Box[-1, 1]^n, ``action x step limit`` is the knob change), and learns what
that action produced (`ingest`). The benchmark, the evaluation command and the agent
daemon drive RL, Bayesian optimisation, the CNN and the baselines through this loop only.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import gymnasium as gym
import numpy as np

Observation = dict[str, np.ndarray]


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


def run_episode(env: gym.Env[Any, Any], policy: TuningPolicy, seed: int) -> EpisodeResult:
    """Run one episode of ``policy`` on ``env`` from ``reset(seed=seed)``.

    Success, for every method alike: the env's ``info["is_success"]`` at any acquisition
    (ground-truth Strehl >= the threshold on a twin). The episode ends there.
    """
    started = time.perf_counter()
    observation, info = env.reset(seed=seed)
    policy.reset(observation, info)
    path = [float(info["strehl"])]
    success_at = info["acquisitions"] if info["is_success"] else None
    success_dose = info["dose_e"] if info["is_success"] else None
    done = success_at is not None
    while not done:
        action = np.asarray(policy.suggest(), dtype=np.float32)
        observation, reward, terminated, truncated, info = env.step(action)
        policy.ingest(action, observation, float(reward), info)
        path.append(float(info["strehl"]))
        if info["is_success"]:
            success_at, success_dose = info["acquisitions"], info["dose_e"]
        done = terminated or truncated or success_at is not None
    return EpisodeResult(
        success=success_at is not None,
        acquisitions=int(info["acquisitions"]),
        acquisitions_to_success=success_at,
        final_strehl=path[-1],
        best_strehl=max(path),
        dose_e=float(info["dose_e"]),
        dose_to_success_e=success_dose,
        wall_s=time.perf_counter() - started,
        strehl_path=path,
    )
