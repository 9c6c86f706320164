"""Ronchigram flatness: the fine-focus signal is lowest at focus on the twin."""

from __future__ import annotations

import numpy as np
import torch

import emauto
from emauto.tasks.probe_tuning.env import ProbeTuningEnv
from emauto.tasks.probe_tuning.policies.flatness import flatness, flatness_torch


def test_flat_image_scores_zero_and_torch_agrees() -> None:
    flat = np.full((64, 64), 200, np.uint8)
    assert flatness(flat, 1.15) == 0.0
    rng = np.random.default_rng(0)
    noisy = rng.integers(50, 250, (2, 64, 64)).astype(np.uint8)
    batched = flatness_torch(torch.from_numpy(noisy[None].astype(np.float32)), 1.15)[0]
    expected = [flatness(image, 1.15) for image in noisy]
    np.testing.assert_allclose(batched.numpy(), expected, rtol=1e-3)


def test_flatness_is_lowest_at_focus(carbon: emauto.microscope.Microscope) -> None:
    """Mean over 3 seeds: focus < 2 nm < 4 nm of defocus (other aberrations zero)."""
    env = ProbeTuningEnv(carbon)
    zero = dict.fromkeys(env._all_knobs, 0.0)

    def mean_flatness(defocus_m: float) -> float:
        values = []
        for seed in range(3):
            options = {"offsets": {**zero, "C10": defocus_m}}
            observation, _ = env.reset(seed=seed, options=options)
            values.append(flatness(observation["ronchigram"][1], env.config.observation_margin))
        return float(np.mean(values))

    at_focus, near, far = mean_flatness(0.0), mean_flatness(2e-9), mean_flatness(-4e-9)
    assert at_focus < near < far
