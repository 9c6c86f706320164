"""The one interface every region-search policy implements, and the episode loop.

A policy is told where an episode starts (`reset`: the env, which holds the survey map, its
first observation and a seed), chooses the next env action (`act`: a cell to acquire at
high resolution, or a zoom, as `env.cell_action` makes), and learns what that action
produced (`observe`). The benchmark drives every method, baselines included, through
`run_episode` only.
"""

from __future__ import annotations

import time
from typing import Any, Protocol, runtime_checkable

import numpy as np

from emauto.tasks.region_search.env import RegionSearchEnv


@runtime_checkable
class RegionSearchPolicy(Protocol):
    """Choose where to look next on a survey field; one episode at a time."""

    name: str

    def reset(
        self, env: RegionSearchEnv, observation: np.ndarray, info: dict[str, Any], seed: int
    ) -> None:
        """Start an episode on ``env`` (just reset) from its first observation."""

    def act(self, observation: np.ndarray) -> np.ndarray:
        """The next env action (float32, see `env.cell_action`)."""

    def observe(self, action: np.ndarray, observation: np.ndarray, info: dict[str, Any]) -> None:
        """What ``action`` produced."""


def run_episode(
    env: RegionSearchEnv,
    policy: RegionSearchPolicy,
    field_seed: int,
    *,
    max_area: float,
    seed: int,
) -> dict[str, Any]:
    """One field, one policy: the curve of ``(area, found, dose)`` fractions, the time
    of each decision (s, `act` only) and the number of overviews (``zoom <= 0`` steps).
    Stops when the env ends the episode, once ``max_area`` of the field is acquired at high
    resolution, or after ``2 x max_area`` cells' steps."""
    observation, info = env.reset(seed=seed, options={"field_seed": field_seed})
    g = env.config.grid
    policy.reset(env, observation, info, seed)
    full_dose = g * g * env.reference_dose_e
    curve = [(0.0, 0.0, info["dose_e"] / full_dose)]
    decisions = []
    overviews = 0
    max_steps = int(2 * max_area * g * g) + 1
    for _ in range(max_steps):
        start = time.perf_counter()
        action = policy.act(observation)
        decisions.append(time.perf_counter() - start)
        overviews += int(float(np.asarray(action).reshape(-1)[2]) <= 0)
        observation, _, terminated, _, info = env.step(action)
        policy.observe(action, observation, info)
        curve.append((info["area_fraction"], info["found_fraction"], info["dose_e"] / full_dose))
        if terminated or info["area_fraction"] >= max_area:
            break
    return {
        "curve": curve,
        "decision_s": decisions,
        "overviews": overviews,
        "targets": info["targets"],
    }
