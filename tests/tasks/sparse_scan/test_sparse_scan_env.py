"""`emauto/SparseScan-v0`: both env checkers, budget, determinism, rewards, bad input."""

from __future__ import annotations

import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

import emauto  # noqa: F401  (registers the envs)
from emauto.errors import ConfigError
from emauto.tasks.sparse_scan.env import SparseScanEnv, scan_observation


@pytest.fixture
def images() -> np.ndarray:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:128, 0:128] / 128
    return np.stack(
        [
            np.sin(2 * np.pi * (f * x + g * y)) + 0.1 * rng.random((128, 128))
            for f, g in ((1, 2), (3, 1), (2, 2))
        ]
    )


def test_registered_on_import() -> None:
    assert "emauto/SparseScan-v0" in gym.registry


def test_gymnasium_and_sb3_checkers_pass_without_warnings(images: np.ndarray) -> None:
    env = gym.make("emauto/SparseScan-v0", images=images, dose_e=200.0).unwrapped
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        gym_check_env(env)
        sb3_check_env(env, warn=True)


def test_episode_spends_the_budget_and_rewards_error_reduction(images: np.ndarray) -> None:
    env = SparseScanEnv(images=images, coverage=0.05)
    observation, info = env.reset(seed=3)
    assert observation.shape == (3, 64, 64) and observation.dtype == np.uint8
    assert info["positions"] == round(0.5 * env.budget)
    start_error = info["rms_error"]
    total = 0.0
    for step in range(env.max_steps):
        observation, reward, terminated, truncated, info = env.step(np.int64(step % 64))
        total += reward
        if terminated or truncated:
            break
    assert terminated and not truncated
    assert info["positions"] == env.budget
    # rewards add up to the error reduction (100 x RMS; every batch full-sized but the last)
    assert total == pytest.approx(100 * (start_error - info["rms_error"]), rel=0.2)


def test_same_seed_same_episode(images: np.ndarray) -> None:
    def run() -> list[np.ndarray]:
        env = SparseScanEnv(images=images, dose_e=50.0)
        observation, _ = env.reset(seed=5)
        out = [observation]
        for action in (0, 9, 63):
            observation, *_ = env.step(np.int64(action))
            out.append(observation)
        return out

    assert all(np.array_equal(a, b) for a, b in zip(run(), run(), strict=True))


def test_full_patch_costs_a_little_and_adds_nothing(images: np.ndarray) -> None:
    env = SparseScanEnv(images=images, coverage=1.0, initial=0.99)
    env.reset(seed=0)
    rewards = []
    for _ in range(3):
        _, reward, *_, info = env.step(np.int64(0))
        rewards.append((reward, info["added"]))
    assert rewards[-1] == (-0.01, 0)


def test_bad_configuration_is_refused(images: np.ndarray) -> None:
    with pytest.raises(ConfigError, match="coverage"):
        SparseScanEnv(images=images, coverage=0.0)
    with pytest.raises(ConfigError, match="images must be"):
        SparseScanEnv(images=images[:, :100, :100])
    with pytest.raises(ConfigError, match="dose"):
        SparseScanEnv(images=images, dose_e=-1.0)
    env = SparseScanEnv(images=images)
    env.reset(seed=0)
    with pytest.raises(ConfigError, match="patch index"):
        env.step(np.int64(64))


def test_observation_reads_any_image_size() -> None:
    values = np.random.default_rng(0).random((256, 256))
    mask = np.zeros((256, 256), dtype=bool)
    mask[::5, ::5] = True
    obs = scan_observation(values, mask, values, 0.04, 64)
    assert obs.shape == (3, 64, 64) and obs.dtype == np.uint8
    odd = scan_observation(values[:100, :150], mask[:100, :150], values[:100, :150], 0.04, 64)
    assert odd.shape == (3, 64, 64)
    same = scan_observation(values[:128, :128], mask[:128, :128], values[:128, :128], 0.04, 64)
    blocks = values[:128, :128].reshape(64, 2, 64, 2).mean(axis=(1, 3))
    assert np.array_equal(same[2], np.clip(np.rint(255 * blocks), 0, 255).astype(np.uint8))
    with pytest.raises(ConfigError, match="smaller"):
        scan_observation(values[:50, :50], mask[:50, :50], values[:50, :50], 0.04, 64)


def test_shipped_scan_policy_scores_every_patch() -> None:
    from emauto.tasks.sparse_scan.policies.rl import DEFAULT_SCAN_POLICY, load_default_scan_policy

    assert (DEFAULT_SCAN_POLICY / "policy.pt").stat().st_size < 5 * 1024 * 1024
    policy = load_default_scan_policy()
    assert (policy.observation_size, policy.grid) == (64, 8)
    values = np.random.default_rng(0).random((128, 128))
    mask = np.zeros((128, 128), dtype=bool)
    mask[::4, ::4] = True
    scores = policy.chooser(0.05)(values, mask, values)
    assert scores.shape == (64,) and np.all(scores >= 0)
    assert scores.sum() == pytest.approx(1.0, abs=1e-5)
