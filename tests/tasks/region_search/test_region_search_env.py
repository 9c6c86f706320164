"""`emauto/RegionSearch-v0` on a small survey field: checkers, rewards, DKL."""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import emauto  # noqa: F401  (registers the envs)
from emauto.drivers.sim.survey import SurveyConfig
from emauto.errors import ModelFileError
from emauto.tasks.region_search.env import RegionSearchConfig, RegionSearchEnv, cell_action
from emauto.tasks.region_search.policies.dkl import DKLSearch, cell_crops
from emauto.tasks.region_search.policies.rl import load_region_policy

SMALL = RegionSearchConfig(
    survey=SurveyConfig(
        field_m=76.8e-9, n_particles=14, n_clusters=1, n_holes=1,
        hole_radius_range_m=(5e-9, 10e-9), contamination_radius_range_m=(2e-9, 6e-9),
        n_contamination=2,
    ),
    grid=4, survey_px=64, max_steps=20,
)  # fmt: skip


def test_registered_and_checkers_pass_without_warnings() -> None:
    assert "emauto/RegionSearch-v0" in gym.registry
    env = gym.make("emauto/RegionSearch-v0", config=SMALL).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env)
        sb3_check_env(env, warn=True)


def test_visiting_every_cell_finds_every_target_and_rewards_them() -> None:
    env = RegionSearchEnv(SMALL)
    observation, info = env.reset(seed=0, options={"field_seed": 11})
    assert observation.shape == (3, 64, 64) and observation.dtype == np.uint8
    assert info["targets"] > 0 and info["targets_found"] == 0
    total, found = 0.0, 0
    for row in range(4):
        for col in range(4):
            _, reward, terminated, _, info = env.step(cell_action(row, col, 4))
            new = info["targets_found"] - found
            found = info["targets_found"]
            assert reward == pytest.approx(new, abs=0.2)  # costs are small against a target
            total += reward
            if terminated:
                break
        if terminated:
            break
    assert info["found_fraction"] == 1.0 and terminated
    assert info["area_fraction"] <= 1.0
    assert observation.shape == env.observation_space.shape


def test_same_seed_same_episode() -> None:
    a, b = RegionSearchEnv(SMALL), RegionSearchEnv(SMALL)
    oa, _ = a.reset(seed=3)
    ob, _ = b.reset(seed=3)
    assert np.array_equal(oa, ob)
    action = cell_action(1, 2, 4, zoom=-1.0)
    assert np.array_equal(a.step(action)[0], b.step(action)[0])
    assert np.array_equal(a.visited, b.visited) and a.visited.max() == 1  # overview only


def test_non_finite_action_is_rejected() -> None:
    env = RegionSearchEnv(SMALL)
    env.reset(seed=0)
    with pytest.raises(ValueError, match="non-finite"):
        env.step(np.array([np.nan, 0.0, 1.0], dtype=np.float32))


@pytest.fixture
def one_thread() -> Iterator[None]:
    """Small GP fits run fastest on one torch thread (a busy 2-core machine)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.usefixtures("one_thread")
def test_dkl_learns_which_cells_pay() -> None:
    rng = np.random.default_rng(0)
    survey = rng.uniform(0.0, 0.1, size=(64, 64)).astype(np.float32)
    bright = [(0, 3), (1, 5), (4, 4), (6, 1), (7, 7), (2, 2)]
    for r, c in bright:
        survey[r * 8 + 2 : r * 8 + 6, c * 8 + 2 : c * 8 + 6] = 0.9
    value = {r * 8 + c: 1.0 for r, c in bright}
    search = DKLSearch(cell_crops(survey, 8), initial=4, iterations=25, seed=1)
    for cell in (0 * 8 + 3, 10, 20, 30):  # one bright, three dark
        search.observe(cell, value.get(cell, 0.0))
    picks = []
    for _ in range(5):
        cell = search.suggest()
        picks.append(cell)
        search.observe(cell, value.get(cell, 0.0))
    assert sum(p in value for p in picks) >= 4


def test_shipped_policy_acts_and_a_missing_one_is_a_clear_error(tmp_path: Path) -> None:
    env = RegionSearchEnv(SMALL)
    observation, _ = env.reset(seed=0)
    action = load_region_policy().act(observation)
    assert action.shape == (3,) and env.action_space.contains(np.clip(action, -1, 1))
    with pytest.raises(ModelFileError, match="no such policy"):
        load_region_policy(tmp_path)
